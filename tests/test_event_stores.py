"""Behaviour suite every EventStore backend must pass (max_events=50, max_streams=3, max_bytes=100,000)."""

from __future__ import annotations

import json
import random
import threading

import pytest

from session_manager import EventGoneError, InvalidEventIdError
from session_manager.events import get_stream_id, new_post_stream_id, parse_event_id

from .backends import EVENT_STORE_MAX_BYTES as MAX_BYTES


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


@pytest.mark.parametrize(
    "bad", ["", "zz", "g1234.1", "gXXXXXXXX.1", "g12345678", "g12345678.", "g12345678.1\n", "x" * 500]
)
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
    assert len(replayed) == 40 and sorted(m for _, m in replayed) == sorted(
        f"{w}:{i}" for w in range(8) for i in range(5)
    )
    for w in range(8):  # each writer's events keep its order
        mine = [m for _, m in replayed if m.startswith(f"{w}:")]
        assert mine == [f"{w}:{i}" for i in range(5)]


# -- the byte bound: messages over 500 bytes are counted byte by byte, up to MAX_BYTES per log --


def message(n: int, size: int) -> str:
    """A JSON message of about *size* characters carrying the number *n*."""
    return json.dumps({"n": n, "pad": "z" * max(0, size - 25)})


def ns(events: list[tuple[str, str]]) -> list[int]:
    return [json.loads(data)["n"] for _, data in events]


def gone(store, sid: str, event_id: str) -> str:
    """The reason a resume from *event_id* is refused (fails if it is not)."""
    with pytest.raises(EventGoneError) as info:
        store.replay(sid, event_id)
    return info.value.reason


def oldest_resumable(store, sid: str, ids: list[str]) -> int:
    """The index of the oldest of *ids* (oldest first) a resume works from; the one before it is expired."""
    for i in range(len(ids) - 1, -1, -1):
        try:
            store.replay(sid, ids[i])
        except EventGoneError as exc:
            assert exc.reason == "expired"
            return i + 1
    return 0


def test_a_log_keeps_about_max_bytes_and_a_resume_from_before_that_is_expired(event_store, new_id):
    sid, stream = new_id(), new_post_stream_id()
    primer = event_store.open(sid, stream)
    ids = [event_store.append(sid, stream, message(n, 10_000)) for n in range(100)]  # 1 MB in
    assert gone(event_store, sid, primer) == "expired"
    oldest = oldest_resumable(event_store, sid, ids)
    kept = event_store.replay(sid, ids[oldest]).events  # from the newest dropped one: all the log holds
    assert ns(kept) == list(range(oldest + 1, 100))
    assert MAX_BYTES - 10_000 < sum(len(data) for _, data in kept) <= MAX_BYTES
    assert ns(event_store.replay(sid, ids[-6]).events) == [95, 96, 97, 98, 99]


def test_short_and_long_messages_replay_in_their_order(event_store, new_id):
    sid, stream = new_id(), new_post_stream_id()
    primer = event_store.open(sid, stream)
    sizes = [30, 20_000, 50, 60, 30_000, 20, 40_000, 10]  # 90 kB of long ones: nothing dropped
    ids = [event_store.append(sid, stream, message(n, size)) for n, size in enumerate(sizes)]
    assert ns(event_store.replay(sid, primer).events) == list(range(len(sizes)))
    for i, event_id in enumerate(ids):
        assert ns(event_store.replay(sid, event_id).events) == list(range(i + 1, len(sizes)))


def test_long_broadcasts_and_bulk_sends_are_bounded_too(event_store, new_id):
    sids = [new_id() for _ in range(5)]
    primers = {sid: event_store.open(sid, get_stream_id(sid)) for sid in sids}
    ids: dict[str, list[str]] = {sid: [] for sid in sids}
    for n in range(0, 60, 2):  # 150 kB of broadcasts (even numbers) and of bulk sends (odd) on each GET stream
        broadcast = event_store.append_broadcast(message(n, 5_000))
        for sid in sids:  # None: a store without a broadcast log of its own, the caller stores per session
            ids[sid].append(broadcast or event_store.append(sid, get_stream_id(sid), message(n, 5_000)))
        groups = event_store.append_many(sids, message(n + 1, 5_000))
        assert sorted(sid for _, members in groups for sid in members) == sorted(sids)
        for sid in sids:
            ids[sid].append(next(event_id for event_id, members in groups if sid in members))
    for sid in sids:
        assert gone(event_store, sid, primers[sid]) == "expired"
        oldest = oldest_resumable(event_store, sid, ids[sid])
        kept = event_store.replay(sid, ids[sid][oldest]).events
        assert 0 < oldest and ns(kept) == list(range(oldest + 1, 60))  # in order, no hole
        for parity in (0, 1):  # broadcasts and bulk sends: each within the bound (a log each, or one log)
            assert sum(len(data) for _, data in kept if json.loads(data)["n"] % 2 == parity) <= MAX_BYTES


def test_one_message_larger_than_max_bytes_is_kept_alone(event_store, new_id):
    sid, stream = new_id(), new_post_stream_id()
    primer = event_store.open(sid, stream)
    first = event_store.append(sid, stream, message(1, 5_000))
    second = event_store.append(sid, stream, message(2, 3 * MAX_BYTES))
    assert ns(event_store.replay(sid, first).events) == [2]
    assert gone(event_store, sid, primer) == "expired"
    event_store.append(sid, stream, message(3, 2 * MAX_BYTES))
    assert ns(event_store.replay(sid, second).events) == [3]
    assert gone(event_store, sid, first) == "expired"


def test_a_resume_from_the_newest_dropped_event_replays_what_followed(event_store, new_id):
    sid = new_id()
    stream = get_stream_id(sid)  # merged with the broadcast log on a replay
    primer = event_store.open(sid, stream)
    dropped = event_store.append(sid, stream, message(0, 60_000))
    shorts = [event_store.append(sid, stream, message(n, 100)) for n in (1, 2)]
    event_store.append(sid, stream, message(3, 60_000))  # 120 kB of long messages: the first goes
    assert ns(event_store.replay(sid, dropped).events) == [1, 2, 3]
    assert ns(event_store.replay(sid, shorts[0]).events) == [2, 3]
    assert gone(event_store, sid, primer) == "expired"


def test_a_long_message_the_event_count_dropped_first_is_no_place_to_resume_from(event_store, new_id):
    """Dropped for the byte bound after the count had dropped it and what followed: a resume from it would skip them."""
    sid, stream = new_id(), new_post_stream_id()
    event_store.open(sid, stream)
    old = event_store.append(sid, stream, message(0, 60_000))
    shorts = fill(event_store, sid, stream, 300)  # six times max_events
    last = event_store.append(sid, stream, message(1, 60_000))  # long bytes counted: 120 kB, the old one goes
    assert gone(event_store, sid, old) == "expired"
    assert gone(event_store, sid, shorts[0]) == "expired"
    assert event_store.replay(sid, shorts[-1]).events == [(last, message(1, 60_000))]


@pytest.mark.parametrize("seed", range(4))
def test_random_sizes_drop_only_what_the_bound_needs_and_never_leave_a_hole(event_store, new_id, seed):
    """Fewer messages than max_events: only the byte bound drops anything."""
    rng = random.Random(seed)
    sid = new_id()
    stream = rng.choice([get_stream_id(sid), new_post_stream_id()])
    points = [event_store.open(sid, stream)]  # points[k]: the id message k follows
    sizes = [rng.choice([40, 400, 600, 5_000, 30_000, 70_000, 3 * MAX_BYTES // 2]) for _ in range(45)]
    points += [event_store.append(sid, stream, message(n, size)) for n, size in enumerate(sizes)]
    first = oldest_resumable(event_store, sid, points)
    for k in range(first, len(points)):  # from the newest dropped one on: everything that followed, in order
        assert ns(event_store.replay(sid, points[k]).events) == list(range(k, len(sizes)))
    assert all(gone(event_store, sid, points[k]) == "expired" for k in range(first))
    lengths = [len(message(n, size)) for n, size in enumerate(sizes)]
    kept = [length for length in lengths[first:] if length > 500]
    assert sum(kept) <= MAX_BYTES or len(kept) == 1  # within the bound, or the newest alone
    if first:  # message first - 1 is the newest dropped: a long one that had to go
        assert lengths[first - 1] > 500 and sum(kept) + lengths[first - 1] > MAX_BYTES
