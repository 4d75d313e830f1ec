"""gevent.pywsgi connections: a long-lived stream releases its request reader, a request/response keeps alive.

A GET stream's connection carries nothing after the stream: the transport
closes pywsgi's buffered reader (8 KB per open stream) when the stream
opens, and pywsgi then closes the connection once the stream ends. Requests
answered at once keep their connection for the next request.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

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
)

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    port = free_port()
    process = ServerProcess([PYTHON, "-m", "tests.flask_gevent_server", "--port", str(port), "--keepalive", "0.5"], port)
    yield process
    process.close()
    assert "Traceback" not in process.stderr(), process.stderr()


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
