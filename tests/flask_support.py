"""Helpers for the Flask transport tests (tests/test_flask_*.py).

Real servers only: a threaded werkzeug server in a thread of the test
process, or a gevent/gunicorn server in a subprocess. Streams are read over
raw sockets (HTTP/1.1 framing decoded here, SSE parsed by the independent
tests/sse_parser.py), so what is checked is what goes over the wire.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from session_manager import BackendUnavailableError, InMemoryInfoSessionManager, SessionManagers
from session_manager.flask import METHOD_NOT_FOUND, JsonRpcError, McpBlueprint, RequestContext
from session_manager.wsgi._session_ids import mint_session_id

from .sse_parser import Event, SSEParser

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ACCEPT_BOTH = "application/json, text/event-stream"
LATEST = "2025-11-25"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll *predicate* every 10 ms; fail the test if it stays false for *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


# -- a handler that records everything and offers test methods --------------


class TestHandler:
    """An MCP handler for transport tests: records what it sees, has test-only methods."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.seen: queue.Queue[tuple[dict[str, Any], RequestContext]] = queue.Queue()
        self.release = threading.Event()

    def messages(self) -> list[dict[str, Any]]:
        """Messages seen so far (drains the record)."""
        out = []
        while True:
            try:
                out.append(self.seen.get_nowait()[0])
            except queue.Empty:
                return out

    def __call__(self, message: dict[str, Any], ctx: RequestContext) -> Any:
        self.seen.put((message, ctx))
        method = message.get("method")
        params = message.get("params") or {}
        if method is None or "id" not in message:
            return None
        if method in ("initialize", "ping", "logging/setLevel", "resources/unsubscribe"):
            return {}
        if method == "resources/subscribe":
            if params.get("uri") == "reject://me":
                raise JsonRpcError(-32002, "Resource not found")
            return {}
        if method == "test/ctx":
            return {
                "session_id": ctx.session_id,
                "protocol_version": ctx.protocol_version,
                "client_info": ctx.client_info,
                "client_capabilities": ctx.client_capabilities,
                "log_level": ctx.log_level,
                "request_id": ctx.request_id,
                "method": ctx.method,
                "progress_token": ctx.progress_token,
            }
        if method == "test/emit":
            count = min(int(params.get("count", 3)), 100)
            sent = []
            for i in range(count):
                sent.append(ctx.notify("notifications/test", {"seq": i}))
                sent.append(ctx.progress(i + 1, count, f"step {i + 1}"))
                for level in params.get("log_levels", ()):
                    sent.append(ctx.log(level, {"seq": i, "level": level}, logger="test"))
            return {"sent": sent}
        if method == "test/block":
            ctx.progress(1, 2, "started")
            released = self.release.wait(20)
            ctx.progress(2, 2, "finished")
            return {"released": released}
        if method == "test/error":
            raise JsonRpcError(-32050, "custom failure", {"detail": 42})
        if method == "test/crash":
            raise RuntimeError("secret internal detail")
        if method == "test/not_dict":
            return ["not", "a", "dict"]
        if method == "test/not_json":
            return {"value": object()}
        raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")


class FlakyInfo(InMemoryInfoSessionManager):
    """An in-memory info manager that can be told to fail like an unreachable backend."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise BackendUnavailableError("backend down (test)")

    def get(self, session_id: str):  # type: ignore[override]
        self._check()
        return super().get(session_id)

    def exists(self, session_id: str) -> bool:
        self._check()
        return super().exists(session_id)

    def create(self, session_id: str, **kwargs: Any) -> None:
        self._check()
        super().create(session_id, **kwargs)


# -- servers -----------------------------------------------------------------


class ThreadedServer:
    """A threaded werkzeug server on 127.0.0.1:<free port>, run by a thread of this process."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Harness:
    """A live MCP endpoint: the blueprint, its managers and handler, and its server."""

    def __init__(self, handler: Any, managers: SessionManagers, blueprint: McpBlueprint, server: ThreadedServer):
        self.handler = handler
        self.managers = managers
        self.bp = blueprint
        self.server = server
        self.port = server.port
        self.url = f"http://127.0.0.1:{server.port}/mcp"
        self.http = requests.Session()
        self.streams: list[RawStream] = []

    # -- plain requests --

    def post(self, message: Any, sid: str | None = None, *, headers: dict[str, Any] | None = None, **kwargs: Any) -> requests.Response:
        """POST one message (any JSON value, raw bytes, or an iterator of chunks) with MCP headers.

        *headers* override the defaults; a ``None`` value removes a header.
        """
        merged: dict[str, Any] = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
        if sid is not None:
            merged["Mcp-Session-Id"] = sid
            merged["MCP-Protocol-Version"] = LATEST
        merged.update(headers or {})
        body = message if isinstance(message, (bytes, Iterator)) else json.dumps(message).encode()
        return self.http.post(self.url, data=body, headers=merged, timeout=10, **kwargs)

    def initialize(self, protocol_version: str = LATEST, **extra_headers: Any) -> str:
        """A new session; returns its id."""
        response = self.post(initialize_message(protocol_version), headers=extra_headers)
        assert response.status_code == 200, response.text
        return response.headers["Mcp-Session-Id"]

    def request(self, sid: str, method: str, params: dict[str, Any] | None = None, *, id: Any = 1) -> dict[str, Any]:
        """Send a request and return its JSON-RPC reply (the last event of the SSE answer)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            message["params"] = params
        response = self.post(message, sid)
        assert response.status_code == 200, response.text
        return reply_of(response)

    # -- streams --

    def open_stream(self, sid: str, *, headers: dict[str, str] | None = None, wait: bool = True) -> RawStream:
        """Open the session's GET stream; with *wait*, until it is registered."""
        merged = {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
        merged.update(headers or {})
        stream = RawStream(self.port, "GET", "/mcp", merged)
        self.streams.append(stream)
        if wait:
            assert stream.status == 200, stream.read_all()
            stream.start_reader()
            wait_until(lambda: self.managers.streams.has(sid), what="the stream to be registered")
        return stream

    def close(self) -> None:
        for stream in self.streams:
            stream.close()
        if isinstance(self.handler, TestHandler):
            self.handler.release.set()
        self.managers.close()
        self.server.close()
        self.http.close()


def initialize_message(protocol_version: str = LATEST, id: Any = 0) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": protocol_version,
            "capabilities": {"roots": {"listChanged": True}},
            "clientInfo": {"name": "flask-tests", "version": "1.0"},
        },
    }


def events_of(response: requests.Response) -> list[Event]:
    """The SSE events of a complete response body that carry a message.

    Priming events (an id with empty data, sent first on resumable streams)
    carry none and are skipped.
    """
    assert response.headers["Content-Type"] == "text/event-stream", response.headers
    parser = SSEParser()
    parser.feed(response.content)
    return [event for event in parser.events if event.data]


def reply_of(response: requests.Response) -> dict[str, Any]:
    """The JSON-RPC reply in a JSON or SSE response (the last SSE event)."""
    if response.headers["Content-Type"].startswith("application/json"):
        return response.json()
    events = events_of(response)
    assert events, response.content
    return json.loads(events[-1].data)


@pytest.fixture
def serve() -> Iterator[Callable[..., Harness]]:
    """Factory: ``serve(**blueprint_options)`` starts a live endpoint with a :class:`TestHandler`."""
    harnesses: list[Harness] = []

    def make(handler: Any = None, managers: SessionManagers | None = None, **options: Any) -> Harness:
        handler = TestHandler() if handler is None else handler
        managers = SessionManagers() if managers is None else managers
        options.setdefault("keepalive", 1.0)
        blueprint = McpBlueprint(handler, managers=managers, **options)
        app = Flask(__name__)
        app.register_blueprint(blueprint)
        harness = Harness(handler, managers, blueprint, ThreadedServer(app))
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.close()


# -- raw HTTP/1.1 over a socket ------------------------------------------------


class ChunkedDecoder:
    """Incremental decoder of an HTTP/1.1 chunked body."""

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = -1  # -1: expecting a size line; -2: expecting the CRLF after data
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = []
        while not self.done:
            if self._remaining == -1:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    break
                size = int(self._buffer[:end].split(b";")[0], 16)
                self._buffer = self._buffer[end + 2 :]
                if size == 0:
                    self.done = True
                else:
                    self._remaining = size
            elif self._remaining == -2:
                if len(self._buffer) < 2:
                    break
                assert self._buffer[:2] == b"\r\n", self._buffer[:20]
                self._buffer = self._buffer[2:]
                self._remaining = -1
            else:
                if not self._buffer:
                    break
                piece = self._buffer[: self._remaining]
                self._buffer = self._buffer[len(piece) :]
                out.append(piece)
                self._remaining -= len(piece)
                if self._remaining == 0:
                    self._remaining = -2
        return b"".join(out)


def build_request(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if (body or method in ("POST", "PUT", "PATCH")) and "content-length" not in {h.lower() for h in headers}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Head:
    """Status line and headers of an HTTP response, and how its body is framed."""

    def __init__(self, raw: bytes) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.header_list = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if line]
        self.headers = {name.lower(): value for name, value in self.header_list}
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self.length = int(length) if length is not None else None


class BodyReader:
    """Turns the bytes after the head into body bytes; ``done`` once the body is complete."""

    def __init__(self, head: Head) -> None:
        self._decoder = ChunkedDecoder() if head.chunked else None
        self._left = head.length
        self.done = head.length == 0

    def feed(self, data: bytes) -> bytes:
        if self._decoder is not None:
            body = self._decoder.feed(data)
            self.done = self._decoder.done
            return body
        if self._left is not None:
            body, self._left = data[: self._left], self._left - len(data[: self._left])
            self.done = self._left == 0
            return body
        return data


class RawStream:
    """One HTTP request on its own socket, the response body read incrementally.

    ``events`` is a queue of the SSE events that carry a message (priming events left out), filled by a reader thread
    (:meth:`start_reader`); :meth:`close` shuts the socket, ending the reader.
    """

    def __init__(self, port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"", timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(build_request(method, path, port, headers, body))
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"connection closed before the response head: {buffer!r}")
            buffer += data
        raw_head, rest = buffer.split(b"\r\n\r\n", 1)
        self.head = Head(raw_head)
        self.status = self.head.status
        self.headers = self.head.headers
        self.body = BodyReader(self.head)
        self.parser = SSEParser()
        self.events: queue.Queue[Event | None] = queue.Queue()
        self.ended = threading.Event()
        self._pending = self.body.feed(rest)
        self._thread: threading.Thread | None = None

    def chunks(self) -> Iterator[bytes]:
        """Body bytes as they arrive, until the body ends or the socket closes."""
        if self._pending:
            pending, self._pending = self._pending, b""
            yield pending
        while not self.body.done:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            body = self.body.feed(data)
            if body:
                yield body

    def read_all(self) -> bytes:
        return b"".join(self.chunks())

    def start_reader(self) -> None:
        self.sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for chunk in self.chunks():
                for event in self.parser.feed(chunk):
                    if event.data:  # priming events carry no message
                        self.events.put(event)
        finally:
            self.ended.set()
            self.events.put(None)

    def take(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The next *count* events' JSON data; fails the test if they do not come in time."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"expected {count} events, got {len(got)}: {got!r}")
            if event is None:
                pytest.fail(f"stream ended after {len(got)} of {count} events: {got!r}")
            got.append(json.loads(event.data))
        return got

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._thread is not None:
            self._thread.join(5)


# -- subprocess servers ----------------------------------------------------------


class ServerProcess:
    """A server command in a subprocess, ready once its port accepts connections."""

    def __init__(self, args: Sequence[str], port: int, *, timeout: float = 30.0) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.log = open(os.devnull, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(list(args), cwd=REPO, env=env, stdout=self.log, stderr=subprocess.PIPE)
        self._stderr: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.stderr()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"server not ready after {timeout}s: {self.stderr()}")
            time.sleep(0.05)

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")[-4000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


def new_token() -> str:
    """A random id of the minted shape that no server minted."""
    return mint_session_id()
