"""Unit tests of StreamController: queueing, keep-alive, closing, overflow, cleanup.

Blocking is detected with generous join timeouts on helper threads, never
by measuring speed. A reader blocked with a long keepalive (60 s) that ends
within a few seconds of close() was woken by close(), not by a ping.
"""

from __future__ import annotations

import gc
import json
import logging
import threading

import pytest

from session_manager import InMemoryStreamSessionManager, StreamController, encode_event
from session_manager.sse import PING, encode_message

from .sse_parser import SSEParser, parse

LONG = 60.0  # a keepalive no test waits for
JOIN = 10.0  # bound on every wait for a helper thread


def msg(n: object) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}})


def ns(chunks: list[bytes]) -> list[object]:
    return [json.loads(e.data)["params"]["n"] for e in parse(chunks)]


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.threads: list[str] = []

    def __call__(self) -> None:
        self.calls += 1
        self.threads.append(threading.current_thread().name)


class ThreadReader:
    """Iterates a controller on a thread; records chunks and how it ended."""

    def __init__(self, controller: StreamController) -> None:
        self.controller = controller
        self.chunks: list[bytes] = []
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(JOIN)

    def _run(self) -> None:
        self.started.set()
        try:
            for chunk in self.controller:
                self.chunks.append(chunk)
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - reported by finish()
            self.error = exc

    def finish(self, timeout: float = JOIN) -> list[bytes]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "reader still blocked"
        assert self.error is None, repr(self.error)
        return self.chunks

    def wait_for_events(self, count: int, timeout: float = JOIN) -> None:
        for _ in range(int(timeout / 0.01)):
            if len(parse(list(self.chunks))) >= count:
                return
            assert self.error is None, f"reader failed: {self.error!r}"
            self.thread.join(0.01)
        pytest.fail(f"expected {count} events, got {parse(list(self.chunks))!r}")


# -- producing -----------------------------------------------------------------


def test_enqueue_never_blocks_without_a_reader():
    controller = StreamController(maxsize=8, keepalive=LONG)
    results: list[bool] = []
    sender = threading.Thread(target=lambda: results.extend(controller.enqueue(msg(i)) for i in range(1000)))
    sender.start()
    sender.join(JOIN)
    assert not sender.is_alive(), "enqueue blocked"
    assert results == [True] * 8 + [False] * 992


def test_enqueue_never_blocks_on_a_closed_stream():
    controller = StreamController(keepalive=LONG)
    controller.close()
    assert controller.enqueue(msg(1)) is False
    assert controller.enqueue_frame(encode_event("x")) is False
    assert list(controller) == []


def test_fifo():
    controller = StreamController(maxsize=2000, keepalive=LONG)
    assert all(controller.enqueue(msg(i)) for i in range(1500))
    controller.close(drain=True)
    assert ns(list(controller)) == list(range(1500))


def test_fifo_with_a_live_reader_and_interleaved_frames():
    controller = StreamController(maxsize=10_000, keepalive=LONG)
    reader = ThreadReader(controller)
    frames = []
    for i in range(2000):
        if i % 3:
            assert controller.enqueue(msg(i))
        else:
            frame = encode_event(msg(i), event="message", id=str(i))
            frames.append(frame)
            assert controller.enqueue_frame(frame)
    controller.close(drain=True)
    chunks = reader.finish()
    assert ns(chunks) == list(range(2000))
    # Chunks hold whole frames only, so a WSGI server may flush each as it comes.
    for chunk in chunks:
        assert chunk.endswith(b"\n\n")
    ids = [e.id for e in parse(chunks)]
    assert ids[0] == "0" and ids[3] == "3"


def test_a_reader_that_keeps_up_gets_each_frame_as_it_was_queued():
    # One frame waiting is the usual wake-up of a live stream: it is handed over as queued, not copied.
    controller = StreamController(keepalive=LONG)
    reader = iter(controller)
    for i in range(3):
        frame = encode_message(msg(i))
        assert controller.enqueue_frame(frame)
        assert next(reader) is frame
    large = b"data: " + b"x" * (controller.short_frame + 10) + b"\n\n"
    assert controller.enqueue_frame(large)
    assert next(reader) == large and controller._large == 0  # a large one alone gives its bytes back
    # Frames waiting together come in chunks of at most _MAX_BATCH (64) frames.
    for i in range(100):
        controller.enqueue(msg(i))
    assert [chunk.count(b"\n\n") for chunk in (next(reader), next(reader))] == [64, 36]
    assert controller.enqueue(msg("last"))
    controller.close()
    assert list(reader) == []  # close() drops what is still queued


def test_frames_come_out_byte_identical():
    controller = StreamController(keepalive=LONG)
    frames = [encode_event(msg(i), event="e", id=f"id-{i}", retry=i) for i in range(5)]
    for frame in frames:
        controller.enqueue_frame(frame)
    controller.close(drain=True)
    assert b"".join(controller) == b"".join(frames)


def test_payload_with_line_breaks_is_one_event():
    controller = StreamController(keepalive=LONG)
    controller.enqueue("a\r\nb\rc\n\ndata: x\n")
    controller.close(drain=True)
    events = parse(list(controller))
    assert [e.data for e in events] == ["a\nb\nc\n\ndata: x\n"]


# -- keep-alive --------------------------------------------------------------------


def test_keepalive_ping_when_idle():
    controller = StreamController(keepalive=0.05)
    frames = iter(controller)
    assert next(frames) == PING
    assert next(frames) == PING
    controller.enqueue(msg("after pings"))
    chunk = next(frames)
    assert chunk != PING and ns([chunk]) == ["after pings"]
    assert next(frames) == PING  # idle again
    controller.close()
    assert list(frames) == []


def test_no_ping_while_frames_are_waiting():
    controller = StreamController(keepalive=0.05)
    for i in range(3):
        controller.enqueue(msg(i))
    frames = iter(controller)
    assert ns([next(frames)]) == [0, 1, 2]


def test_pings_are_comments_to_a_parser():
    controller = StreamController(keepalive=0.02)
    reader = ThreadReader(controller)
    for _ in range(int(JOIN / 0.01)):
        if reader.chunks.count(PING) >= 3:
            break
        reader.thread.join(0.01)
    controller.enqueue(msg("x"))
    reader.wait_for_events(1)
    controller.close()
    chunks = reader.finish()
    parser = SSEParser()
    for chunk in chunks:
        parser.feed(chunk)
    assert [json.loads(e.data)["params"]["n"] for e in parser.events] == ["x"]
    assert len(parser.comments) >= 3


# -- closing -------------------------------------------------------------------------


def test_close_wakes_a_blocked_reader_promptly():
    controller = StreamController(keepalive=LONG)
    reader = ThreadReader(controller)
    reader.thread.join(0.1)
    assert reader.thread.is_alive()  # blocked waiting
    controller.close()
    assert reader.finish(timeout=5.0) == []  # woken by close, not by a 60 s ping
    assert controller.closed


def test_close_from_another_thread_while_delivering():
    controller = StreamController(maxsize=100_000, keepalive=LONG)
    reader = ThreadReader(controller)
    for i in range(500):
        controller.enqueue(msg(i))
    closer = threading.Thread(target=controller.close)
    closer.start()
    closer.join(JOIN)
    got = ns(reader.finish())
    assert got == list(range(len(got)))  # a prefix: at most once, in order


def test_close_is_idempotent():
    on_close = Counter()
    controller = StreamController(keepalive=LONG, on_close=on_close)
    reader = ThreadReader(controller)
    for _ in range(3):
        controller.close()
        controller.close(drain=True)
    reader.finish()
    controller.close()
    assert controller.closed
    assert on_close.calls == 1


def test_close_drops_frames_still_queued():
    controller = StreamController(keepalive=LONG)
    for i in range(3):
        controller.enqueue(msg(i))
    controller.close()
    assert list(controller) == []


def test_close_drain_delivers_queued_frames_then_ends():
    on_close = Counter()
    controller = StreamController(keepalive=LONG, on_close=on_close)
    for i in range(3):
        assert controller.enqueue(msg(i))
    controller.close(drain=True)
    assert controller.closed
    assert controller.enqueue(msg("late")) is False
    assert ns(list(controller)) == [0, 1, 2]
    assert on_close.calls == 1


def test_close_drain_with_a_blocked_reader():
    on_close = Counter()
    controller = StreamController(keepalive=LONG, on_close=on_close)
    reader = ThreadReader(controller)
    for i in range(100):
        controller.enqueue(msg(i))
    controller.close(drain=True)
    assert ns(reader.finish(timeout=5.0)) == list(range(100))
    assert on_close.calls == 1


def test_close_drain_of_an_empty_stream_ends_it():
    controller = StreamController(keepalive=LONG)
    reader = ThreadReader(controller)
    controller.close(drain=True)
    assert reader.finish(timeout=5.0) == []


def test_close_after_drain_stops_at_once():
    controller = StreamController(keepalive=LONG)
    for i in range(3):
        controller.enqueue(msg(i))
    controller.close(drain=True)
    controller.close()
    assert list(controller) == []


# -- overflow (slow consumer) ------------------------------------------------------


def test_overflow_closes_the_stream():
    on_close = Counter()
    controller = StreamController(maxsize=4, keepalive=LONG, on_close=on_close)
    assert [controller.enqueue(msg(i)) for i in range(4)] == [True] * 4
    assert not controller.overflowed and not controller.closed
    assert controller.enqueue(msg(4)) is False
    assert controller.overflowed and controller.closed
    assert controller.enqueue(msg(5)) is False
    assert on_close.calls == 1  # nobody was reading: cleaned up at once
    assert list(controller) == []


def test_overflow_is_logged(caplog):
    controller = StreamController(maxsize=1, keepalive=LONG)
    with caplog.at_level(logging.WARNING, logger="session_manager"):
        controller.enqueue(msg(0))
        controller.enqueue(msg(1))
    assert any("slow" in r.getMessage().lower() for r in caplog.records)


def test_overflow_of_a_suspended_reader_ends_it_and_cleans_up():
    on_close = Counter()
    controller = StreamController(maxsize=3, keepalive=LONG, on_close=on_close)
    frames = iter(controller)
    controller.enqueue(msg("first"))
    assert ns([next(frames)]) == ["first"]  # reader suspended mid-stream
    for i in range(4):
        controller.enqueue(msg(i))
    assert controller.overflowed
    assert list(frames) == []  # the resumed reader ends without the dropped backlog
    assert on_close.calls == 1


def test_explicit_close_is_not_an_overflow():
    controller = StreamController(maxsize=2, keepalive=LONG)
    controller.close()
    assert controller.enqueue(msg(1)) is False
    assert not controller.overflowed


def test_overflow_leaves_other_streams_working():
    streams = InMemoryStreamSessionManager()
    slow = StreamController(maxsize=2, keepalive=LONG)
    streams.create("slow", slow)  # never read
    fast = StreamController(maxsize=2, keepalive=LONG)
    streams.create("fast", fast)
    fast_reader = ThreadReader(fast)
    for i in range(50):
        streams.send(None, msg(i))
        fast_reader.wait_for_events(i + 1)  # the fast reader keeps up
    assert slow.overflowed and not fast.closed
    assert not streams.has("slow") and streams.has("fast")
    streams.send(["slow", "fast"], msg("targeted"))
    fast_reader.wait_for_events(51)
    streams.delete("fast")
    assert ns(fast_reader.finish()) == list(range(50)) + ["targeted"]
    assert streams._streams == {}


def test_many_concurrent_senders_overflow_only_bound_the_queue():
    controller = StreamController(maxsize=64, keepalive=LONG)
    start = threading.Barrier(8)
    results: list[list[bool]] = [[] for _ in range(8)]

    def send(k: int) -> None:
        start.wait(JOIN)
        results[k].extend(controller.enqueue(msg(k)) for _ in range(100))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
        assert not t.is_alive()
    assert controller.overflowed and controller.closed
    accepted = sum(r.count(True) for r in results)
    # "give or take one per racing sender"
    assert 64 <= accepted <= 64 + 8
    for r in results:  # once refused, always refused
        assert r == sorted(r, reverse=True)


# -- close callbacks: exactly once in every ending --------------------------------


def test_callbacks_run_once_when_the_reader_finishes():
    on_close, extra = Counter(), Counter()
    controller = StreamController(keepalive=LONG, on_close=on_close)
    controller.add_close_callback(extra)
    reader = ThreadReader(controller)
    controller.enqueue(msg(1))
    reader.wait_for_events(1)
    assert on_close.calls == 0 and extra.calls == 0  # not while it runs
    controller.close()
    reader.finish()
    assert on_close.calls == 1 and extra.calls == 1
    controller.close()
    assert on_close.calls == 1 and extra.calls == 1


def test_callbacks_run_once_when_the_reader_is_abandoned():
    on_close = Counter()
    controller = StreamController(keepalive=0.05, on_close=on_close)
    frames = iter(controller)
    assert next(frames) == PING
    frames.close()  # client gone: GeneratorExit inside the generator
    assert on_close.calls == 1
    assert controller.closed
    assert controller.enqueue(msg(1)) is False
    controller.close()
    frames.close()
    assert on_close.calls == 1


def test_callbacks_run_once_when_the_reader_is_garbage_collected():
    on_close = Counter()
    controller = StreamController(keepalive=LONG, on_close=on_close)
    controller.enqueue(msg(1))
    frames = iter(controller)
    next(frames)
    del frames
    gc.collect()
    assert on_close.calls == 1
    assert controller.closed


def test_callbacks_run_once_when_abandoned_while_blocked_on_another_thread():
    # The WSGI server thread is blocked in the queue when the client goes;
    # close() from elsewhere (e.g. DELETE) must end it and clean up once.
    on_close = Counter()
    controller = StreamController(keepalive=LONG, on_close=on_close)
    reader = ThreadReader(controller)
    reader.thread.join(0.05)
    controller.close()
    reader.finish()
    assert on_close.calls == 1


def test_callbacks_run_at_once_when_closed_before_being_iterated():
    on_close, extra = Counter(), Counter()
    controller = StreamController(keepalive=LONG, on_close=on_close)
    controller.add_close_callback(extra)
    controller.close()
    assert on_close.calls == 1 and extra.calls == 1
    assert list(controller) == []  # iterating later neither blocks nor re-runs them
    assert on_close.calls == 1 and extra.calls == 1


def test_callbacks_after_closed_drain_run_when_drained():
    on_close = Counter()
    controller = StreamController(keepalive=LONG, on_close=on_close)
    controller.enqueue(msg(1))
    controller.close(drain=True)
    assert ns(list(controller)) == [1]
    assert on_close.calls == 1


def test_add_close_callback_after_the_end_runs_at_once():
    controller = StreamController(keepalive=LONG)
    controller.close()
    late = Counter()
    controller.add_close_callback(late)
    assert late.calls == 1
    assert late.threads == [threading.current_thread().name]


def test_add_close_callback_after_the_reader_ended_runs_at_once():
    controller = StreamController(keepalive=0.05)
    frames = iter(controller)
    next(frames)
    frames.close()
    late = Counter()
    controller.add_close_callback(late)
    assert late.calls == 1


def test_callbacks_run_in_order_and_a_failing_one_does_not_stop_the_rest(caplog):
    order: list[str] = []

    def boom() -> None:
        order.append("boom")
        raise RuntimeError("callback failed")

    controller = StreamController(keepalive=LONG, on_close=lambda: order.append("on_close"))
    controller.add_close_callback(boom)
    controller.add_close_callback(lambda: order.append("last"))
    with caplog.at_level(logging.ERROR, logger="session_manager"):
        controller.close()  # the failure is logged, not raised
    assert order == ["on_close", "boom", "last"]
    assert any("callback" in r.getMessage() for r in caplog.records)


def test_callbacks_once_under_racing_closers_and_reader_exit():
    for round_ in range(30):
        on_close = Counter()
        controller = StreamController(keepalive=LONG, on_close=on_close)
        reader = ThreadReader(controller)
        go = threading.Barrier(5)

        def close(drain: bool, go: threading.Barrier = go, controller: StreamController = controller) -> None:
            go.wait(JOIN)
            controller.close(drain=drain)

        closers = [threading.Thread(target=close, args=(k % 2 == 0,)) for k in range(4)]
        for t in closers:
            t.start()
        go.wait(JOIN)
        if round_ % 2:
            controller.add_close_callback(on_close)
        for t in closers:
            t.join(JOIN)
        reader.finish()
        assert on_close.calls == (2 if round_ % 2 else 1), f"round {round_}"


def test_close_racing_the_first_next_runs_callbacks_once():
    for _ in range(200):
        on_close = Counter()
        controller = StreamController(keepalive=LONG, on_close=on_close)
        frames = iter(controller)
        closer = threading.Thread(target=controller.close)
        closer.start()
        assert list(frames) == []
        closer.join(JOIN)
        assert on_close.calls == 1


def test_registered_stream_is_forgotten_in_every_ending():
    streams = InMemoryStreamSessionManager()

    # reader finishes
    c1 = StreamController(keepalive=LONG)
    streams.create("a", c1)
    reader = ThreadReader(c1)
    c1.close()
    reader.finish()
    # reader abandoned
    c2 = StreamController(keepalive=0.05)
    streams.create("b", c2)
    frames = iter(c2)
    next(frames)
    frames.close()
    # closed before being iterated
    c3 = StreamController(keepalive=LONG)
    streams.create("c", c3)
    c3.close()
    # overflowed
    c4 = StreamController(maxsize=1, keepalive=LONG)
    streams.create("d", c4)
    streams.send(["d"], msg(1))
    streams.send(["d"], msg(2))
    assert not any(streams.has(s) for s in "abcd")
    assert streams._streams == {}


# -- bad arguments -----------------------------------------------------------------


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, "10", None, True])
def test_bad_maxsize(maxsize):
    with pytest.raises((TypeError, ValueError)) as excinfo:
        StreamController(maxsize=maxsize)
    assert "maxsize" in str(excinfo.value)


@pytest.mark.parametrize("keepalive", [0, -1, -0.5, "15", None, float("nan")])
def test_bad_keepalive(keepalive):
    with pytest.raises((TypeError, ValueError)) as excinfo:
        StreamController(keepalive=keepalive)
    assert "keepalive" in str(excinfo.value)


@pytest.mark.parametrize("keepalive", [float("inf"), 1e12])
def test_huge_keepalive_is_rejected_or_works(keepalive):
    # Either refuse it up front, or honour it: never fail later in the reader.
    try:
        controller = StreamController(keepalive=keepalive)
    except ValueError as exc:
        assert "keepalive" in str(exc)
        return
    reader = ThreadReader(controller)
    controller.enqueue(msg(1))
    reader.wait_for_events(1)
    reader.thread.join(0.1)
    controller.close()
    assert ns(reader.finish()) == [1]


def test_bad_on_close():
    with pytest.raises(TypeError) as excinfo:
        StreamController(on_close="not callable")
    assert "on_close" in str(excinfo.value) and "callable" in str(excinfo.value)


def test_bad_close_callback():
    controller = StreamController(keepalive=LONG)
    with pytest.raises(TypeError) as excinfo:
        controller.add_close_callback(42)
    assert "callable" in str(excinfo.value)
    controller.close()  # the bad call left nothing behind
    with pytest.raises(TypeError):
        controller.add_close_callback(None)


@pytest.mark.parametrize("data", [b"{}", {"a": 1}, 1, None, ["x"]])
def test_enqueue_wrong_type(data):
    controller = StreamController(keepalive=LONG)
    with pytest.raises(TypeError) as excinfo:
        controller.enqueue(data)
    assert "str" in str(excinfo.value)
    # a bad call does not hurt the stream
    assert not controller.closed
    assert controller.enqueue(msg("ok"))
    controller.close(drain=True)
    assert ns(list(controller)) == ["ok"]


def test_repr_and_properties():
    controller = StreamController(maxsize=7, keepalive=LONG)
    assert controller.maxsize == 7
    assert "open" in repr(controller)
    controller.close()
    assert "closed" in repr(controller)


# -- priming, retry, overflow hook (resumable streams) ---------------------------


def test_primed_frames_come_first_and_do_not_count_against_maxsize():
    from session_manager.sse import encode_event

    controller = StreamController(maxsize=2, keepalive=0.05)
    controller.enqueue("queued")
    controller.prime([encode_event("", id="g00000000.0")] + [encode_event(f"r{i}") for i in range(100)])
    controller.close(drain=True)
    events = parse(controller)
    assert events[0].id == "g00000000.0" and events[0].data == ""
    assert [e.data for e in events[1:]] == [f"r{i}" for i in range(100)] + ["queued"]
    assert not controller.overflowed


def test_prime_after_reading_started_is_refused():
    controller = StreamController(keepalive=0.05)
    frames = iter(controller)
    controller.enqueue("x")
    next(frames)
    with pytest.raises(RuntimeError, match="before the stream is read"):
        controller.prime([b"data: late\n\n"])
    controller.close()


def test_a_stream_the_server_closes_ends_with_its_retry_hint():
    controller = StreamController(keepalive=0.05, retry=2500)
    frames = iter(controller)
    controller.enqueue("x")
    assert next(frames) == b"data: x\n\n"
    controller.close()
    assert list(frames) == [b"retry: 2500\n\n"]


def test_close_before_first_read_still_sends_the_priming_event():
    # Shutdown closes a POST stream whose client has not read its first byte:
    # the priming event (its id, the retry hint) must still reach the client,
    # or it has nothing to resume from. Queued frames are dropped as usual.
    on_close = Counter()
    controller = StreamController(keepalive=LONG, retry=2500, on_close=on_close)
    controller.prime([encode_event("", id="p00000000.0", retry=2500)])
    controller.enqueue(msg("queued"))
    controller.close()
    assert on_close.calls == 1  # released at once, as any stream closed before being read
    chunks = list(controller)  # neither blocks nor waits for a ping
    assert chunks == [b"id: p00000000.0\nretry: 2500\ndata: \n\n", b"retry: 2500\n\n"]
    events = parse(chunks)
    assert [(e.id, e.data) for e in events] == [("p00000000.0", "")]
    assert on_close.calls == 1


def test_close_before_first_read_still_sends_a_whole_replay():
    replay = [encode_event(f"r{i}", id=f"p00000000.{i}") for i in range(200)]  # several batches
    controller = StreamController(keepalive=LONG, retry=100)
    controller.prime(replay)
    controller.close()
    chunks = list(controller)
    assert b"".join(chunks) == b"".join(replay) + b"retry: 100\n\n"


def test_close_before_first_read_without_retry_sends_only_the_primed_frames():
    controller = StreamController(keepalive=LONG)
    controller.prime([b"id: x\ndata: \n\n"])
    controller.close()
    assert list(controller) == [b"id: x\ndata: \n\n"]


def test_close_while_a_replay_goes_out_stops_between_batches():
    # Closed after reading started: the reader stops promptly, mid-replay.
    controller = StreamController(keepalive=LONG, retry=100)
    controller.prime([encode_event(f"r{i}") for i in range(200)])
    frames = iter(controller)
    first = next(frames)
    controller.close()
    assert list(frames) == [b"retry: 100\n\n"]
    assert [e.data for e in parse([first])] == [f"r{i}" for i in range(64)]


def test_wsgi_close_before_first_read_ends_without_frames():
    # The WSGI server closing an unread body (client gone) is not a server
    # close to report: nothing is sent, the stream is released.
    on_close = Counter()
    controller = StreamController(keepalive=LONG, retry=100, on_close=on_close)
    controller.prime([b"id: x\ndata: \n\n"])
    frames = iter(controller)
    frames.close()
    assert controller.closed and on_close.calls == 1
    assert list(frames) == []


def test_on_overflow_runs_once_when_the_consumer_falls_behind():
    calls = []
    controller = StreamController(maxsize=2, on_overflow=lambda: calls.append(1))
    for i in range(5):
        controller.enqueue(str(i))
    assert calls == [1] and controller.overflowed and controller.closed


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_bad_retry_is_refused(bad):
    with pytest.raises(ValueError, match="retry"):
        StreamController(retry=bad)


def test_callbacks_run_when_the_server_closes_the_body_after_the_retry_hint():
    """A server that fails to write the last frame (the retry hint) closes the body instead of asking for more."""
    for finish in ("close", "del"):
        ran: list[int] = []
        controller = StreamController(retry=1000, on_close=lambda ran=ran: ran.append(1))
        frames = iter(controller)
        controller.enqueue("{}")
        assert next(frames) == b"data: {}\n\n"
        controller.close()
        assert next(frames) == b"retry: 1000\n\n"
        if finish == "close":
            frames.close()  # type: ignore[attr-defined]
        else:
            del frames
            gc.collect()
        assert ran == [1], finish
