"""Behaviour suite every InfoSessionManager backend must pass."""

from __future__ import annotations

import time
import uuid

import pytest

from session_manager import LOG_LEVELS, SessionInfo, SessionNotFoundError


def test_lifecycle(info, new_id):
    sid = new_id()
    assert not info.exists(sid)
    assert info.get(sid) is None
    info.create(sid)
    assert info.exists(sid)
    assert info.get(sid) == SessionInfo()
    info.delete(sid)
    assert not info.exists(sid)
    info.delete(sid)  # idempotent


def test_create_twice_is_an_error(info, new_id):
    sid = new_id()
    info.create(sid)
    with pytest.raises(ValueError, match="already exists"):
        info.create(sid)


def test_create_with_initialize_params(info, new_id):
    sid = new_id()
    client = {"name": "c", "version": "1.0"}
    caps = {"roots": {"listChanged": True}, "sampling": {}}
    info.create(sid, protocol_version="2025-11-25", client_info=client, client_capabilities=caps)
    assert info.get(sid) == SessionInfo("2025-11-25", client, caps, None)
    assert info.get_protocol_version(sid) == "2025-11-25"
    assert info.get_client_info(sid) == client
    assert info.get_client_capabilities(sid) == caps
    assert info.get_log_level(sid) is None


def test_getters_return_none_for_unknown(info, new_id):
    sid = new_id()
    assert info.get_client_info(sid) is None
    assert info.get_client_capabilities(sid) is None
    assert info.get_log_level(sid) is None
    assert info.get_protocol_version(sid) is None


def test_setters_roundtrip(info, new_id):
    sid = new_id()
    info.create(sid)
    info.set_client_info(sid, {"name": "x", "nested": {"a": [1, 2, None]}})
    info.set_client_capabilities(sid, {"elicitation": {}})
    info.set_protocol_version(sid, "2025-06-18")
    assert info.get_client_info(sid) == {"name": "x", "nested": {"a": [1, 2, None]}}
    assert info.get_client_capabilities(sid) == {"elicitation": {}}
    assert info.get_protocol_version(sid) == "2025-06-18"


@pytest.mark.parametrize("level", LOG_LEVELS)
def test_log_levels_roundtrip(info, new_id, level):
    sid = new_id()
    info.create(sid)
    info.set_log_level(sid, level)
    assert info.get_log_level(sid) == level
    assert info.get(sid).log_level == level


@pytest.mark.parametrize("level", ["DEBUG", "verbose", "", None, 3])
def test_invalid_log_level_names_valid_ones(info, new_id, level):
    sid = new_id()
    info.create(sid)
    info.set_log_level(sid, "error")
    with pytest.raises(ValueError, match="debug, info, notice, warning, error, critical, alert, emergency"):
        info.set_log_level(sid, level)
    assert info.get_log_level(sid) == "error"


def test_values_are_copied_in_and_out(info, new_id):
    sid = new_id()
    client = {"name": "c", "tags": ["a"]}
    info.create(sid, client_info=client)
    client["tags"].append("mutated-after-set")
    out = info.get_client_info(sid)
    out["name"] = "mutated-after-get"
    assert info.get_client_info(sid) == {"name": "c", "tags": ["a"]}


def test_setters_on_missing_session_raise(info, new_id):
    sid = new_id()
    for call in (
        lambda: info.set_client_info(sid, {}),
        lambda: info.set_client_capabilities(sid, {}),
        lambda: info.set_log_level(sid, "info"),
        lambda: info.set_protocol_version(sid, "2025-11-25"),
        lambda: info.add_subscription(sid, "file:///a"),
    ):
        with pytest.raises(SessionNotFoundError, match="does not exist"):
            call()
    assert not info.exists(sid)
    assert info.get_subscriptions("file:///a") == []


def test_subscriptions(info, new_id):
    a, b = new_id(), new_id()
    info.create(a)
    info.create(b)
    uri = f"file:///{a}"
    info.add_subscription(a, uri)
    info.add_subscription(a, uri)  # idempotent
    info.add_subscription(b, uri)
    info.add_subscription(a, uri + "/other")
    assert sorted(info.get_subscriptions(uri)) == sorted([a, b])
    info.remove_subscription(b, uri)
    info.remove_subscription(b, uri)  # idempotent
    assert info.get_subscriptions(uri) == [a]
    assert info.get_subscriptions(uri + "/nobody") == []


def test_delete_removes_every_subscription(info, new_id):
    a, b = new_id(), new_id()
    info.create(a)
    info.create(b)
    uris = [f"res://{a}/{i}" for i in range(5)]
    for uri in uris:
        info.add_subscription(a, uri)
        info.add_subscription(b, uri)
    info.delete(a)
    for uri in uris:
        assert info.get_subscriptions(uri) == [b]
    assert info.get(a) is None
    info.create(a)  # the id can be reused and starts clean
    assert info.get(a) == SessionInfo()
    assert all(info.get_subscriptions(uri) == [b] for uri in uris)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda i, s: i.create(42), TypeError),
        (lambda i, s: i.create("bad id"), ValueError),
        (lambda i, s: i.set_client_info(s, ["not", "a", "dict"]), TypeError),
        (lambda i, s: i.set_client_info(s, {"x": object()}), TypeError),
        (lambda i, s: i.set_client_capabilities(s, "caps"), TypeError),
        (lambda i, s: i.set_protocol_version(s, 2025), TypeError),
        (lambda i, s: i.add_subscription(s, None), TypeError),
        (lambda i, s: i.add_subscription(s, ""), ValueError),
        (lambda i, s: i.get_subscriptions(b"uri"), TypeError),
        (lambda i, s: i.exists(None), TypeError),
        (lambda i, s: i.create(s, client_info="x"), TypeError),
    ],
)
def test_bad_input_raises_and_leaves_state_alone(info, new_id, call, error):
    sid, other = new_id(), new_id()
    info.create(sid, client_info={"name": "me"})
    info.create(other, client_info={"name": "other"})
    info.set_log_level(other, "warning")
    info.add_subscription(other, "res://x")
    with pytest.raises(error) as excinfo:
        call(info, sid)
    assert str(excinfo.value)
    assert info.get(sid).client_info == {"name": "me"}
    assert info.get(other) == SessionInfo(None, {"name": "other"}, None, "warning")
    assert info.get_subscriptions("res://x") == [other]


def test_a_token_is_claimed_once_until_its_ttl_passes(info):
    token = f"tok-{uuid.uuid4().hex}"
    assert info.claim(token, 0.3) is True
    assert info.claim(token, 0.3) is False  # single use, whichever process asks
    assert info.claim(token + "-other", 0.3) is True
    time.sleep(0.45)
    assert info.claim(token, 0.3) is True  # forgotten with its ttl: nothing kept forever


def test_shared_secrets_are_stable_per_name_and_differ_between_names(info):
    secret = info.shared_secret("request-state")
    assert isinstance(secret, bytes) and len(secret) == 32
    assert info.shared_secret("request-state") == secret
    assert info.shared_secret("other") != secret


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m: m.claim(None, 1), TypeError),
        (lambda m: m.claim("t", 0), ValueError),
        (lambda m: m.shared_secret(b"x"), TypeError),
    ],
)
def test_claims_and_secrets_refuse_bad_input(info, call, error):
    with pytest.raises(error):
        call(info)
