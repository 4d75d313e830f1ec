"""Behaviour suite of stream managers with an event store (resumable streams), every backend.

The ``resumable`` managers' stores keep 50 events per stream. A client is
modelled by :class:`Client`: it reads a controller on a thread, records
``(event id, data)`` like the MCP client (the priming event only moves the
last event id), and can drop its connection at any point without the
server noticing (tests/resume_support.py).
"""

from __future__ import annotations

import functools
import threading
import time

import pytest

from session_manager import EventGoneError, InvalidEventIdError, StreamConflictError, StreamController
from session_manager.events import get_stream_id, parse_event_id

from .resume_support import Client, msg, stream_readers, wait_until


@pytest.fixture
def connect(resumable):
    """``connect(sid, last_event_id=None, **controller_kwargs)``: a stream of the manager, read by a :class:`Client`."""
    with stream_readers(Client) as open_on:
        yield functools.partial(open_on, resumable)


def until(predicate) -> None:
    assert wait_until(predicate), "condition not reached in time"


def test_stream_is_primed_and_every_event_has_an_id_of_its_stream(resumable, connect, new_id):
    sid = new_id()
    client = connect(sid, retry=1500)
    assert parse_event_id(client.wait_primed())[0] == get_stream_id(sid)
    for i in range(5):
        resumable.send([sid], msg(i))
    events = client.wait_for(5)
    ids = [eid for eid, _ in events]
    assert len(set(ids)) == 5 and all(parse_event_id(eid)[0] == get_stream_id(sid) for eid in ids)
    assert client.ns() == list(range(5))


def test_resume_replays_what_was_missed_then_continues_live(resumable, connect, new_id):
    sid = new_id()
    first = connect(sid)
    first.wait_primed()
    for i in range(3):
        resumable.send([sid], msg(i))
    first.wait_for(3)
    last = first.drop()
    first.controller.close()  # the server noticed
    until(lambda: not resumable.has(sid))
    for i in range(3, 8):  # sent while no stream was open: stored
        resumable.send([sid], msg(i))
    resumable.send(None, msg(8))  # a broadcast reaches a session with a log too
    second = connect(sid, last_event_id=last)
    resumable.send([sid], msg(9))
    second.wait_for(7)
    assert second.ns() == list(range(3, 10))


def test_resume_takes_over_a_stream_whose_client_is_gone(resumable, connect, new_id):
    sid = new_id()
    first = connect(sid)
    first.wait_primed()
    with pytest.raises(StreamConflictError):  # a plain second stream is still refused
        resumable.create(sid, StreamController())
    resumable.send([sid], msg(0))
    first.wait_for(1)
    last = first.drop()
    resumable.send([sid], msg(1))
    second = connect(sid, last_event_id=last)
    until(lambda: first.controller.closed)  # the dead stream was replaced, not a 409
    resumable.send([sid], msg(2))
    second.wait_for(2)
    assert second.ns() == [1, 2]
    assert resumable.has(sid)


def test_takeover_in_the_middle_of_a_burst_loses_and_repeats_nothing(resumable, connect, new_id):
    sid = new_id()
    total = 1000
    first = connect(sid, maxsize=total + 10)
    first.wait_primed()
    started = threading.Event()

    def burst() -> None:  # paced, so the client's lag stays within the 50 stored events
        for i in range(total):
            if i == total // 3:
                started.set()
            resumable.send([sid], msg(i))
            time.sleep(0.0005)

    sender = threading.Thread(target=burst)
    sender.start()
    started.wait(10)
    last = first.drop()
    second = connect(sid, last_event_id=last, maxsize=total + 10)
    sender.join(60)
    received = first.ns()
    delivered_before = [eid for eid, _ in first.snapshot()]
    assert not delivered_before or delivered_before[-1] == last
    second.wait_for(total - len(received), timeout=30)
    resumable.send([sid], msg("end"))
    second.wait_for(total - len(received) + 1, timeout=30)
    assert received + second.ns() == list(range(total)) + ["end"]


def test_delete_forgets_the_stored_events(resumable, connect, new_id):
    sid = new_id()
    client = connect(sid)
    primer = client.wait_primed()
    resumable.send([sid], msg(0))
    client.wait_for(1)
    resumable.delete(sid)
    client.ended.wait(10)
    resumable.send([sid], msg(1))
    with pytest.raises(EventGoneError) as info:
        resumable.create(sid, StreamController(), last_event_id=primer)
    assert info.value.reason == "unknown"


def test_bad_ids_are_refused_and_the_open_stream_is_untouched(resumable, connect, new_id):
    sid, other = new_id(), new_id()
    client = connect(sid)
    client.wait_primed()
    theirs = connect(other)
    their_id = theirs.wait_primed()
    with pytest.raises(InvalidEventIdError):
        resumable.create(sid, StreamController(), last_event_id="not-an-id")
    with pytest.raises(EventGoneError) as info:
        resumable.create(sid, StreamController(), last_event_id=their_id)
    assert info.value.reason == "unknown"
    resumable.send([sid], msg("still"))
    assert client.wait_for(1) and client.ns() == ["still"]
    assert not client.controller.closed


def test_resume_after_the_buffer_dropped_missed_events_is_expired(resumable, connect, new_id):
    sid = new_id()
    client = connect(sid)
    primer = client.wait_primed()
    client.drop()
    for i in range(300):  # six times the buffer
        resumable.send([sid], msg(i))
    with pytest.raises(EventGoneError) as info:
        resumable.create(sid, StreamController(), last_event_id=primer)
    assert info.value.reason == "expired"


def test_a_slow_consumer_is_closed_and_resumes_without_loss(resumable, connect, new_id):
    sid, other = new_id(), new_id()
    slow = connect(sid, maxsize=5)
    fast = connect(other, maxsize=100)
    last = slow.wait_primed()
    fast.wait_primed()
    slow.drop(stall=True)  # stops reading: its queue fills up
    for i in range(20):  # within the store's 50
        resumable.send([sid, other], msg(i))
    until(lambda: slow.controller.closed)
    assert slow.controller.overflowed
    assert fast.wait_for(20) and fast.ns() == list(range(20))
    again = connect(sid, last_event_id=last)
    again.wait_for(20)
    assert again.ns() == list(range(20))


def test_sessions_that_never_opened_a_stream_store_nothing(resumable, new_id):
    sid = new_id()
    resumable.send([sid], msg(0))
    resumable.send(None, msg(1))
    with pytest.raises(EventGoneError):
        resumable.create(sid, StreamController(), last_event_id=get_stream_id(sid) + ".0")


def test_resuming_needs_an_event_store(streams, new_id):
    with pytest.raises(ValueError, match="event store"):
        streams.create(new_id(), StreamController(), last_event_id=get_stream_id("x") + ".1")


def test_concurrent_senders_and_resumes_deliver_each_message_once(resumable, connect, new_id):
    """Four senders, a client reconnecting five times mid-stream: per sender, exactly once, in order."""
    sid = new_id()
    client = connect(sid, maxsize=5000)
    client.wait_primed()
    senders, per_sender = 4, 100
    go = threading.Barrier(senders + 1)

    def send_all(w: int) -> None:
        go.wait()
        for i in range(per_sender):
            resumable.send([sid], msg(f"{w}:{i}"))
            time.sleep(0.001)

    threads = [threading.Thread(target=send_all, args=(w,)) for w in range(senders)]
    for thread in threads:
        thread.start()
    go.wait()
    received: list[object] = []
    for _ in range(5):
        time.sleep(0.01)
        last = client.drop()
        received += client.ns()
        client = connect(sid, last_event_id=last, maxsize=5000)
    for thread in threads:
        thread.join(60)
    resumable.send([sid], msg("end"))
    deadline = time.monotonic() + 30
    while "end" not in client.ns() and time.monotonic() < deadline:
        time.sleep(0.01)
    received += client.ns()
    assert received[-1] == "end"
    body = received[:-1]
    assert len(body) == senders * per_sender == len(set(body))
    for w in range(senders):
        assert [n for n in body if n.startswith(f"{w}:")] == [f"{w}:{i}" for i in range(per_sender)]


def test_broadcasts_missed_beyond_the_buffer_expire_and_within_it_replay(resumable, connect, new_id):
    sid = new_id()
    client = connect(sid)
    primer = client.wait_primed()
    client.drop()
    for i in range(30):
        resumable.send(None, msg(i))
    resumed = connect(sid, last_event_id=primer)
    resumed.wait_for(30)
    assert resumed.ns() == list(range(30))
    last = resumed.drop()
    for i in range(300):  # six times the buffer
        resumable.send(None, msg(i))
    with pytest.raises(EventGoneError) as info:
        resumable.create(sid, StreamController(), last_event_id=last)
    assert info.value.reason == "expired"


def test_a_batch_is_stored_message_by_message_and_resumed_in_order(resumable, connect, new_id):
    sid, other = new_id(), new_id()
    first = connect(sid)
    first.wait_primed()
    connect(other).wait_primed()
    resumable.send_many([([sid], msg(0)), (None, msg(1))])
    first.wait_for(2)
    last = first.drop()
    first.controller.close()
    until(lambda: not resumable.has(sid))
    resumable.send_many([  # no stream open: stored for the resume
        ([sid], msg(2)), (None, msg(3)), ([other], msg("not-ours")), ([sid, other], msg(4)), (None, msg(5)),
    ])
    second = connect(sid, last_event_id=last)
    resumable.send_many([([sid], msg(6)), (None, msg(7))])
    events = second.wait_for(6)
    assert second.ns() == [2, 3, 4, 5, 6, 7]
    assert len({eid for eid, _ in events}) == 6
