"""Byte bounds: what a stream queues and what the in-memory store keeps are bounded in bytes, not only in frames.

A reader that stops while large messages keep coming is cut at the stream's
``max_bytes`` (the issue's 3.5 MB echo replies to a stopped reader); a
message larger than a stream can ever hold is an error to its sender, never
a cut of the reader; the event store's logs keep about ``max_bytes`` each.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading

import pytest

from session_manager import (
    BackendUnavailableError,
    InMemoryEventStore,
    InMemoryStreamSessionManager,
    MessageTooLargeError,
    SessionManagers,
    StreamController,
)
from session_manager.flask import JsonRpcError
from session_manager.sse import encode_message

from .flask_support import LATEST, serve, wait_until  # noqa: F401 - fixture
from .sse_parser import parse

JOIN = 10.0


def frame(size: int, n: int = 0) -> bytes:
    """An SSE frame of about *size* bytes carrying the number *n*."""
    return encode_message(json.dumps({"n": n, "pad": "x" * max(0, size - 30)}))


def resident_bytes() -> int:
    """This process's resident memory (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def numbers(chunks: list[bytes]) -> list[int]:
    return [json.loads(event.data)["n"] for event in parse(chunks)]


def queued_bytes(controller: StreamController) -> int:
    """Bytes of the frames still queued (test-only look at the queue: drains it)."""
    return sum(len(chunk) for chunk in _drain(controller))


def _drain(controller: StreamController) -> list[bytes]:
    controller.close(drain=True)
    return list(controller)


# -- the stream controller -------------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [0, -1, 1.5, "1", None, True])
def test_bad_max_bytes_is_refused(max_bytes):
    with pytest.raises(ValueError, match="max_bytes must be a positive int"):
        StreamController(max_bytes=max_bytes)


def test_a_stopped_reader_of_large_frames_is_cut_at_max_bytes_not_at_maxsize():
    overflowed = threading.Event()
    controller = StreamController(maxsize=1024, max_bytes=100_000, on_overflow=overflowed.set)
    accepted = 0
    for n in range(1000):
        if not controller.enqueue_frame(frame(10_000, n)):
            break
        accepted += 1
    assert controller.overflowed and overflowed.is_set() and controller.closed
    assert accepted == 10  # ten 10 kB frames fit 100 kB; the eleventh is one too many
    assert controller.max_bytes == 100_000


def test_small_frames_are_bounded_by_the_frame_count_and_stay_within_a_quarter_of_max_bytes():
    controller = StreamController(maxsize=100, max_bytes=400_000)  # frames up to 1,000 bytes ride the count
    sizes = []
    for n in range(1000):
        chunk = frame(900, n)
        if not controller.enqueue_frame(chunk):
            break
        sizes.append(len(chunk))
    assert len(sizes) == 100 and sum(sizes) <= 400_000 // 4
    assert controller.overflowed


def test_the_bound_holds_for_mixed_sizes_and_never_exceeds_one_and_a_quarter_max_bytes():
    rng = random.Random(7)
    max_bytes = 200_000
    controller = StreamController(maxsize=64, max_bytes=max_bytes)
    held = 0
    for n in range(2000):
        chunk = frame(rng.choice([100, 500, 5_000, 40_000]), n)
        if not controller.enqueue_frame(chunk):
            break
        held += len(chunk)
        assert held <= max_bytes * 1.25
    assert controller.overflowed


def test_a_frame_larger_than_max_bytes_is_an_error_to_its_sender_and_the_stream_goes_on():
    controller = StreamController(maxsize=8, max_bytes=10_000)
    assert controller.enqueue_frame(frame(100, 1))
    with pytest.raises(MessageTooLargeError) as info:
        controller.enqueue_frame(frame(20_000, 2))
    assert info.value.size > 10_000 and info.value.limit == 10_000
    assert "10000 bytes" in str(info.value) and "max_bytes" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not controller.closed and not controller.overflowed
    assert controller.enqueue_frame(frame(9_000, 3))  # the largest frame that fits, alone
    assert numbers(_drain(controller)) == [1, 3]


def test_a_reader_that_keeps_up_gets_every_large_frame_and_the_budget_comes_back():
    controller = StreamController(maxsize=16, max_bytes=50_000)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(controller))
    reader.start()
    for n in range(200):  # 200 frames of 20 kB: 80 times the budget, never more than two at once
        assert controller.enqueue_frame(frame(20_000, n)) or controller.overflowed
        wait_until(lambda: controller._large <= 20_100, what="the reader to take the frame")
    controller.close(drain=True)
    reader.join(JOIN)
    assert numbers(got) == list(range(200)) and not controller.overflowed
    assert controller._large == 0  # every byte counted in was counted out


def test_concurrent_senders_of_mixed_sizes_keep_order_and_account_every_byte():
    controller = StreamController(maxsize=4096, max_bytes=8_000_000)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(controller))
    reader.start()
    senders, per_sender = 8, 300

    def send(sender: int) -> None:
        rng = random.Random(sender)
        for i in range(per_sender):
            chunk = encode_message(json.dumps({"n": sender * per_sender + i, "pad": "y" * rng.choice([10, 3_000, 12_000])}))
            assert controller.enqueue_frame(chunk)

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN)
    controller.close(drain=True)
    reader.join(JOIN)
    received = numbers(got)
    assert sorted(received) == list(range(senders * per_sender))
    for sender in range(senders):  # FIFO per sender
        mine = [n for n in received if n // per_sender == sender]
        assert mine == sorted(mine)
    assert controller._large == 0 and not controller.overflowed


def test_a_broadcast_frame_is_shared_not_copied_per_stream():
    big = frame(50_000)
    controllers = [StreamController(maxsize=4, max_bytes=100_000) for _ in range(50)]
    for controller in controllers:
        assert controller.enqueue_frame(big)
    assert all(_drain(controller)[0] is big for controller in controllers)


# -- the in-memory event store (its byte bound is in the shared suite, tests/test_event_stores.py) -----


def test_store_bad_max_bytes_is_refused():
    with pytest.raises(ValueError, match="max_bytes must be a positive int"):
        InMemoryEventStore(max_bytes=0)


# -- the transport ----------------------------------------------------------------------


def large_handler(size: int):
    """Tools that answer or notify with *size* characters."""

    def handler(msg, ctx):
        method = msg.get("method")
        if method in ("initialize", "ping"):
            return {}
        if method == "big/result":
            return {"pad": "r" * size}
        if method == "big/notify":
            try:
                ctx.notify("notifications/big", {"pad": "n" * size})
            except MessageTooLargeError as exc:
                return {"refused": str(exc)}
            return {"refused": None}
        if "id" in msg:
            raise JsonRpcError(-32601, "Method not found")
        return None

    return handler


def test_a_response_larger_than_a_stream_holds_becomes_an_error_with_its_id(serve):  # noqa: F811
    h = serve(large_handler(300_000), stream_max_bytes=200_000)
    sid = h.initialize()
    reply = h.request(sid, "big/result", id=41)
    assert reply["id"] == 41
    assert reply["error"]["code"] == -32603
    assert "200000" in reply["error"]["message"]
    assert h.request(sid, "ping")["result"] == {}  # the session goes on


def test_a_notification_larger_than_a_stream_holds_is_an_error_to_the_handler(serve):  # noqa: F811
    h = serve(large_handler(300_000), stream_max_bytes=200_000)
    sid = h.initialize()
    assert "exceeds the 200000 bytes" in h.request(sid, "big/notify")["result"]["refused"]


def test_a_response_within_the_bound_goes_out_whole(serve):  # noqa: F811
    h = serve(large_handler(150_000), stream_max_bytes=200_000)
    sid = h.initialize()
    assert len(h.request(sid, "big/result")["result"]["pad"]) == 150_000


def test_a_stopped_get_reader_of_large_messages_is_cut_at_the_byte_bound(serve):  # noqa: F811
    """The issue's flood: large messages to a client that stopped reading end at the bound, not at the frame count."""
    h = serve(managers=SessionManagers(InMemoryStreamSessionManager()), stream_max_bytes=1_000_000)  # the good reader never holds more than one message
    good_sid, slow_sid = h.initialize(), h.initialize()
    good = h.open_stream(good_sid)
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window, then no reading
    slow.connect(("127.0.0.1", h.port))
    slow.sendall(
        f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{h.port}\r\nAccept: text/event-stream\r\n"
        f"Mcp-Session-Id: {slow_sid}\r\nMCP-Protocol-Version: {LATEST}\r\n\r\n".encode()
    )
    wait_until(lambda: h.managers.streams.has(slow_sid), what="the slow stream")
    controller = h.managers.streams._streams[slow_sid]
    rss_before = resident_bytes()
    payload = "p" * 100_000
    peak = sent = 0
    for n in range(400):  # 40 MB offered; a frame bound of 1024 would hold 100 MB
        if not h.managers.streams.has(slow_sid):
            break
        h.bp.send([slow_sid, good_sid], json.dumps({"jsonrpc": "2.0", "method": "notifications/big", "params": {"n": n, "pad": payload}}))
        sent += 1
        peak = max(peak, controller._large)
        good.take(1)
    assert controller.overflowed and not h.managers.streams.has(slow_sid)
    assert peak <= 1_000_000 and sent < 400
    # The process (server and clients) kept the bound, not the flood: without it the stream alone would hold 100 MB.
    assert resident_bytes() - rss_before < 30_000_000
    h.bp.send([good_sid], json.dumps({"jsonrpc": "2.0", "method": "notifications/last", "params": {"n": -1}}))
    assert good.take(1)[0]["params"]["n"] == -1  # the other stream got everything, in order
    slow.close()


# -- stream managers: a message is sent whole or refused ---------------------------------


def note(n: int, size: int = 0) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/test", "params": {"n": n, "pad": "q" * size}})


def drained_numbers(controller: StreamController) -> list[int]:
    return [json.loads(event.data)["params"]["n"] for event in parse(_drain(controller)) if event.data]


@pytest.mark.parametrize("with_store", [False, True], ids=["no-store", "store"])
def test_memory_manager_refuses_a_message_some_target_stream_cannot_hold_and_sends_nothing(with_store):
    streams = InMemoryStreamSessionManager(event_store=InMemoryEventStore() if with_store else None)
    roomy, small = StreamController(max_bytes=1_000_000), StreamController(max_bytes=50_000)
    streams.create("roomy", roomy)
    streams.create("small", small)
    for sessions in (None, ["roomy", "small"], ["small"]):
        with pytest.raises(MessageTooLargeError) as info:
            streams.send(sessions, note(1, 60_000))
        assert info.value.limit == 50_000
    streams.send(["roomy"], note(2, 60_000))  # only streams that can hold it: sent
    streams.send(None, note(3, 40_000))  # fits every stream: sent
    assert drained_numbers(roomy) == [2, 3] and drained_numbers(small) == [3]


class _Tagged(StreamController):
    """A subclass that changes how frames are queued (as the legacy transport's stream does)."""

    __slots__ = ()

    def enqueue_frame(self, frame: bytes) -> bool:
        return super().enqueue_frame(b": tagged\n" + frame)


class _TaggingMixin:
    """The same change as a mixin before StreamController in the bases."""

    def enqueue_frame(self, frame: bytes) -> bool:
        return super().enqueue_frame(b": tagged\n" + frame)  # type: ignore[misc, no-any-return]


class _MixedIn(_TaggingMixin, StreamController):
    __slots__ = ()


@pytest.mark.parametrize("kind", [_Tagged, _MixedIn], ids=["subclass", "mixin"])
@pytest.mark.parametrize("with_store", [False, True], ids=["no-store", "store"])
def test_a_subclass_that_changes_enqueue_frame_gets_every_fanned_out_frame_through_it(with_store, kind):
    streams = InMemoryStreamSessionManager(event_store=InMemoryEventStore() if with_store else None)
    plain, tagged = StreamController(), kind()
    streams.create("plain", plain)
    streams.create("tagged", tagged)
    streams.send(None, note(1, 100))  # short: queued unmeasured on plain streams
    streams.send(["plain", "tagged"], note(2, 100))
    streams.send(["tagged"], note(3, 50_000))  # long: counted byte by byte
    tagged_chunks = b"".join(_drain(tagged))
    assert tagged_chunks.count(b": tagged\n") == 3
    assert drained_numbers(plain) == [1, 2]


def test_one_stream_with_a_small_bound_makes_the_manager_measure_frames_for_it():
    streams = InMemoryStreamSessionManager()
    roomy, small = StreamController(), StreamController(maxsize=4, max_bytes=4_000)
    assert small.short_frame == 250 < roomy.short_frame
    streams.create("roomy", roomy)
    streams.create("small", small)
    for n in range(3):  # 600-byte frames: short for roomy, counted on small (1,800 of 4,000 bytes)
        streams.send(None, note(n, 600))
    assert small._large > 1_500 and roomy._large == 0
    streams.send(["small"], note(3, 600))
    streams.send(["small"], note(4, 600))  # 3,000 bytes and 5 frames: over maxsize, a slow consumer
    assert small.overflowed and not roomy.closed
    assert drained_numbers(roomy) == [0, 1, 2]


def test_redis_manager_refuses_a_message_over_max_message_bytes_before_sending_anything(node_factory):
    sender, holder = node_factory(max_message_bytes=100_000), node_factory()
    controller = StreamController()
    holder.create("r1", controller)
    with pytest.raises(MessageTooLargeError) as info:
        sender.send(["r1"], note(1, 200_000))
    assert info.value.limit == 100_000
    with pytest.raises(MessageTooLargeError):
        sender.send_many([(["r1"], note(2)), (None, note(3, 200_000))])  # the first is not sent either
    sender.send(["r1"], note(4, 50_000))
    wait_until(lambda: controller._large > 0 or controller._queue.qsize() > 0, what="the message to arrive")
    assert drained_numbers(controller) == [4]


def test_redis_stream_too_small_for_a_message_misses_it_logged_and_the_listener_goes_on(node_factory, caplog):
    sender, holder = node_factory(), node_factory()
    small, roomy = StreamController(max_bytes=50_000), StreamController()
    holder.create("small", small)
    holder.create("roomy", roomy)
    sender.send(None, note(1, 80_000))  # fits the sender's bound, not the small stream's
    sender.send(None, note(2))
    wait_until(lambda: small._queue.qsize() >= 1 and roomy._queue.qsize() >= 2, what="both messages")
    assert drained_numbers(small) == [2] and drained_numbers(roomy) == [1, 2]
    assert "was not delivered" in caplog.text


def test_a_keyed_retry_racing_its_failing_send_waits_and_delivers_once():
    """In memory: a retry with the same key that arrives while the first send runs waits for its outcome."""

    entered, release = threading.Event(), threading.Event()

    class FirstAppendFails(InMemoryEventStore):
        calls = 0

        def append_many(self, session_ids, message):
            FirstAppendFails.calls += 1
            if FirstAppendFails.calls == 1:
                entered.set()
                release.wait(JOIN)
                raise BackendUnavailableError("the store is down")
            return super().append_many(session_ids, message)

    streams = InMemoryStreamSessionManager(event_store=FirstAppendFails())
    controller = StreamController()
    streams.create("s", controller)
    failures: list[BaseException] = []

    def first() -> None:
        try:
            streams.send(["s"], note(1), idempotency_key="k-1")
        except BackendUnavailableError as exc:
            failures.append(exc)

    sender = threading.Thread(target=first)
    sender.start()
    assert entered.wait(JOIN)
    retry = threading.Thread(target=lambda: streams.send(["s"], note(1), idempotency_key="k-1"))
    retry.start()
    retry.join(0.2)
    assert retry.is_alive()  # waiting for the first send's outcome, not told "sent"
    release.set()
    sender.join(JOIN)
    retry.join(JOIN)
    assert len(failures) == 1
    assert drained_numbers(controller) == [1]  # the retry delivered it, once


def test_a_long_message_to_many_sessions_is_stored_once_under_one_id():
    store = InMemoryEventStore(100, max_bytes=1_000_000)
    sids = [f"s{i}" for i in range(5)]
    for sid in sids:
        store.open(sid, "g")
    groups = store.append_many(sids, "L" * 50_000)  # over max_bytes / (4 * max_events): counted byte by byte
    assert len(groups) == 1 and sorted(groups[0][1]) == sids
    assert all(store._sessions[sid]["g"].large[0][1] is store._sessions[sids[0]]["g"].large[0][1] for sid in sids)


def test_redis_sender_leaves_room_for_the_frame_so_no_stream_refuses_what_it_admitted(node_factory):
    limit = 100_000
    sender, holder = node_factory(max_message_bytes=limit), node_factory()
    controller = StreamController(max_bytes=limit)
    holder.create("r", controller)
    with pytest.raises(MessageTooLargeError):  # its data fits the limit, its frame does not
        sender.send(["r"], json.dumps({"pad": "z" * (limit - 40)}))
    sender.send(["r"], note(7, limit - 300))
    wait_until(lambda: controller._large > 0, what="the message to arrive")
    assert drained_numbers(controller) == [7]
