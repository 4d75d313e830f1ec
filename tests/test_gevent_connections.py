"""gevent.pywsgi connections, and session_manager.pywsgi's parked streams.

A GET stream's connection carries nothing after the stream: the transport
closes pywsgi's buffered reader (8 KB per open stream) when the stream
opens, and pywsgi then closes the connection once the stream ends. Requests
answered at once keep their connection for the next request. Both hold on
``gevent.pywsgi`` and on ``session_manager.pywsgi``, which writes open
streams from the event loop: there, a stream also pings while idle,
survives a reader slower than its sender (partial writes), and a client
that hangs up is noticed at once, not at the next ping.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    PYTHON,
    ChunkedDecoder,
    Head,
    ServerProcess,
    build_request,
    free_port,
    initialize_message,
    wait_until,
)
from .sse_parser import SSEParser

TIMEOUT = 10.0


def start(*options: str) -> ServerProcess:
    port = free_port()
    return ServerProcess([PYTHON, "-m", "tests.flask_gevent_server", "--port", str(port), *options], port)


def stop(process: ServerProcess) -> None:
    process.close()
    assert "Traceback" not in process.stderr(), process.stderr()


@pytest.fixture(scope="module", params=[[], ["--parking"]], ids=["pywsgi", "parking"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    process = start("--keepalive", "0.5", *request.param)
    yield process
    stop(process)


@pytest.fixture(scope="module")
def parking() -> Iterator[ServerProcess]:
    """session_manager.pywsgi with pings too rare to notice anything in a test: what ends a stream is the client."""
    process = start("--keepalive", "60", "--parking")
    yield process
    stop(process)


class Connection:
    """One HTTP/1.1 connection, read head by head."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""

    def send(self, method: str, headers: dict[str, str], body: bytes = b"") -> Head:
        self.sock.sendall(build_request(method, "/mcp", self.port, headers, body))
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return Head(raw)

    def body(self, length: int) -> bytes:
        while len(self.buffer) < length:
            self._read()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return data

    def chunks_to_end(self) -> bytes:
        """The rest of a chunked body, decoded; then what follows on the connection (b"" if it closed)."""
        decoder = ChunkedDecoder()
        body = decoder.feed(self.buffer)
        while not decoder.done:
            data = self.sock.recv(65536)
            assert data, "the connection closed before the stream's last chunk"
            body += decoder.feed(data)
        return body

    def closed_by_server(self) -> bool:
        """True if the server closed the connection (EOF) within the timeout."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False

    def _read(self) -> None:
        data = self.sock.recv(65536)
        assert data, "the connection closed before the response"
        self.buffer += data

    def close(self) -> None:
        self.sock.close()


def initialize(conn: Connection) -> str:
    body = json.dumps(initialize_message()).encode()
    head = conn.send("POST", {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}, body)
    assert head.status == 200 and head.length is not None, head.headers
    conn.body(head.length)
    return head.headers["mcp-session-id"]


def session_headers(sid: str) -> dict[str, str]:
    return {"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}


def test_requests_answered_at_once_keep_their_connection(server: ServerProcess) -> None:
    conn = Connection(server.port)
    try:
        first, second = initialize(conn), initialize(conn)  # the same connection, twice
        assert first != second
        ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
        head = conn.send(
            "POST", {**session_headers(first), "Content-Type": "application/json", "Accept": ACCEPT_BOTH}, ping
        )
        assert head.status == 200
    finally:
        conn.close()


def test_a_get_stream_ends_with_its_connection_and_keeps_working_until_then(server: ServerProcess) -> None:
    setup = Connection(server.port)
    sid = initialize(setup)
    stream = Connection(server.port)
    try:
        head = stream.send("GET", {**session_headers(sid), "Accept": "text/event-stream"})
        assert head.status == 200 and head.chunked, head.headers
        # The stream still delivers with its reader released: a ping, then DELETE ends it.
        stream.sock.settimeout(TIMEOUT)
        first = stream.sock.recv(65536)
        assert first, "no keep-alive ping on the open stream"
        stream.buffer = first
        gone = setup.send("DELETE", session_headers(sid))
        assert gone.status in (200, 204), gone.headers
        stream.chunks_to_end()
        assert stream.closed_by_server(), "the connection of an ended GET stream stays open"
    finally:
        setup.close()
        stream.close()


def open_stream(port: int, rcvbuf: int | None = None) -> tuple[Connection, Connection, str]:
    """A session and its GET stream (on a socket with *rcvbuf*, if given): (setup, stream, session id)."""
    setup = Connection(port)
    sid = initialize(setup)
    stream = Connection.__new__(Connection)
    stream.port, stream.buffer = port, b""
    stream.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    stream.sock.settimeout(TIMEOUT)
    stream.sock.connect(("127.0.0.1", port))
    head = stream.send("GET", {**session_headers(sid), "Accept": "text/event-stream"})
    assert head.status == 200 and head.chunked and head.headers["content-type"] == "text/event-stream", head.headers
    return setup, stream, sid


class Events:
    """The decoded SSE events of a stream, as they are read (the stream's leftover head bytes first)."""

    def __init__(self, stream: Connection) -> None:
        self.sock = stream.sock
        self.decoder = ChunkedDecoder()
        self.parser = SSEParser()
        self.pings = 0
        self.pending: list[Any] = []
        self.feed(stream.buffer)

    def feed(self, data: bytes) -> None:
        body = self.decoder.feed(data)
        self.pings += body.count(b": ping\n")
        self.pending += self.parser.feed(body)

    def next_data(self, count: int, pause: float = 0.0) -> list[dict[str, object]]:
        """The next *count* events with data, reading 16 KB at a time with *pause* seconds between reads."""
        got: list[dict[str, object]] = []
        while len(got) < count:
            while self.pending and len(got) < count:
                event = self.pending.pop(0)
                if event.data:
                    got.append(json.loads(event.data))
            if len(got) < count:
                data = self.sock.recv(16384)
                assert data, f"the stream ended after {len(got)} of {count} events"
                self.feed(data)
                time.sleep(pause)
        return got


def broadcast(server: ServerProcess, count: int, pad: int = 150) -> None:
    url = f"http://127.0.0.1:{server.port}/admin/broadcast?count={count}&pad={pad}"
    assert requests.post(url, timeout=TIMEOUT).json() == {"sent": count}


def open_streams(server: ServerProcess) -> int:
    return int(requests.get(f"http://127.0.0.1:{server.port}/admin/streams", timeout=TIMEOUT).json()["open"])


def test_an_idle_stream_pings_and_then_delivers_in_order(server: ServerProcess) -> None:
    setup, stream, _ = open_stream(server.port)
    try:
        events = Events(stream)
        while events.pings < 2:  # keep-alive 0.5 s: two pings in about a second (the socket's timeout: 10 s)
            events.feed(stream.sock.recv(4096))
        broadcast(server, 50)
        assert [m["params"]["seq"] for m in events.next_data(50)] == list(range(50))  # type: ignore[index]
    finally:
        setup.close()
        stream.close()


def test_a_reader_slower_than_its_sender_gets_every_frame_once_in_order(server: ServerProcess) -> None:
    # 1,000 frames of 4 KB sent at once, to a socket with a small receive buffer read 16 KB at a time:
    # the server's writes find the socket full and finish later (on the parking server, in a greenlet).
    setup, stream, _ = open_stream(server.port, rcvbuf=8192)
    try:
        events = Events(stream)
        broadcast(server, 1000, pad=4096)
        got = events.next_data(1000, pause=0.0005)
        assert [m["params"]["seq"] for m in got] == list(range(1000))  # type: ignore[index]
        assert open_streams(server) >= 1
    finally:
        setup.close()
        stream.close()


def test_a_client_that_hangs_up_is_unregistered_without_waiting_for_a_ping(parking: ServerProcess) -> None:
    setup, stream, _ = open_stream(parking.port)
    try:
        wait_until(lambda: open_streams(parking) == 1, timeout=TIMEOUT, what="the stream to be registered")
        stream.close()  # pings come every 60 s: only the socket's read side can tell
        wait_until(lambda: open_streams(parking) == 0, timeout=TIMEOUT, what="the hung-up stream to be unregistered")
        # The server goes on: a new stream works.
        setup2, stream2, _ = open_stream(parking.port)
        events = Events(stream2)
        broadcast(parking, 3)
        assert [m["params"]["seq"] for m in events.next_data(3)] == [0, 1, 2]  # type: ignore[index]
        setup2.close()
        stream2.close()
    finally:
        setup.close()
        stream.close()


def test_thousands_of_frames_to_many_parked_streams_while_clients_come_and_go(parking: ServerProcess) -> None:
    # Readers on threads; a third of them hang up in the middle of the broadcasts: the others get everything.
    pairs = [open_stream(parking.port) for _ in range(30)]
    readers = [Events(stream) for _, stream, _ in pairs]
    results: dict[int, list[int]] = {}

    def read(index: int) -> None:
        results[index] = [m["params"]["seq"] for m in readers[index].next_data(600)]  # type: ignore[index]

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(30) if i % 3]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(3):
            broadcast(parking, 200, pad=1000)
            if round_ == 0:
                for index in range(0, 30, 3):
                    pairs[index][1].close()
        for thread in threads:
            thread.join(TIMEOUT * 3)
        assert sorted(results) == [i for i in range(30) if i % 3]
        assert all(seqs == [*range(200), *range(200), *range(200)] for seqs in results.values())
        wait_until(lambda: open_streams(parking) == 20, timeout=TIMEOUT, what="the hung-up streams to be unregistered")
    finally:
        for setup, stream, _ in pairs:
            setup.close()
            stream.close()


def test_stopping_the_parking_server_cuts_the_streams_still_open_and_runs_their_close_callbacks() -> None:
    # The app is not closed first: stop(0.5) cuts the streams (no retry hint), and each one still ends
    # for both sides: its client sees the end, its registration (a close callback) is gone. (gevent.pywsgi
    # without a pool leaves its handlers running on stop(): their streams end with the process.)
    process = start("--keepalive", "60", "--parking")
    pairs = []
    try:
        pairs = [open_stream(process.port) for _ in range(3)]
        wait_until(lambda: open_streams(process) == 3, timeout=TIMEOUT, what="the streams to be registered")
        process.process.terminate()  # SIGTERM: the server's stop(0.5)
        for _, stream, _ in pairs:
            stream.sock.settimeout(TIMEOUT)
            with contextlib.suppress(ConnectionResetError):
                while stream.sock.recv(65536):  # what was sent, then the end (EOF or a reset)
                    pass
        assert process.process.wait(TIMEOUT) == 0
        assert "after stop: 0 streams registered" in process.stderr(), process.stderr()
    finally:
        for setup, stream, _ in pairs:
            setup.close()
            stream.close()
        stop(process)


@pytest.mark.parametrize("options", [[], ["--parking"]], ids=["pywsgi", "parking"])
def test_a_middleware_that_wraps_a_stream_sees_every_chunk_and_closes_it(options: list[str]) -> None:
    # The parking server serves a stream whose body a middleware wrapped as gevent.pywsgi does
    # (PEP 3333: the middleware's iterator is iterated and closed), instead of parking around it.
    process = start("--keepalive", "0.5", "--middleware", *options)
    try:
        setup, stream, _ = open_stream(process.port)
        events = Events(stream)
        broadcast(process, 3)
        assert [m["params"]["seq"] for m in events.next_data(3)] == [0, 1, 2]  # type: ignore[index]
        url = f"http://127.0.0.1:{process.port}/admin/middleware"
        assert requests.get(url, timeout=TIMEOUT).json()["chunks"] >= 2  # the head's comment, then the events
        setup.close()
        stream.close()
        wait_until(  # the next ping fails: the server closes the body it was given, the middleware's
            lambda: requests.get(url, timeout=TIMEOUT).json()["closed"] == 1, timeout=TIMEOUT, what="close()"
        )
        assert open_streams(process) == 0
    finally:
        stop(process)


def test_a_get_stream_whose_body_has_not_all_arrived_is_served_as_gevent_pywsgi_serves_it(parking: ServerProcess) -> None:
    # pywsgi still reads the rest of that body after the response: the stream is not parked (its socket
    # would have two readers), it is served by its greenlet, and nothing fails.
    setup = Connection(parking.port)
    sid = initialize(setup)
    stream = Connection(parking.port)
    try:
        headers = {**session_headers(sid), "Accept": "text/event-stream", "Content-Length": "10"}
        stream.sock.sendall(build_request("GET", "/mcp", parking.port, headers) + b"abc")  # 3 of 10 bytes
        while b"\r\n\r\n" not in stream.buffer:
            stream._read()
        raw, stream.buffer = stream.buffer.split(b"\r\n\r\n", 1)
        assert Head(raw).status == 200
        stream.sock.sendall(b"defghij")  # the rest of the body
        events = Events(stream)
        broadcast(parking, 2)
        assert [m["params"]["seq"] for m in events.next_data(2)] == [0, 1]  # type: ignore[index]
    finally:
        setup.close()
        stream.close()
