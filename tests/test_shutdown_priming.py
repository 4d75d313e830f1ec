"""Shutdown before a POST stream's first byte: its client still gets the priming event and the retry hint.

``close()`` ends every tracked stream at once. A POST stream whose handler
is running but whose response the server has not started writing yet is
closed before it is read; its priming event (the event id the client
resumes from, with ``retry``) must still go out, then the stream ends.

Over HTTP: McpApp on a threaded werkzeug server, behind a middleware that
holds the response body of a marked request until the test lets it go, so
the shutdown lands between "the app answered" and "the server read the
first chunk". Over WSGI: the same with McpBlueprint, its Flask app called
directly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client, EnvironBuilder

from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, SessionManagers
from session_manager.flask import McpBlueprint
from session_manager.wsgi import McpApp

from .flask_support import ACCEPT_BOTH, LATEST, RawStream, TestHandler, ThreadedServer, initialize_message, wait_until
from .sse_parser import SSEParser

TIMEOUT = 10.0
RETRY = 250
HOLD_HEADER = "X-Test-Hold-Body"
BLOCK = {"jsonrpc": "2.0", "id": 9, "method": "test/block", "params": {"_meta": {"progressToken": "t"}}}


class HoldBody:
    """WSGI middleware: the body of a request carrying HOLD_HEADER is handed to the server only once ``go`` is set."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.held = threading.Event()
        self.go = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = self.app(environ, start_response)
        if "HTTP_" + HOLD_HEADER.upper().replace("-", "_") in environ:
            self.held.set()
            assert self.go.wait(TIMEOUT), "the test never released the body"
        return body


def block_headers(sid: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Accept": ACCEPT_BOTH,
        "Mcp-Session-Id": sid,
        "MCP-Protocol-Version": LATEST,
    }


def initialize(client: Client) -> str:
    response = client.post(
        "/mcp",
        data=json.dumps(initialize_message()),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    return str(response.headers["Mcp-Session-Id"])


def handler_running(handler: TestHandler) -> bool:
    return any(message.get("method") == "test/block" for message in handler.messages())


def shut_down(app: McpApp, results: list[bool]) -> threading.Thread:
    """Start app.close() (it waits for the blocked handler); return once it has ended the streams."""
    closer = threading.Thread(target=lambda: results.append(app.close(timeout=TIMEOUT)), daemon=True)
    closer.start()
    # A stream closed before it is read is released (forgotten by the app) at once.
    wait_until(lambda: not app._lifecycle._controllers, what="close() to end the POST stream")
    assert closer.is_alive(), "close() waits for the running handler"
    return closer


def assert_resumable_after(store: InMemoryEventStore, key: str, parser: SSEParser) -> None:
    """The primed id resumes the stream: what the handler sent after it is all stored."""
    replay = store.replay(key, parser.last_event_id)
    messages = [json.loads(message) for _, message in replay.events]
    assert [m.get("params", {}).get("progress") for m in messages[:-1]] == [1, 2]
    assert messages[-1] == {"jsonrpc": "2.0", "id": 9, "result": {"released": True}}


def test_shutdown_before_the_server_reads_a_post_stream_still_sends_its_priming_event() -> None:
    store = InMemoryEventStore()
    handler = TestHandler()
    app = McpApp(handler, managers=SessionManagers(InMemoryStreamSessionManager(event_store=store)), retry=RETRY)
    gate = HoldBody(app)
    server = ThreadedServer(gate)  # type: ignore[arg-type]  # any WSGI app
    streams: list[RawStream] = []
    try:
        sid = initialize(Client(app))
        headers = {**block_headers(sid), HOLD_HEADER: "1"}
        client = threading.Thread(
            target=lambda: streams.append(
                RawStream(server.port, "POST", "/mcp", headers, json.dumps(BLOCK).encode(), timeout=TIMEOUT)
            ),
            daemon=True,
        )
        client.start()
        assert gate.held.wait(TIMEOUT), "the POST was not answered"
        wait_until(lambda: handler_running(handler), what="the handler to run")
        results: list[bool] = []
        closer = shut_down(app, results)
        gate.go.set()  # only now does the server read the body
        client.join(TIMEOUT)
        (post,) = streams
        assert post.status == 200 and post.headers["content-type"].startswith("text/event-stream")
        for chunk in post.chunks():
            post.parser.feed(chunk)
        assert post.body.done, "the stream did not end"
        assert post.parser.last_event_id.startswith("p"), "no priming event: nothing to resume from"
        assert post.parser.retry == RETRY
        # The priming event only: queued messages are dropped, they come back on resume.
        assert [(e.id, e.data) for e in post.parser.events] == [(post.parser.last_event_id, "")]
        handler.release.set()
        closer.join(TIMEOUT)
        assert results == [True]
        assert_resumable_after(store, sid, post.parser)
    finally:
        handler.release.set()
        gate.go.set()
        for stream in streams:
            stream.close()
        app.close(timeout=TIMEOUT)
        server.close()


@pytest.mark.parametrize("with_store", [True, False], ids=["event-store", "no-store"])
def test_blueprint_close_before_the_first_read_ends_a_post_stream_with_its_primed_frames(with_store: bool) -> None:
    store = InMemoryEventStore()
    handler = TestHandler()
    managers = SessionManagers(InMemoryStreamSessionManager(event_store=store)) if with_store else SessionManagers()
    bp = McpBlueprint(handler, managers=managers, retry=RETRY)
    flask_app = Flask(__name__)
    flask_app.register_blueprint(bp)
    try:
        sid = initialize(Client(flask_app))
        environ = EnvironBuilder(
            path="/mcp", method="POST", data=json.dumps(BLOCK), headers=block_headers(sid)
        ).get_environ()
        status: list[str] = []
        body = flask_app(environ, lambda s, h, e=None: status.append(s))
        assert status == ["200 OK"]
        wait_until(lambda: handler_running(handler), what="the handler to run")
        results: list[bool] = []
        closer = shut_down(bp.transport, results)
        try:
            chunks = list(body)  # the server reads the response only now
        finally:
            getattr(body, "close", lambda: None)()
        parser = SSEParser()
        for chunk in chunks:
            parser.feed(chunk)
        assert chunks[-1] == f"retry: {RETRY}\n\n".encode()
        if with_store:
            assert parser.last_event_id.startswith("p"), "no priming event: nothing to resume from"
            assert [(e.id, e.data) for e in parser.events] == [(parser.last_event_id, "")]  # nothing else
        else:
            assert chunks == [f"retry: {RETRY}\n\n".encode()]  # no store: nothing to prime, nothing to resume
        handler.release.set()
        closer.join(TIMEOUT)
        assert results == [True]
        if with_store:
            assert_resumable_after(store, sid, parser)
    finally:
        handler.release.set()
        bp.close(timeout=TIMEOUT)
