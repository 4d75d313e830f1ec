"""Resumable Streamable HTTP: connections cut for real, streams resumed with Last-Event-ID.

Real servers on 127.0.0.1 (threaded werkzeug in this process), real clients
(raw sockets, the official ``mcp`` client through a proxy that cuts TCP
connections), SSE parsed by the independent tests/sse_parser.py.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import requests
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from examples.server import create_app, memory_managers
from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, SessionManagers
from session_manager.events import get_stream_id

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    BodyReader,
    Harness,
    Head,
    RawStream,
    TestHandler,
    ThreadedServer,
    events_of,
    initialize_message,
    serve,  # noqa: F401 - fixture
    wait_until,
)
from .sse_parser import Event, SSEParser

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

#: Seconds any one read or wait may take.
TIMEOUT = 10.0
RETRY = 100


def stored(max_events: int = 4000, **options: Any) -> SessionManagers:
    return SessionManagers(InMemoryStreamSessionManager(event_store=InMemoryEventStore(max_events, **options)))


def get(h: Harness, sid: str, last_event_id: str | None = None) -> RawStream:
    """A GET stream of the session on its own socket (head read), optionally resuming."""
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return RawStream(h.port, "GET", "/mcp", headers, timeout=TIMEOUT)


def get_response(h: Harness, sid: str, last_event_id: str) -> requests.Response:
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
    return requests.get(h.url, headers={**headers, "Last-Event-ID": last_event_id}, timeout=TIMEOUT)


def read(stream: RawStream, enough: Callable[[list[Event]], bool]) -> list[Event]:
    """Message events (priming events left out) until *enough* holds or the body ends; bounded by the socket timeout."""
    got: list[Event] = []
    if enough(got):
        return got
    for chunk in stream.chunks():
        got.extend(event for event in stream.parser.feed(chunk) if event.data)
        if enough(got):
            break
    return got


def seqs(events: list[Event]) -> list[int]:
    return [json.loads(event.data)["params"]["seq"] for event in events]


def position(event_id: str) -> int:
    return int(event_id.split(".")[1])


def burst(bp: Any, sid: str, count: int, size: int = 0) -> None:
    """*count* numbered notifications to the session, paced a little so a cut lands in the middle."""
    pad = "x" * size
    for seq in range(count):
        bp.notify(sid, "notifications/test", {"seq": seq, "pad": pad} if pad else {"seq": seq})
        if seq % 20 == 19:
            time.sleep(0.002)


# -- (a) a GET stream cut in the middle of a burst -----------------------------------


def test_a_get_stream_cut_mid_burst_resumes_every_notification_exactly_once(serve) -> None:  # noqa: F811
    h = serve(managers=stored(), retry=RETRY)
    sid = h.initialize()
    first = get(h, sid)
    assert first.status == 200
    wait_until(lambda: h.managers.streams.has(sid), what="the stream to be registered")
    sender = threading.Thread(target=burst, args=(h.bp, sid, 1000), daemon=True)
    sender.start()
    before = read(first, lambda got: len(got) >= 300)
    assert len(before) >= 300
    first.close()  # the client's TCP connection is gone; the server may not have noticed yet
    assert sender.is_alive(), "the burst should still be going when the connection is cut"
    second = get(h, sid, last_event_id=before[-1].id)  # takes the stream over: no 409
    assert second.status == 200, second.read_all()
    after = read(second, lambda got: len(before) + len(got) >= 1000)
    sender.join(TIMEOUT)
    second.close()
    assert seqs(before) + seqs(after) == list(range(1000))
    ids = [event.id for event in before + after]
    assert all(event_id and event_id.startswith(get_stream_id(sid) + ".") for event_id in ids)
    assert [position(i) for i in ids] == sorted({position(i) for i in ids})  # unique, increasing


def test_a_resume_replaces_a_stream_the_server_still_holds(serve) -> None:  # noqa: F811
    """A reconnecting client whose dead stream was not noticed gets its stream, not 409."""
    h = serve(managers=stored(), retry=RETRY)
    sid = h.initialize()
    first = get(h, sid)
    primed = read(first, lambda got: first.parser.last_event_id != "")
    assert primed == [] and first.parser.last_event_id.startswith("g")
    assert get(h, sid).status == 409  # a second stream without Last-Event-ID is still a conflict
    h.bp.notify(sid, "notifications/test", {"seq": 0})
    second = get(h, sid, last_event_id=first.parser.last_event_id)
    assert second.status == 200
    assert seqs(read(second, lambda got: len(got) >= 1)) == [0]
    assert seqs(read(first, lambda got: False)) in ([], [0])  # the replaced connection ends
    assert first.body.done
    h.bp.notify(sid, "notifications/test", {"seq": 1})
    assert seqs(read(second, lambda got: len(got) >= 1)) == [1]
    first.close()
    second.close()


# -- (b) a POST stream cut before the tool finishes -----------------------------------


def post_block(h: Harness, sid: str) -> RawStream:
    message = {"jsonrpc": "2.0", "id": 5, "method": "test/block", "params": {"_meta": {"progressToken": "tok"}}}
    headers = {
        "Content-Type": "application/json",
        "Accept": ACCEPT_BOTH,
        "Mcp-Session-Id": sid,
        "MCP-Protocol-Version": LATEST,
    }
    return RawStream(h.port, "POST", "/mcp", headers, json.dumps(message).encode(), timeout=TIMEOUT)


def handler_running(name: str) -> bool:
    return any(thread.name == name and thread.is_alive() for thread in threading.enumerate())


@pytest.mark.parametrize("handler_state", ["running", "finished"])
@pytest.mark.parametrize("cut_after", ["priming", "progress"])
def test_b_post_response_is_recovered_with_get_and_last_event_id(serve, handler_state: str, cut_after: str) -> None:  # noqa: F811
    handler = TestHandler()
    h = serve(handler, managers=stored(), retry=RETRY)
    sid = h.initialize()
    post = post_block(h, sid)
    assert post.status == 200
    if cut_after == "priming":
        read(post, lambda got: bool(post.parser.events))
        priming = post.parser.events[0]
        assert priming.data == "" and post.parser.retry == RETRY
        last_id, expected_progress = priming.id, [1, 2]
    else:
        last_id, expected_progress = read(post, lambda got: len(got) >= 1)[-1].id, [2]
    assert last_id and last_id.startswith("p")
    post.close()  # cut: the handler keeps running (a dropped connection is not a cancellation)
    assert handler_running("mcp-test/block")
    if handler_state == "finished":
        handler.release.set()
        wait_until(lambda: not handler_running("mcp-test/block"), what="the handler to finish")
    resumed = get(h, sid, last_event_id=last_id)
    assert resumed.status == 200, resumed.read_all()
    handler.release.set()  # the running handler answers on the resumed connection, live
    events = read(resumed, lambda got: False)  # until the body ends: after the response
    messages = [json.loads(event.data) for event in events]
    assert [m["params"]["progress"] for m in messages[:-1]] == expected_progress
    assert messages[-1] == {"jsonrpc": "2.0", "id": 5, "result": {"released": True}}
    assert all(event.id.startswith(last_id.split(".")[0] + ".") for event in events)
    if handler_state == "finished":
        assert resumed.parser.retry == RETRY  # a replay-only answer says when to poll again
    resumed.close()


def test_a_running_tool_call_keeps_its_session_alive_past_session_ttl(serve) -> None:  # noqa: F811
    """In memory: idle expiry spares a session whose request is still being handled, then takes it."""
    from session_manager import InMemoryInfoSessionManager

    ttl = 0.3
    handler = TestHandler()
    managers = SessionManagers(
        InMemoryStreamSessionManager(event_store=InMemoryEventStore(100)),
        InMemoryInfoSessionManager(session_ttl=ttl),
    )
    h = serve(handler, managers=managers, retry=RETRY)
    sid = h.initialize()
    post = post_block(h, sid)
    assert post.status == 200
    read(post, lambda got: len(got) >= 1)
    time.sleep(ttl * 2)
    key = next(iter(managers.info._sessions))
    assert managers.info.expire() == [] and managers.info.exists(key)
    handler.release.set()
    assert json.loads(read(post, lambda got: False)[-1].data)["result"] == {"released": True}
    wait_until(lambda: not handler_running("mcp-test/block"), what="the handler to finish")
    wait_until(lambda: key not in managers.info._sessions, what="the idle session to expire (the background sweep)")
    assert h.post({"jsonrpc": "2.0", "id": 9, "method": "ping"}, sid).status_code == 404
    post.close()


def test_b_answers_sent_at_once_over_sse_are_primed_and_resumable(serve) -> None:  # noqa: F811
    """initialize's answer (and an immediate error) starts with a priming event; its id recovers the reply."""
    h = serve(TestHandler(), managers=stored(), retry=RETRY)
    response = h.post(initialize_message())
    sid = response.headers["Mcp-Session-Id"]
    parser = SSEParser()
    parser.feed(response.content)
    priming, answer = parser.events
    assert priming.data == "" and priming.id.startswith("p") and parser.retry == RETRY
    assert answer.id.startswith(priming.id.split(".")[0] + ".") and json.loads(answer.data)["result"]["serverInfo"]
    replayed = get_response(h, sid, priming.id)
    assert [json.loads(event.data) for event in events_of(replayed)] == [json.loads(answer.data)]
    bad = h.post({"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel", "params": {"level": "loud"}}, sid)
    parser = SSEParser()
    parser.feed(bad.content)
    assert parser.events[0].data == "" and json.loads(parser.events[1].data)["error"]["code"] == -32602


def test_b_resuming_a_finished_post_twice_replays_the_same_events(serve) -> None:  # noqa: F811
    handler = TestHandler()
    handler.release.set()
    h = serve(handler, managers=stored(), retry=RETRY)
    sid = h.initialize()
    post = post_block(h, sid)
    events = read(post, lambda got: False)
    priming = post.parser.events[0]
    assert priming.data == "" and post.parser.retry == RETRY
    post.close()
    first_id = priming.id  # the id the stream was primed with: everything after it
    for _ in range(2):
        response = get_response(h, sid, first_id)
        assert response.status_code == 200
        parser = SSEParser()
        parser.feed(response.content)
        assert [(e.id, e.data) for e in parser.events if e.data] == [(e.id, e.data) for e in events]
        assert parser.retry == RETRY


class CutProxy:
    """A TCP proxy to 127.0.0.1:*port* whose connections :meth:`cut` shuts at once."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream), timeout=TIMEOUT)
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            for source, target in ((client, server), (server, client)):
                thread = threading.Thread(target=self._pump, args=(source, target), daemon=True)
                self._threads.append(thread)
                thread.start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        """Shut every open connection (both sides); return how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        return len(pairs)

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self.listener.close()
        for thread in self._threads:
            thread.join(TIMEOUT)


def test_b_the_official_client_resumes_a_cut_tool_call_by_itself() -> None:
    """The mcp client reconnects with Last-Event-ID; every progress step arrives once, then the result."""
    managers = memory_managers()
    app = create_app(managers, keepalive=0.5, retry=RETRY)
    server = ThreadedServer(app)
    proxy = CutProxy(server.port)
    progress: list[float] = []
    cuts: list[int] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)
        if value == 3 and not cuts:
            cuts.append(proxy.cut())  # mid-call: the POST stream and the GET stream both drop

    async def scenario() -> Any:
        async with (
            streamable_http_client(proxy.url) as (read_stream, write_stream),
            ClientSession(read_stream, write_stream) as session,
        ):
            await session.initialize()
            return await session.call_tool("slow_count", {"n": 10, "delay": 0.1}, progress_callback=on_progress)

    async def bounded() -> Any:
        with anyio.fail_after(30):
            return await scenario()

    try:
        result = anyio.run(bounded)
    finally:
        proxy.close()
        app.blueprints["mcp"].close(timeout=TIMEOUT)
        server.close()
    assert cuts and cuts[0] >= 1
    assert result.content[0].text == "counted to 10"
    assert progress == list(range(1, 11))


# -- (c) a client that stops reading ------------------------------------------------------


def slow_get(port: int, sid: str) -> socket.socket:
    """A GET stream whose client reads the head, then stops reading (a small receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    request = (
        f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        f"Mcp-Session-Id: {sid}\r\nMCP-Protocol-Version: {LATEST}\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


def drain_cut_client(sock: socket.socket) -> tuple[Event, list[Event]]:
    """What a client that stopped reading still gets once the server shut its socket: the kernel's buffer, then the end.

    Returns the stream's priming event and its message events (complete ones only).
    """
    body, deadline = b"", time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        body += data
    assert time.monotonic() < deadline, "the slow client was not disconnected"
    sock.close()
    raw_head, _, rest = body.partition(b"\r\n\r\n")
    head = Head(raw_head)
    assert head.status == 200
    parser = SSEParser()
    parser.feed(BodyReader(head).feed(rest))
    priming = parser.events[0]
    assert priming.data == "" and priming.id
    return priming, [event for event in parser.events if event.data]


class CountingReader(threading.Thread):
    """Reads a stream to the end, keeping only the seq numbers (not 10 MB of events)."""

    def __init__(self, stream: RawStream, count: int) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.count = count
        self.seqs: list[int] = []

    def run(self) -> None:
        for chunk in self.stream.chunks():
            events = self.stream.parser.feed(chunk)
            self.stream.parser.events.clear()
            self.seqs.extend(json.loads(event.data)["params"]["seq"] for event in events if event.data)
            if len(self.seqs) >= self.count:
                return


@pytest.mark.parametrize("max_events", [12_000, 1000], ids=["buffer-holds-the-rest", "buffer-lost-it"])
def test_c_a_client_that_stops_reading_is_cut_within_the_bound(serve, max_events: int) -> None:  # noqa: F811
    count, maxsize = 10_000, 256
    store = InMemoryEventStore(max_events, max_bytes=1 << 30)  # the event count is the bound under test
    h = serve(managers=SessionManagers(InMemoryStreamSessionManager(event_store=store)), stream_maxsize=maxsize, retry=RETRY)
    good_sid, slow_sid = h.initialize(), h.initialize()
    good = get(h, good_sid)
    good_reader = CountingReader(good, count)
    good_reader.start()
    slow = slow_get(h.port, slow_sid)
    wait_until(lambda: h.managers.streams.has(good_sid) and h.managers.streams.has(slow_sid), what="both streams")
    streams: dict[str, Any] = h.managers.streams._streams  # test-only look at the controllers' queues
    slow_controller = streams[slow_sid]
    peak = 0
    for seq in range(count):
        h.bp.send([good_sid, slow_sid], json.dumps({"jsonrpc": "2.0", "method": "notifications/test", "params": {"seq": seq, "pad": "x" * 1000}}))
        peak = max(peak, slow_controller._queue.qsize())
        if seq % 50 == 49:  # the good reader keeps up (never maxsize behind): only the slow one falls behind
            wait_until(lambda seq=seq: len(good_reader.seqs) >= seq - 100, what="the good reader")
    # Memory bound: the slow stream never queued more than stream_maxsize frames...
    assert peak <= maxsize + 1
    assert slow_controller.overflowed and not h.managers.streams.has(slow_sid)
    good_reader.join(TIMEOUT)
    assert good_reader.seqs == list(range(count))  # the well-behaved client got everything
    assert not good_reader.stream.parser.events  # (it keeps only numbers)
    priming, got = drain_cut_client(slow)  # the slow client was disconnected
    received = [json.loads(event.data)["params"]["seq"] for event in got]
    assert received == list(range(len(received))) and len(received) < count
    # ...and the store keeps at most max_events per stream: a resume from before that is gone.
    from_start = get(h, slow_sid, last_event_id=priming.id)
    assert from_start.status == (410 if count > max_events else 200)
    from_start.close()
    last_id = got[-1].id if got else priming.id
    missed = count - len(received)
    stream = get(h, slow_sid, last_event_id=last_id)
    if missed > max_events:  # what it missed left the buffer
        assert stream.status == 410
        assert "no longer stored" in json.loads(stream.read_all())["error"]["message"]
        stream.close()
        return
    assert stream.status == 200
    reader = CountingReader(stream, missed)
    reader.run()
    stream.close()
    assert received + reader.seqs == list(range(count))


# -- (d) answers to bad ids ----------------------------------------------------------------


def assert_json_rpc_error(response: requests.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == code
    return body["error"]


@pytest.mark.parametrize("bad", ["garbage", "g1234.1", "x00000000.1", "g00000000.", "g00000000.1\x7f", "p" + "0" * 70])
def test_d_malformed_last_event_id_is_400(serve, bad: str) -> None:  # noqa: F811
    h = serve(managers=stored())
    sid = h.initialize()
    error = assert_json_rpc_error(get_response(h, sid, bad), 400, -32600)
    assert "Last-Event-ID" in error["message"]


def test_d_unknown_expired_and_foreign_ids_are_410(serve) -> None:  # noqa: F811
    h = serve(managers=stored(max_events=5), retry=RETRY)
    sid, other = h.initialize(), h.initialize()
    gid = get_stream_id(sid)
    for unknown in (f"{gid}.99999999", "p00000000.0"):  # not issued / never opened
        error = assert_json_rpc_error(get_response(h, sid, unknown), 410, -32600)
        assert "new stream without Last-Event-ID" in error["message"]
    stream = get(h, sid)
    read(stream, lambda got: stream.parser.last_event_id != "")
    for seq in range(20):
        h.bp.notify(sid, "notifications/test", {"seq": seq})
    got = read(stream, lambda got: len(got) >= 20)
    stream.close()
    error = assert_json_rpc_error(get_response(h, sid, got[0].id), 410, -32600)
    assert "no longer stored" in error["message"]
    recent = get(h, sid, last_event_id=got[-2].id)  # still in the buffer: resumes
    assert recent.status == 200
    assert seqs(read(recent, lambda got: len(got) >= 1)) == [19]
    recent.close()
    # another session's ids name no stream of this one
    other_stream = get(h, other)
    read(other_stream, lambda got: other_stream.parser.last_event_id != "")
    h.bp.notify(other, "notifications/test", {"seq": 0})
    foreign = read(other_stream, lambda got: len(got) >= 1)[0].id
    other_stream.close()
    error = assert_json_rpc_error(get_response(h, sid, foreign), 410, -32600)
    assert "unknown" in error["message"]


def test_d_without_a_store_last_event_id_is_ignored(serve) -> None:  # noqa: F811
    h = serve(retry=RETRY)
    sid = h.initialize()
    stream = get(h, sid, last_event_id="garbage")
    assert stream.status == 200
    wait_until(lambda: h.managers.streams.has(sid), what="the stream to be registered")
    h.bp.notify(sid, "notifications/test", {"seq": 0})
    events = read(stream, lambda got: len(got) >= 1)
    assert seqs(events) == [0] and events[0].id is None  # no ids: at-most-once delivery
    stream.close()


# -- (a) across gunicorn workers, events in Redis -------------------------------------------


def test_a_redis_get_stream_cut_mid_burst_resumes_on_another_worker(redis_server: Any) -> None:
    """Three gevent workers, events in Redis: the stream is resumed on another worker, exactly once, in order."""
    from session_manager.redis import RedisEventStore, RedisStreamSessionManager

    from .gunicorn_support import WORKER_HEADER, Gunicorn, Pinned

    cluster = Gunicorn(redis_server.url)  # tests/gunicorn_app.py: the example, whose Redis managers store events
    sender_view = RedisStreamSessionManager(redis_server.url, event_store=RedisEventStore(redis_server.url))
    streams: list[RawStream] = []
    try:
        worker = Pinned(cluster.url)
        sid = worker.initialize()
        worker.close()
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
        first = RawStream(cluster.port, "GET", "/mcp", headers, timeout=TIMEOUT)
        streams.append(first)
        assert first.status == 200
        holder = int(first.headers[WORKER_HEADER.lower()])
        read(first, lambda got: first.parser.last_event_id != "")  # primed: registered

        def send_burst() -> None:
            for seq in range(1000):
                sender_view.send([sid], json.dumps({"jsonrpc": "2.0", "method": "notifications/test", "params": {"seq": seq}}))
                if seq % 20 == 19:
                    time.sleep(0.002)

        sender = threading.Thread(target=send_burst, daemon=True)
        sender.start()
        before = read(first, lambda got: len(got) >= 300)
        assert len(before) >= 300
        first.close()  # cut
        # Resume until a connection lands on another worker (each try replays from the same id).
        for _ in range(30):
            second = RawStream(cluster.port, "GET", "/mcp", {**headers, "Last-Event-ID": before[-1].id}, timeout=TIMEOUT)
            streams.append(second)
            assert second.status == 200, second.read_all()
            if int(second.headers[WORKER_HEADER.lower()]) != holder:
                break
            second.close()
        else:
            pytest.fail("no resume reached another worker in 30 tries")
        after = read(second, lambda got: len(before) + len(got) >= 1000)
        sender.join(TIMEOUT)
        assert seqs(before) + seqs(after) == list(range(1000))
        ids = [event.id for event in before + after]
        assert len(set(ids)) == 1000 and all(event_id.startswith(get_stream_id(sid) + ".") for event_id in ids)
    finally:
        for stream in streams:
            stream.close()
        sender_view.close()
        cluster.close()
    assert "Traceback" not in cluster.stderr(), cluster.stderr()


def test_b_redis_post_stream_cut_is_followed_to_its_response_from_another_worker(redis_server: Any) -> None:
    """A tool call cut on one worker, resumed on another: the replay, then the log followed until the response."""
    from .gunicorn_support import WORKER_HEADER, Gunicorn, Pinned

    cluster = Gunicorn(redis_server.url)
    streams: list[RawStream] = []
    try:
        worker = Pinned(cluster.url)
        sid = worker.initialize()
        worker.close()
        headers = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
        call = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "slow_count", "arguments": {"n": 6, "delay": 0.2}, "_meta": {"progressToken": "p"}},
        }
        post = RawStream(
            cluster.port, "POST", "/mcp", {**headers, "Content-Type": "application/json", "Accept": ACCEPT_BOTH},
            json.dumps(call).encode(), timeout=TIMEOUT,
        )
        streams.append(post)
        assert post.status == 200
        handler_worker = int(post.headers[WORKER_HEADER.lower()])
        messages = [json.loads(event.data) for event in read(post, lambda got: len(got) >= 1)]
        last_id = post.parser.events[-1].id
        post.close()  # cut after the first progress notification
        polls, deadline = 0, time.monotonic() + 20
        while not any(message.get("id") == 3 for message in messages):
            assert time.monotonic() < deadline, messages
            resume = {**headers, "Accept": "text/event-stream", "Last-Event-ID": last_id}
            for _ in range(30):  # a connection to a worker that does not run the handler
                resumed = RawStream(cluster.port, "GET", "/mcp", resume, timeout=TIMEOUT)
                streams.append(resumed)
                assert resumed.status == 200, resumed.read_all()
                if int(resumed.headers[WORKER_HEADER.lower()]) != handler_worker:
                    break
                resumed.close()  # (there it would take the stream over; a later replay has what it got)
            else:
                pytest.fail("no resume reached another worker in 30 tries")
            events = read(resumed, lambda got: False)  # the replay, then the end
            assert resumed.body.done and resumed.parser.retry == 1000  # poll again after retry
            resumed.close()
            polls += 1
            messages += [json.loads(event.data) for event in events]
            if events:
                last_id = events[-1].id
            time.sleep(0.1)
        progress = [message["params"]["progress"] for message in messages if message.get("method") == "notifications/progress"]
        assert progress == [1, 2, 3, 4, 5, 6]  # every step once, in order, whichever worker replayed it
        assert messages[-1]["result"]["content"][0]["text"] == "counted to 6"
        assert polls == 1  # the other worker followed the stream's log until the response: no second poll
    finally:
        for stream in streams:
            stream.close()
        cluster.close()
    assert "Traceback" not in cluster.stderr(), cluster.stderr()


# -- (c) under gevent.pywsgi --------------------------------------------------------------------

GEVENT_CHILD = r"""
from gevent import monkey

monkey.patch_all()

import sys

import gevent
from flask import Flask, jsonify, request
from gevent.pywsgi import WSGIServer

from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, SessionManagers
from session_manager.flask import McpBlueprint
from tests.flask_support import TestHandler

port, maxsize, max_events = (int(arg) for arg in sys.argv[1:4])
streams = InMemoryStreamSessionManager(event_store=InMemoryEventStore(max_events, max_bytes=1 << 30))
bp = McpBlueprint(TestHandler(), managers=SessionManagers(streams), stream_maxsize=maxsize, retry=100)
app = Flask("child")
app.register_blueprint(bp)


@app.post("/admin/send")
def send():
    sids, count, size = request.args["sids"].split(","), int(request.args["count"]), int(request.args["size"])
    for seq in range(count):
        bp.send(sids, '{"jsonrpc":"2.0","method":"notifications/test","params":{"seq":%d,"pad":"%s"}}' % (seq, "x" * size))
        if seq % 50 == 49:
            gevent.sleep(0.01)  # the writers run; a client that reads keeps up
    return jsonify(dropped=streams.slow_consumers_dropped, open=[streams.has(sid) for sid in sids])


WSGIServer(("127.0.0.1", port), app, log=None).serve_forever()
"""


@pytest.mark.parametrize("server_module", ["gevent.pywsgi", "session_manager.pywsgi"])
def test_c_under_gevent_a_client_that_stops_reading_is_cut_and_resumes(tmp_path: Any, server_module: str) -> None:
    """gevent.pywsgi (the socket found through wsgi.input and shut) and session_manager.pywsgi (a parked
    stream): the slow client is cut and resumes from the buffer."""
    from .flask_support import PYTHON, ServerProcess, free_port, initialize_message

    count, maxsize = 10_000, 1024  # the default bound: slack for the good client's pure-Python parser
    port = free_port()
    code = GEVENT_CHILD.replace("from gevent.pywsgi import WSGIServer", f"from {server_module} import WSGIServer")
    child = ServerProcess([PYTHON, "-c", code, str(port), str(maxsize), str(12_000)], port)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        sids = [
            requests.post(url, json=initialize_message(), headers={"Accept": ACCEPT_BOTH}, timeout=TIMEOUT).headers["Mcp-Session-Id"]
            for _ in range(2)
        ]
        good_sid, slow_sid = sids
        headers = {"Accept": "text/event-stream", "Mcp-Session-Id": good_sid, "MCP-Protocol-Version": LATEST}
        good = RawStream(port, "GET", "/mcp", headers, timeout=TIMEOUT)
        good_reader = CountingReader(good, count)
        good_reader.start()
        slow = slow_get(port, slow_sid)
        time.sleep(0.2)  # both streams registered (the slow one's head is not even read)
        sent = requests.post(
            f"http://127.0.0.1:{port}/admin/send", params={"sids": ",".join(sids), "count": count, "size": 1000}, timeout=60
        ).json()
        assert sent == {"dropped": 1, "open": [True, False]}  # only the slow stream overflowed
        good_reader.join(TIMEOUT)
        assert good_reader.seqs == list(range(count))
        priming, got = drain_cut_client(slow)  # the server shut the slow client's socket
        received = [json.loads(event.data)["params"]["seq"] for event in got]
        assert received == list(range(len(received))) and len(received) < count
        last_id = got[-1].id if got else priming.id
        resumed = RawStream(port, "GET", "/mcp", {**headers, "Mcp-Session-Id": slow_sid, "Last-Event-ID": last_id}, timeout=TIMEOUT)
        assert resumed.status == 200
        reader = CountingReader(resumed, count - len(received))
        reader.run()
        resumed.close()
        good.close()
        assert received + reader.seqs == list(range(count))
    finally:
        child.close()
