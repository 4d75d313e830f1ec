"""Behaviour suite every StreamSessionManager backend must pass.

Delivery may be asynchronous (the Redis backend goes through pub/sub), so
"nothing arrived" is checked with a marker: streams are FIFO, so once a
marker sent afterwards has arrived, anything earlier would have too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from session_manager import InMemoryStreamSessionManager, StreamConflictError, StreamController, StreamSessionManager

from .backends import STREAM_BACKENDS
from .conftest import Reader


def msg(n: object) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}})


def ns(messages):
    return [json.loads(m)["params"]["n"] for m in messages]


def test_create_then_has(streams, open_stream, new_id):
    sid, _, _ = open_stream()
    assert streams.has(sid)
    assert not streams.has(new_id())


def test_targeted_send_reaches_only_targets(streams, open_stream, new_id):
    a, _, ra = open_stream()
    b, _, rb = open_stream()
    streams.send([a, new_id()], msg("to-a"))  # unknown ids are ignored
    streams.send([b], msg("to-b"))
    assert ns(ra.take(1)) == ["to-a"]
    assert ns(rb.take(1)) == ["to-b"]
    streams.send([a, b], msg("marker"))
    assert ns(ra.take(1)) == ["marker"] and ns(rb.take(1)) == ["marker"]


def test_broadcast_reaches_every_stream(streams, open_stream):
    readers = [open_stream()[2] for _ in range(5)]
    streams.send(None, msg("all"))
    for reader in readers:
        assert ns(reader.take(1)) == ["all"]


def test_fifo_per_stream(streams, open_stream):
    sid, _, reader = open_stream()
    for i in range(200):
        streams.send([sid] if i % 2 else None, msg(i))
    assert ns(reader.take(200)) == list(range(200))


def test_payload_with_line_breaks_arrives_as_one_event(streams, open_stream):
    sid, _, reader = open_stream()
    data = '{"a":"x"}\n\ndata: injected\n\nevent: evil\nid: 666\n'
    streams.send([sid], data)
    streams.send([sid], data.replace("\n", "\r\n"))
    streams.send([sid], data.replace("\n", "\r"))
    # SSE turns every CR and CRLF into LF; nothing else may change.
    assert reader.take(3) == [data, data, data]


def test_delete_closes_stream_and_forgets_it(streams, open_stream):
    sid, controller, reader = open_stream()
    streams.delete(sid)
    assert reader.done.wait(5), "reader did not end after delete"
    assert controller.closed
    assert not streams.has(sid)
    streams.send([sid], msg("late"))
    streams.send(None, msg("late"))
    assert reader.pending() == []


def test_delete_is_idempotent_and_unknown_ok(streams, new_id):
    sid = new_id()
    streams.delete(sid)
    streams.delete(sid)
    assert not streams.has(sid)


def test_create_conflict_leaves_open_stream_untouched(streams, open_stream):
    sid, controller, reader = open_stream()
    with pytest.raises(StreamConflictError) as excinfo:
        streams.create(sid, StreamController())
    assert sid in str(excinfo.value)
    assert not controller.closed
    streams.send([sid], msg("still-here"))
    assert ns(reader.take(1)) == ["still-here"]


def test_stream_ending_unregisters_it(streams, open_stream):
    sid, controller, reader = open_stream()
    controller.close()
    assert reader.done.wait(5)
    for _ in range(100):  # other backends may learn it asynchronously
        if not streams.has(sid):
            break
        reader.done.wait(0.05)
    assert not streams.has(sid)


def test_reopen_after_close_gets_new_stream(streams, open_stream):
    sid, first, r1 = open_stream()
    first.close()
    assert r1.done.wait(5)
    _, second, r2 = open_stream(sid)
    streams.send([sid], msg("new"))
    assert ns(r2.take(1)) == ["new"]
    assert not second.closed


def test_closed_stream_does_not_stop_delivery_to_others(streams, open_stream):
    a, ca, _ra = open_stream()
    b, _, rb = open_stream()
    ca.close()
    streams.send([a, b], msg(1))
    streams.send(None, msg(2))
    assert ns(rb.take(2)) == [1, 2]


def test_slow_consumer_is_dropped_others_unaffected(streams, open_stream, new_id):
    slow_id = new_id()
    slow = StreamController(maxsize=5, keepalive=0.2)
    streams.create(slow_id, slow)  # registered but never read: a stuck client
    _fast_id, _, fast = open_stream()
    for i in range(20):
        streams.send(None, msg(i))
    assert ns(fast.take(20)) == list(range(20))
    assert slow.overflowed and slow.closed
    assert not streams.has(slow_id)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda s: s.create(123, StreamController()), TypeError),
        (lambda s: s.create("", StreamController()), ValueError),
        (lambda s: s.create("has space", StreamController()), ValueError),
        (lambda s: s.create("ok", object()), TypeError),
        (lambda s: s.send(None, {"not": "a str"}), TypeError),
        (lambda s: s.send(None, b"bytes"), TypeError),
        (lambda s: s.send("one-id-as-str", "{}"), TypeError),
        (lambda s: s.send([1, 2], "{}"), TypeError),
        (lambda s: s.send([["unhashable"]], "{}"), TypeError),
        (lambda s: s.send((sid for sid in [None]), "{}"), TypeError),
        (lambda s: s.has(None), TypeError),
        (lambda s: s.delete(5), TypeError),
    ],
)
def test_bad_input_raises_clear_error(streams, open_stream, call, error):
    sid, _, reader = open_stream()
    with pytest.raises(error) as excinfo:
        call(streams)
    assert str(excinfo.value)
    streams.send([sid], msg("unharmed"))  # no bad call hurts another session
    assert ns(reader.take(1)) == ["unharmed"]


class _Id(str):
    """A str subclass (a StrEnum member, say): not a session id, open stream or not."""


def test_an_id_of_a_str_subclass_is_refused_whether_its_stream_is_open_or_not(streams, open_stream):
    sid, _, reader = open_stream()
    for ids in ([_Id(sid)], [_Id("no-such-session")]):
        with pytest.raises(TypeError, match="session ids must be str"):
            streams.send(ids, msg("refused"))
    streams.send([sid], msg("unharmed"))
    assert ns(reader.take(1)) == ["unharmed"]


# -- send_many: a batch, as send one after the other -------------------------------------


def test_send_many_delivers_each_stream_its_messages_in_batch_order(streams, open_stream, new_id):
    a, _, ra = open_stream()
    b, _, rb = open_stream()
    streams.send(None, msg("before"))
    streams.send_many([
        ([a], msg("a1")),
        (None, msg("all1")),
        ([b, new_id()], msg("b1")),  # unknown ids are ignored
        ([a, b], msg("ab")),
        ([], msg("nobody")),
        (None, msg("all2")),
        ([a], msg("a2")),
    ])
    streams.send(None, msg("after"))
    assert ns(ra.take(7)) == ["before", "a1", "all1", "ab", "all2", "a2", "after"]
    assert ns(rb.take(6)) == ["before", "all1", "b1", "ab", "all2", "after"]


def test_send_many_takes_any_iterables_and_an_empty_batch(streams, open_stream):
    sid, _, reader = open_stream()
    streams.send_many([])
    streams.send_many(iter(()))
    streams.send_many(((s for s in [sid]), msg(i)) for i in range(3))  # a generator of pairs, ids from generators
    streams.send_many([({sid}, msg(3)), ((sid,), msg(4))])
    assert ns(reader.take(5)) == [0, 1, 2, 3, 4]


def test_send_many_keeps_fifo_with_send_and_with_many_messages(streams, open_stream):
    sid, _, reader = open_stream(maxsize=4096)
    expected = []
    for round_ in range(4):
        batch = [([sid] if i % 2 else None, msg(f"{round_}.{i}")) for i in range(300)]
        streams.send_many(batch)
        streams.send([sid], msg(f"{round_}.single"))
        expected += [f"{round_}.{i}" for i in range(300)] + [f"{round_}.single"]
    assert ns(reader.take(len(expected))) == expected


@pytest.mark.parametrize(
    "batch, error",
    [
        ([(None, b"bytes")], TypeError),
        ([("one-id-as-str", "{}")], TypeError),
        ([([1], "{}")], TypeError),
        ([(None, "{}", "key", "extra")], TypeError),
        ([(None, "{}", "")], ValueError),  # an empty idempotency key
        ([(None, "{}", 5)], TypeError),
        (["not a pair"], TypeError),
        ([None], TypeError),
        (None, TypeError),
    ],
)
def test_send_many_checks_every_message_before_sending_any(streams, open_stream, batch, error):
    sid, _, reader = open_stream()
    with pytest.raises(error):
        streams.send_many([([sid], msg("first")), *batch] if batch is not None else batch)
    streams.send([sid], msg("marker"))
    assert ns(reader.take(1)) == ["marker"], "nothing of a refused batch may be sent"


def test_send_many_drops_a_slow_consumer_and_reaches_the_others(streams, open_stream, new_id):
    slow_id = new_id()
    slow = StreamController(maxsize=5, keepalive=0.2)
    streams.create(slow_id, slow)  # never read
    _, _, fast = open_stream()
    streams.send_many([(None, msg(i)) for i in range(20)])
    assert ns(fast.take(20)) == list(range(20))
    assert slow.overflowed and slow.closed
    assert not streams.has(slow_id)


# -- replies to server-to-client requests ---------------------------------------------


def test_a_reply_reaches_its_waiter_once_and_only_in_its_session(streams, new_id):
    sid, other = new_id(), new_id()
    pending = streams.expect_reply(sid, "s2c-00000000000000aa", 5)
    assert not streams.deliver_reply(other, "s2c-00000000000000aa", '{"jsonrpc":"2.0","id":"x","result":{}}')
    assert not streams.deliver_reply(sid, "s2c-00000000000000bb", '{"unknown":1}')
    assert streams.deliver_reply(sid, "s2c-00000000000000aa", '{"answer":1}')
    assert pending.wait(5) == '{"answer":1}'
    assert not streams.deliver_reply(sid, "s2c-00000000000000aa", '{"answer":2}')  # a duplicate
    pending.cancel()
    assert pending.wait(0) == '{"answer":1}'


def test_a_reply_after_the_waiter_gave_up_finds_nothing(streams, new_id):
    sid = new_id()
    pending = streams.expect_reply(sid, "s2c-00000000000000cc", 5)
    assert pending.wait(0.05) is None
    pending.cancel()
    assert not streams.deliver_reply(sid, "s2c-00000000000000cc", '{"late":1}')
    assert pending.wait(0) is None


def test_many_threads_waiting_each_get_their_own_reply(streams, new_id):
    sid = new_id()
    ids = [f"s2c-{i:016x}" for i in range(40)]
    waiters = [streams.expect_reply(sid, rid, 10) for rid in ids]
    got: dict[str, str | None] = {}

    def wait(rid, pending):
        got[rid] = pending.wait(10)
        pending.cancel()

    threads = [threading.Thread(target=wait, args=pair) for pair in zip(ids, waiters)]
    for thread in threads:
        thread.start()
    senders = [threading.Thread(target=streams.deliver_reply, args=(sid, rid, f'"{rid}"')) for rid in reversed(ids)]
    for thread in senders:
        thread.start()
    for thread in senders + threads:
        thread.join(15)
    assert got == {rid: f'"{rid}"' for rid in ids}


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m: m.expect_reply(None, "s2c-0000000000000001", 1), TypeError),
        (lambda m: m.deliver_reply(b"sid", "s2c-0000000000000001", "{}"), TypeError),
        (lambda m: m.deliver_reply("sid", "s2c-0000000000000001", {"not": "serialized"}), TypeError),
    ],
)
def test_reply_calls_refuse_bad_input(streams, call, error):
    with pytest.raises(error):
        call(streams)


# -- idempotent sends ---------------------------------------------------------------------


def take_until(reader: Reader, marker: object, most: int = 50) -> list[object]:
    """The messages up to and including *marker* (FIFO: anything sent before it has arrived)."""
    got: list[object] = []
    while not got or got[-1] != marker:
        assert len(got) < most, f"no {marker!r} among {got!r}"
        got += ns(reader.take(1))
    return got


def test_a_send_with_a_used_idempotency_key_does_nothing(streams, open_stream, new_id):
    a, _, ra = open_stream()
    b, _, rb = open_stream()
    key, other = f"k-{new_id()}", f"k-{new_id()}"
    streams.send([a], msg("once"), idempotency_key=key)
    streams.send([a], msg("once"), idempotency_key=key)  # a retry: returns normally, sends nothing
    streams.send([a, b], msg("other message, same key"), idempotency_key=key)
    streams.send(None, msg("all"), idempotency_key=other)
    streams.send(None, msg("all"), idempotency_key=other)
    streams.send([a, b], msg("marker"))
    assert take_until(ra, "marker") == ["once", "all", "marker"]
    assert take_until(rb, "marker") == ["all", "marker"]


def test_sends_with_different_idempotency_keys_are_each_delivered(streams, open_stream, new_id):
    sid, _, reader = open_stream()
    for i in range(3):
        streams.send([sid], msg("same data"), idempotency_key=f"k-{new_id()}")
        streams.send(None, msg("same broadcast"), idempotency_key=f"k-{new_id()}-{i}")
    streams.send([sid], msg("marker"))
    assert take_until(reader, "marker") == ["same data", "same broadcast"] * 3 + ["marker"]


def test_send_many_takes_an_idempotency_key_per_message(streams, open_stream, new_id):
    sid, _, reader = open_stream()
    first, second = f"k-{new_id()}", f"k-{new_id()}"
    streams.send_many([([sid], msg(1), first), ([sid], msg(2)), (None, msg(3), second), ([sid], msg(4), None)])
    streams.send_many([([sid], msg(1), first), ([sid], msg(5)), (None, msg(3), second)])  # the batch retried, in part
    streams.send([sid], msg(6), idempotency_key=first)  # one key, shared by send and send_many
    streams.send([sid], msg("marker"))
    assert take_until(reader, "marker") == [1, 2, 3, 4, 5, "marker"]


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("", ValueError),
        ("x" * 257, ValueError),
        ("has space", ValueError),
        ("caf\xe9", ValueError),
        ("\ud800", ValueError),
        ("tab\there", ValueError),
        (b"bytes", TypeError),
        (5, TypeError),
    ],
)
def test_a_bad_idempotency_key_is_refused_and_nothing_is_sent(streams, open_stream, key, error):
    sid, _, reader = open_stream()
    with pytest.raises(error, match="idempotency_key"):
        streams.send([sid], msg("refused"), idempotency_key=key)
    with pytest.raises(error, match="idempotency_key"):
        streams.send(None, msg("refused"), idempotency_key=key)
    streams.send([sid], msg("x" * 256), idempotency_key="x" * 256)  # the longest key
    streams.send([sid], msg("marker"))
    assert take_until(reader, "marker") == ["x" * 256, "marker"]


@pytest.fixture
def another(
    streams: StreamSessionManager, request: pytest.FixtureRequest
) -> Iterator[Callable[..., StreamSessionManager]]:
    """``another(**options)``: a new manager of the backend the test runs on, made with *options*; closed afterwards."""
    made: list[StreamSessionManager] = []

    def make(**options: object) -> StreamSessionManager:
        made.append(STREAM_BACKENDS[request.node.callspec.params["streams"]](request, **options))
        return made[-1]

    yield make
    for manager in made:
        manager.close()


def test_an_idempotency_key_sends_again_once_dedupe_ttl_has_passed(another, new_id):
    ttl = 0.5
    streams = another(dedupe_ttl=ttl)
    sid, key = new_id(), f"k-{new_id()}"
    controller = StreamController(keepalive=0.2)
    streams.create(sid, controller)
    reader = Reader(controller)
    try:
        started = time.monotonic()
        streams.send([sid], msg("first"), idempotency_key=key)
        streams.send([sid], msg("retry"), idempotency_key=key)
        within = time.monotonic() - started < ttl  # the retry ran before the key could expire
        streams.send([sid], msg("marker 0"))
        got = take_until(reader, "marker 0")
        assert got[0] == "first"
        if within:
            assert got == ["first", "marker 0"]
        for attempt in range(1, 101):  # bounded: 100 x ttl / 5 (10 s)
            streams.send([sid], msg(attempt), idempotency_key=key)
            streams.send([sid], msg(f"marker {attempt}"))
            got = take_until(reader, f"marker {attempt}")
            if got != [f"marker {attempt}"]:
                break
            time.sleep(ttl / 5)
        assert got == [attempt, f"marker {attempt}"], "the key was never forgotten"
    finally:
        controller.close()
        reader.thread.join(5)


@pytest.mark.parametrize("options", [{"dedupe_ttl": 0}, {"dedupe_ttl": -1}, {"dedupe_ttl": float("nan")}])
def test_a_bad_dedupe_ttl_is_refused(another, options):
    with pytest.raises(ValueError, match="dedupe_ttl"):
        another(**options)


def test_the_in_memory_record_of_keys_is_bounded_the_oldest_forgotten_first(new_id):
    """In memory only: Redis keeps each key for dedupe_ttl, whatever their number."""
    with InMemoryStreamSessionManager(dedupe_max_keys=3) as streams:
        sid = new_id()
        controller = StreamController(keepalive=0.2)
        streams.create(sid, controller)
        reader = Reader(controller)
        for key in ("k1", "k2", "k3", "k4"):  # k1 is forgotten for k4
            streams.send([sid], msg(key), idempotency_key=key)
        for key in ("k4", "k3", "k2", "k1"):
            streams.send([sid], msg(f"again {key}"), idempotency_key=key)
        streams.send([sid], msg("marker"))
        assert take_until(reader, "marker") == ["k1", "k2", "k3", "k4", "again k1", "marker"]
    with pytest.raises(ValueError, match="dedupe_max_keys"):
        InMemoryStreamSessionManager(dedupe_max_keys=0)
