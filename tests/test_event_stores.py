"""Behaviour suite every EventStore backend must pass (max_events=50, max_streams=3)."""

from __future__ import annotations

import threading

import pytest

from session_manager import EventGoneError, InvalidEventIdError
from session_manager.events import get_stream_id, new_post_stream_id, parse_event_id


def fill(store, sid, stream, count, start=0):
    return [store.append(sid, stream, f"m{start + i}") for i in range(count)]


def test_open_returns_a_priming_id_a_resume_starts_from(event_store, new_id):
    sid = new_id()
    stream = get_stream_id(sid)
    primer = event_store.open(sid, stream)
    assert parse_event_id(primer)[0] == stream
    ids = fill(event_store, sid, stream, 3)
    replay = event_store.replay(sid, primer)
    assert replay.stream_id == stream
    assert replay.events == list(zip(ids, ["m0", "m1", "m2"]))


def test_open_again_finds_the_log_and_its_latest_event(event_store, new_id):
    sid = new_id()
    stream = get_stream_id(sid)
    event_store.open(sid, stream)
    ids = fill(event_store, sid, stream, 2)
    assert event_store.open(sid, stream) == ids[-1]
    assert event_store.replay(sid, ids[-1]).events == []


def test_replay_after_an_event_returns_exactly_what_followed(event_store, new_id):
    sid = new_id()
    stream = get_stream_id(sid)
    event_store.open(sid, stream)
    ids = fill(event_store, sid, stream, 10)
    assert len(set(ids)) == 10 and all(parse_event_id(i)[0] == stream for i in ids)
    assert event_store.replay(sid, ids[6]).events == list(zip(ids[7:], [f"m{i}" for i in range(7, 10)]))


def test_append_many_stores_on_each_get_log_and_skips_sessions_without_one(event_store, new_id):
    a, b, never = new_id(), new_id(), new_id()
    primers = {sid: event_store.open(sid, get_stream_id(sid)) for sid in (a, b)}
    groups = event_store.append_many([a, never, b], "bulk")
    assert [sid for _, sids in groups for sid in sids] == [a, b]
    for event_id, sids in groups:
        for sid in sids:
            assert parse_event_id(event_id)[0] == get_stream_id(sid)
            assert event_store.replay(sid, primers[sid]).events == [(event_id, "bulk")]
    assert event_store.append_many([], "nothing") == []


def test_append_broadcast_reaches_every_get_log_or_stores_nothing(event_store, new_id):
    a, b = new_id(), new_id()
    primers = {sid: event_store.open(sid, get_stream_id(sid)) for sid in (a, b)}
    event_id = event_store.append_broadcast("to-all")
    for sid in (a, b):
        expected = [] if event_id is None else [(event_id, "to-all")]  # None: the caller stores per session
        assert event_store.replay(sid, primers[sid]).events == expected


def test_append_to_a_log_never_opened_stores_nothing(event_store, new_id):
    sid = new_id()
    assert event_store.append(sid, get_stream_id(sid), "x") is None
    with pytest.raises(EventGoneError) as info:
        event_store.replay(sid, get_stream_id(sid) + ".1")
    assert info.value.reason == "unknown"


def test_streams_of_one_session_are_kept_apart(event_store, new_id):
    sid = new_id()
    get, post = get_stream_id(sid), new_post_stream_id()
    get_primer, post_primer = event_store.open(sid, get), event_store.open(sid, post)
    g = event_store.append(sid, get, "to-get")
    p = event_store.append(sid, post, "to-post")
    assert g != p
    assert event_store.replay(sid, get_primer).events == [(g, "to-get")]
    replay = event_store.replay(sid, post_primer)
    assert replay.stream_id == post and replay.events == [(p, "to-post")]


def test_an_id_of_another_session_is_unknown(event_store, new_id):
    mine, theirs = new_id(), new_id()
    for sid in (mine, theirs):
        event_store.open(sid, get_stream_id(sid))
    their_id = fill(event_store, theirs, get_stream_id(theirs), 3)[0]
    fill(event_store, mine, get_stream_id(mine), 3)
    with pytest.raises(EventGoneError) as info:
        event_store.replay(mine, their_id)
    assert info.value.reason == "unknown"
    post = new_post_stream_id()
    event_store.open(theirs, post)
    with pytest.raises(EventGoneError):
        event_store.replay(mine, event_store.append(theirs, post, "secret"))


@pytest.mark.parametrize("bad", ["", "zz", "g1234.1", "gXXXXXXXX.1", "g12345678", "g12345678.", "g12345678.1\n", "x" * 500])
def test_malformed_ids_are_refused(event_store, new_id, bad):
    with pytest.raises(InvalidEventIdError):
        event_store.replay(new_id(), bad)


def test_events_that_left_the_buffer_are_expired_not_skipped(event_store, new_id):
    sid = new_id()
    stream = get_stream_id(sid)
    primer = event_store.open(sid, stream)
    ids = fill(event_store, sid, stream, 500)  # ten times max_events
    with pytest.raises(EventGoneError) as info:
        event_store.replay(sid, primer)
    assert info.value.reason == "expired"
    with pytest.raises(EventGoneError):
        event_store.replay(sid, ids[100])
    recent = event_store.replay(sid, ids[-11])  # the latest events are always kept
    assert [m for _, m in recent.events] == [f"m{i}" for i in range(490, 500)]


def test_delete_forgets_every_log_of_the_session(event_store, new_id):
    sid, other = new_id(), new_id()
    post = new_post_stream_id()
    primers = [event_store.open(sid, get_stream_id(sid)), event_store.open(sid, post)]
    other_primer = event_store.open(other, get_stream_id(other))
    event_store.append(other, get_stream_id(other), "kept")
    event_store.delete(sid)
    event_store.delete(sid)  # idempotent
    for primer in primers:
        with pytest.raises(EventGoneError):
            event_store.replay(sid, primer)
    assert event_store.append(sid, post, "late") is None
    assert [m for _, m in event_store.replay(other, other_primer).events] == ["kept"]


def test_oldest_post_logs_beyond_max_streams_are_forgotten_never_the_get_log(event_store, new_id):
    sid = new_id()
    get = get_stream_id(sid)
    get_primer = event_store.open(sid, get)
    posts = [new_post_stream_id() for _ in range(5)]
    primers = [event_store.open(sid, post) for post in posts]
    for stale in primers[:2]:  # max_streams = 3
        with pytest.raises(EventGoneError):
            event_store.replay(sid, stale)
    for live in primers[2:]:
        assert event_store.replay(sid, live).events == []
    assert event_store.replay(sid, get_primer).stream_id == get


def test_concurrent_appends_get_distinct_ordered_ids(event_store, new_id):
    sid = new_id()
    stream = get_stream_id(sid)
    primer = event_store.open(sid, stream)
    got = {}

    def writer(w: int) -> None:
        got[w] = [event_store.append(sid, stream, f"{w}:{i}") for i in range(5)]

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    every = [eid for ids in got.values() for eid in ids]
    assert len(set(every)) == 40
    replayed = event_store.replay(sid, primer).events
    assert len(replayed) == 40 and sorted(m for _, m in replayed) == sorted(f"{w}:{i}" for w in range(8) for i in range(5))
    for w in range(8):  # each writer's events keep its order
        mine = [m for _, m in replayed if m.startswith(f"{w}:")]
        assert mine == [f"{w}:{i}" for i in range(5)]
