"""What only the in-memory backends promise: bookkeeping that leaves nothing behind."""

from __future__ import annotations

import itertools
import threading

import pytest

from session_manager import (
    EventGoneError,
    InMemoryInfoSessionManager,
    InMemoryStreamSessionManager,
    SessionNotFoundError,
    StreamController,
)


def test_slow_consumer_is_counted_once():
    streams = InMemoryStreamSessionManager()
    slow = StreamController(maxsize=3)
    streams.create("slow", slow)
    for i in range(10):
        streams.send(["slow"], f'{{"n":{i}}}')
        streams.send(None, f'{{"n":{i}}}')
    assert slow.overflowed
    assert streams.slow_consumers_dropped == 1
    assert len(streams) == 0


def test_closed_stream_is_not_counted_as_slow():
    streams = InMemoryStreamSessionManager()
    controller = StreamController()
    streams.create("a", controller)
    controller.close()
    streams.send(None, "{}")
    assert streams.slow_consumers_dropped == 0
    assert len(streams) == 0


def test_late_cleanup_of_old_stream_keeps_the_new_one():
    streams = InMemoryStreamSessionManager()
    old = StreamController()
    reader = iter(old)
    streams.create("a", old)
    old.enqueue("{}")
    next(reader)  # the old reader is running
    old.close()  # the reader is suspended mid-stream: its cleanup runs when it resumes
    new = StreamController()
    streams.create("a", new)  # a closed stream does not block a new one
    reader.close()  # the old stream's cleanup runs late
    assert streams.has("a") and streams._streams["a"] is new


def test_info_maps_are_empty_after_every_session_is_deleted():
    info = InMemoryInfoSessionManager()
    for i in range(50):
        info.create(f"s{i}", client_info={"i": i})
        info.set_log_level(f"s{i}", "debug")
        for j in range(5):
            info.add_subscription(f"s{i}", f"res://{j}")
    info.remove_subscription("s0", "res://0")
    for i in range(50):
        info.delete(f"s{i}")
    assert info._sessions == {} and info._subscribers == {}
    assert len(info) == 0


def test_body_closed_before_first_read_unregisters_the_stream():
    # A WSGI server closes a response body it never started (client gone at once).
    streams = InMemoryStreamSessionManager()
    controller = StreamController()
    streams.create("a", controller)
    iter(controller).close()
    assert controller.closed
    assert not streams.has("a") and len(streams) == 0


# -- idle expiry (a fake clock: no waiting) -------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def expiring_pair(ttl: float = 60.0):
    from session_manager import InMemoryEventStore, SessionManagers

    clock = FakeClock()
    managers = SessionManagers(
        InMemoryStreamSessionManager(event_store=InMemoryEventStore(10)),
        InMemoryInfoSessionManager(session_ttl=ttl, clock=clock),
    )
    return managers, clock


def test_idle_sessions_expire_with_their_stored_events_and_unused_ones_stay():
    from session_manager.events import get_stream_id

    managers, clock = expiring_pair()
    managers.info.create("idle")
    managers.info.create("busy")
    controller = StreamController()
    managers.streams.create("idle", controller)  # opens its event log
    controller.close()  # the client went away
    primer = managers.streams.event_store.open("idle", get_stream_id("idle"))
    managers.streams.send(["idle"], '{"n":1}')
    assert managers.streams.event_store.replay("idle", primer).events
    clock.now += 59
    assert managers.info.get_log_level("busy") is None  # any call naming a session is activity
    clock.now += 2
    assert not managers.info.exists("idle")  # expired on the way
    assert managers.info.exists("busy")
    with pytest.raises(EventGoneError):
        managers.streams.event_store.replay("idle", primer)
    assert len(managers.info) == 1


def test_an_open_stream_keeps_its_session_alive():
    managers, clock = expiring_pair()
    managers.info.create("streaming")
    controller = StreamController()
    managers.streams.create("streaming", controller)
    clock.now += 3600
    assert managers.info.expire() == []
    assert managers.info.exists("streaming")
    controller.close()
    clock.now += 61
    assert managers.info.expire() == ["streaming"]
    assert not managers.streams.has("streaming")


def test_expiry_deletes_subscriptions_and_answers_like_a_deleted_session():
    managers, clock = expiring_pair(ttl=1)
    managers.info.create("s")
    managers.info.add_subscription("s", "file:///a")
    clock.now += 2
    assert managers.info.expire() == ["s"]
    assert managers.info.get_subscriptions("file:///a") == []
    assert managers.info.get("s") is None
    with pytest.raises(SessionNotFoundError):
        managers.info.set_log_level("s", "info")


def test_session_ttl_none_never_expires_and_bad_ttls_are_refused():
    info = InMemoryInfoSessionManager(session_ttl=None)
    info.create("s")
    assert info.expire() == [] and info.exists("s")
    for bad in (0, -1, float("inf"), "60", True):
        with pytest.raises(ValueError, match="session_ttl"):
            InMemoryInfoSessionManager(session_ttl=bad)


def test_expiry_costs_no_thread_or_timer():
    before = set(threading.enumerate())
    managers, clock = expiring_pair(ttl=1)
    for i in range(1000):
        managers.info.create(f"s{i}")
    clock.now += 2
    managers.info.create("fresh")  # sweeps on the way
    calls = 1
    while len(managers.info) > 1 and calls < 100:
        managers.info.exists("fresh")  # each call sweeps a little more
        calls += 1
    assert len(managers.info) == 1
    assert set(threading.enumerate()) == before


def test_a_backlog_of_expired_sessions_is_swept_in_bounded_steps():
    """Many sessions due at once: no single call pays for them all (each removes at most SWEEP_STEP)."""
    from session_manager.memory import SWEEP_STEP

    managers, clock = expiring_pair(ttl=1)
    for i in range(3 * SWEEP_STEP + 5):
        managers.info.create(f"s{i}")
    clock.now += 2
    managers.info.create("fresh")
    sizes = [len(managers.info)]
    while sizes[-1] > 1:
        managers.info.exists("fresh")
        sizes.append(len(managers.info))
    assert sizes[0] == 3 * SWEEP_STEP + 5 + 1 - SWEEP_STEP
    assert all(before - after <= SWEEP_STEP for before, after in itertools.pairwise(sizes))
    assert len(sizes) == 4  # three more calls finish the backlog
    clock.now += 2
    assert managers.info.expire() == ["fresh"]  # expire() on demand takes everything due


def test_expiry_racing_with_requests_from_many_threads_keeps_the_indexes_consistent():
    """Eight threads use, subscribe and delete sessions while the clock runs and expiry sweeps."""
    import random

    managers, clock = expiring_pair(ttl=5)
    info = managers.info
    errors = []

    def worker(w: int) -> None:
        rng = random.Random(w)
        try:
            for i in range(400):
                sid = f"w{w}-{rng.randrange(20)}"
                op = rng.randrange(5)
                if op == 0:
                    try:
                        info.create(sid)
                    except ValueError:
                        pass
                elif op == 1:
                    try:
                        info.add_subscription(sid, f"file:///{rng.randrange(3)}")
                    except SessionNotFoundError:
                        pass
                elif op == 2:
                    info.delete(sid)
                elif op == 3:
                    info.exists(sid)
                else:
                    clock.now += 0.05
                    info.expire()
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    sessions = dict(info._sessions)
    for uri, subscribers in info._subscribers.items():
        assert subscribers, uri
        for sid in subscribers:
            assert uri in sessions[sid].subscriptions
    for sid, session in sessions.items():
        for uri in session.subscriptions:
            assert sid in info._subscribers[uri]
    used = [s.used for s in sessions.values()]
    assert used == sorted(used)  # kept in order of last use
    clock.now += 10
    info.expire()
    assert len(info) == 0 and info._subscribers == {}


def test_a_broadcast_is_stored_once_whatever_the_number_of_sessions():
    from session_manager import InMemoryEventStore

    store = InMemoryEventStore(100)
    streams = InMemoryStreamSessionManager(event_store=store)
    controllers = [StreamController() for _ in range(50)]
    for i, controller in enumerate(controllers):
        streams.create(f"s{i}", controller)
    streams.send(None, '{"n":1}')
    assert len(store._broadcasts.events) == 1
    assert all(not log.events for logs in store._sessions.values() for log in logs.values())
    frames = {controller._queue.get_nowait() for controller in controllers}
    assert len(frames) == 1  # one framed event, the same id on every stream
    streams.close()
