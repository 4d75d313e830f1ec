"""McpBlueprint.close(): every stream ends at once with a retry hint, handlers are waited for, nothing is left.

Threads: the blueprint on a threaded werkzeug server in this process.
gevent: the same on gevent.pywsgi in a subprocess, stopped by SIGTERM,
which reports the greenlets and threads still alive after close().
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, SessionManagers
from session_manager.flask import McpBlueprint

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    PYTHON,
    RawStream,
    ServerProcess,
    TestHandler,
    ThreadedServer,
    free_port,
    initialize_message,
    wait_until,
)

TIMEOUT = 10.0
RETRY = 250
#: Seconds within which close() must have ended every stream.
PROMPT = 2.0


def post_block(port: int, sid: str) -> RawStream:
    message = {"jsonrpc": "2.0", "id": 9, "method": "test/block", "params": {"_meta": {"progressToken": "t"}}}
    headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH, "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
    return RawStream(port, "POST", "/mcp", headers, json.dumps(message).encode(), timeout=TIMEOUT)


def get_stream(port: int, sid: str) -> RawStream:
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
    return RawStream(port, "GET", "/mcp", headers, timeout=TIMEOUT)


def legacy_stream(port: int) -> RawStream:
    return RawStream(port, "GET", "/sse", {"Accept": "text/event-stream"}, timeout=TIMEOUT)


def initialize(port: int) -> str:
    response = requests.post(
        f"http://127.0.0.1:{port}/mcp",
        json=initialize_message(),
        headers={"Accept": ACCEPT_BOTH},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.headers["Mcp-Session-Id"]


def read_until(stream: RawStream, predicate: Any) -> None:
    """Read until *predicate(parser)* holds (or the body ends); bounded by the socket timeout."""
    if predicate(stream.parser):
        return
    for chunk in stream.chunks():
        stream.parser.feed(chunk)
        if predicate(stream.parser):
            return


def ends_with_retry(stream: RawStream) -> bytes:
    """Read the stream to its end; return its last frame, which must be the retry hint."""
    tail = b""
    for chunk in stream.chunks():
        stream.parser.feed(chunk)
        tail = (tail + chunk)[-200:]
    assert stream.body.done, "the stream did not end"
    assert stream.parser.retry == RETRY
    assert tail.endswith(f"retry: {RETRY}\n\n".encode()), tail
    return tail


def our_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("mcp-") and thread.is_alive()]


class Served:
    """McpBlueprint and its legacy blueprint on a threaded werkzeug server."""

    def __init__(self, managers: SessionManagers) -> None:
        self.handler = TestHandler()
        self.managers = managers
        self.bp = McpBlueprint(self.handler, managers=managers, retry=RETRY, keepalive=1.0)
        app = Flask(__name__)
        app.register_blueprint(self.bp)
        app.register_blueprint(self.bp.legacy_sse_blueprint())
        self.server = ThreadedServer(app)
        self.port = self.server.port

    def close(self) -> None:
        self.handler.release.set()
        self.bp.close(timeout=TIMEOUT)
        self.server.close()


def test_close_ends_every_stream_at_once_waits_for_handlers_and_leaves_nothing_running() -> None:
    served = Served(SessionManagers())  # no store: the retry field only comes with the close
    try:
        sid = initialize(served.port)
        get = get_stream(served.port, sid)
        wait_until(lambda: served.managers.streams.has(sid), what="the GET stream")
        legacy = legacy_stream(served.port)
        read_until(legacy, lambda parser: parser.events)  # the endpoint event
        post = post_block(served.port, sid)
        read_until(post, lambda parser: parser.events)  # progress 1: the handler is running
        assert our_threads() == ["mcp-test/block"]
        results: list[bool] = []
        closer = threading.Thread(target=lambda: results.append(served.bp.close(timeout=TIMEOUT)))
        started = time.monotonic()
        closer.start()
        for stream in (get, post, legacy):
            ends_with_retry(stream)
        assert time.monotonic() - started < PROMPT
        assert closer.is_alive(), "close() waits for the running handler"
        refused = requests.post(
            f"http://127.0.0.1:{served.port}/mcp", json=initialize_message(), headers={"Accept": ACCEPT_BOTH}, timeout=TIMEOUT
        )
        assert refused.status_code == 503 and refused.json()["error"]["message"].endswith("shutting down")
        served.handler.release.set()
        closer.join(TIMEOUT)
        assert results == [True]
        assert our_threads() == []
        assert len(served.managers.streams) == 0  # type: ignore[arg-type]
    finally:
        served.close()


def test_close_with_an_event_store_ends_streams_with_retry_after_their_ids() -> None:
    store = InMemoryEventStore()
    served = Served(SessionManagers(InMemoryStreamSessionManager(event_store=store)))
    try:
        sid = initialize(served.port)
        get = get_stream(served.port, sid)
        wait_until(lambda: served.managers.streams.has(sid), what="the GET stream")
        served.bp.notify(sid, "notifications/test", {"seq": 0})
        read_until(get, lambda parser: [event for event in parser.events if event.data])
        post = post_block(served.port, sid)
        read_until(post, lambda parser: [event for event in parser.events if event.data])
        served.handler.release.set()  # the handler ends during close(): its response may or may not make it
        assert served.bp.close(timeout=TIMEOUT) is True
        ends_with_retry(get)
        read_until(post, lambda parser: False)
        assert post.body.done and post.parser.retry == RETRY
        assert our_threads() == []
    finally:
        served.close()


def test_close_gives_up_on_a_handler_after_the_timeout() -> None:
    served = Served(SessionManagers())
    try:
        sid = initialize(served.port)
        post = post_block(served.port, sid)
        read_until(post, lambda parser: parser.events)
        started = time.monotonic()
        assert served.bp.close(timeout=0.2) is False
        assert time.monotonic() - started < PROMPT
        ends_with_retry(post)
        served.handler.release.set()
        wait_until(lambda: not our_threads(), what="the handler to finish once released")
        assert served.bp.close(timeout=0) is True  # idempotent
    finally:
        served.close()


# -- gevent ------------------------------------------------------------------------

CHILD = r"""
from gevent import monkey

monkey.patch_all()

import gc, json, signal, sys, threading

import gevent, gevent.event, greenlet
from flask import Flask
from gevent.pywsgi import WSGIServer

from examples.server import memory_managers
from session_manager.flask import McpBlueprint
from tests.flask_support import TestHandler

port, report, retry = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
handler = TestHandler()
bp = McpBlueprint(handler, managers=memory_managers(), retry=retry, keepalive=1.0)
app = Flask("child")
app.register_blueprint(bp)
app.register_blueprint(bp.legacy_sse_blueprint())
server = WSGIServer(("127.0.0.1", port), app, log=None)
server.start()
stop = gevent.event.Event()
gevent.signal_handler(signal.SIGTERM, stop.set)
stop.wait()
gevent.spawn_later(0.5, handler.release.set)  # the running tool call ends while close() waits
closed = bp.close(timeout=5)
server.stop(timeout=2)
hub = gevent.get_hub()


def alive():
    gc.collect()
    return [
    f"{type(g).__module__}.{type(g).__qualname__}: {g!r:.300}" for g in gc.get_objects()
    if isinstance(g, greenlet.greenlet) and not g.dead and g is not greenlet.getcurrent() and g is not hub
    and bool(g)  # started
    and g.parent is not None  # not the root greenlet of a native thread
    and type(g).__module__ != "gevent.threadpool"  # gevent's native worker threads (resolver, server internals)
    ]


# The server's connection greenlets end once the test closes its sockets (bounded wait).
for _ in range(50):
    if not alive():
        break
    gevent.sleep(0.1)
threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
with open(report, "w") as f:
    json.dump({"closed": closed, "greenlets": alive(), "threads": threads}, f)
"""


@pytest.mark.parametrize("server_module", ["gevent.pywsgi", "session_manager.pywsgi"])
def test_sigterm_under_gevent_closes_everything_and_leaves_no_greenlet(tmp_path: Path, server_module: str) -> None:
    port = free_port()
    report = tmp_path / "report.json"
    child_code = CHILD.replace("from gevent.pywsgi import WSGIServer", f"from {server_module} import WSGIServer")
    child = ServerProcess([PYTHON, "-c", child_code, str(port), str(report), str(RETRY)], port)
    try:
        sid = initialize(port)
        get = get_stream(port, sid)
        read_until(get, lambda parser: parser.last_event_id != "")  # primed: registered
        legacy = legacy_stream(port)
        read_until(legacy, lambda parser: parser.events)
        post = post_block(port, sid)
        read_until(post, lambda parser: [event for event in parser.events if event.data])
        started = time.monotonic()
        child.process.send_signal(signal.SIGTERM)
        for stream in (get, post, legacy):
            ends_with_retry(stream)
            stream.close()
        assert time.monotonic() - started < PROMPT
        assert child.process.wait(TIMEOUT) == 0, child.stderr()
        result: dict[str, Any | None] = json.loads(report.read_text())
        assert result == {"closed": True, "greenlets": [], "threads": []}, child.stderr()
    finally:
        child.close()
