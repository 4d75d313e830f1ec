"""The abstract bases and the SessionManagers pair."""

from __future__ import annotations

import pytest

import session_manager
from session_manager import (
    InfoSessionManager,
    InMemoryInfoSessionManager,
    InMemoryStreamSessionManager,
    Notifier,
    SessionManagers,
    StreamController,
    StreamSessionManager,
)


def test_incomplete_stream_manager_cannot_be_instantiated():
    class Partial(StreamSessionManager):
        def create(self, session_id, controller):
            pass

    with pytest.raises(TypeError) as excinfo:
        Partial()
    for name in ("close", "delete", "has", "send"):
        assert name in str(excinfo.value)


def test_incomplete_info_manager_cannot_be_instantiated():
    class Partial(InfoSessionManager):
        pass

    with pytest.raises(TypeError) as excinfo:
        Partial()
    assert "get_subscriptions" in str(excinfo.value)


def test_session_managers_default_to_memory():
    managers = SessionManagers()
    assert isinstance(managers.streams, InMemoryStreamSessionManager)
    assert isinstance(managers.info, InMemoryInfoSessionManager)


def test_session_managers_keeps_given_managers_even_if_empty():
    streams, info = InMemoryStreamSessionManager(), InMemoryInfoSessionManager()
    managers = SessionManagers(streams, info)  # both have len() == 0
    assert managers.streams is streams and managers.info is info


def test_session_managers_rejects_wrong_types():
    with pytest.raises(TypeError, match="StreamSessionManager"):
        SessionManagers(streams=InMemoryInfoSessionManager())
    with pytest.raises(TypeError, match="InfoSessionManager"):
        SessionManagers(info=object())


@pytest.mark.parametrize(
    "call, error, hint",
    [
        (lambda n: n.notify(None, "notifications/message"), TypeError, "must be str, not NoneType"),
        (lambda n: n.notify("abc", b"notifications/message"), TypeError, "method must be a str"),
        (lambda n: n.notify("abc", ""), ValueError, "non-empty"),
        (lambda n: n.notify("abc", "m", b"{}"), TypeError, "params must be a dict"),
        (lambda n: n.broadcast("m", "not a dict"), TypeError, "params must be a dict"),
        (lambda n: n.send("abc", "{}"), TypeError, "wrap one id in a list"),
        (lambda n: n.send(["abc"], b"{}"), TypeError, r"use json\.dumps\(message\)"),
        (lambda n: n.log(None, "info", "x"), TypeError, "session id must be a str"),
        (lambda n: n.log("abc", "loud", "x"), ValueError, "debug"),
        (lambda n: n.resource_updated(None), TypeError, "uri must be a str"),
    ],
)
def test_notifier_bad_input_says_what_to_change(call, error, hint):
    managers = SessionManagers()
    managers.info.create("abc")
    stream = StreamController()
    managers.streams.create("abc", stream)
    with pytest.raises(error, match=hint):
        call(Notifier(managers))
    Notifier(managers).notify("abc", "notifications/unharmed")  # nothing of the bad call stays behind
    assert b"notifications/unharmed" in next(iter(stream))
    managers.close()


def test_session_managers_delete_and_close():
    with SessionManagers() as managers:
        controller = StreamController()
        managers.info.create("abc")
        managers.info.add_subscription("abc", "res://1")
        managers.streams.create("abc", controller)
        managers.delete("abc")
        assert controller.closed
        assert not managers.info.exists("abc")
        assert managers.info.get_subscriptions("res://1") == []
        other = StreamController()
        managers.streams.create("def", other)
    assert other.closed  # closing the pair closes every stream


def test_public_api_is_exported():
    for name in session_manager.__all__:
        assert hasattr(session_manager, name), name
