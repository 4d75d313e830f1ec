"""Helpers for the legacy HTTP+SSE transport tests (tests/test_flask_legacy_sse.py).

A raw legacy client (the stream read over a socket by tests/flask_support.py's
:class:`RawStream`, POSTs with requests), a handler with tools for the
official client, and the app serving both transports on one set of managers.
Run as ``python -m tests.legacy_support --port N --redis URL --prefix P``
it serves that app under gevent.pywsgi with Redis managers (the
multi-process tests).
"""

from __future__ import annotations

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import argparse
import json
import queue
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from flask import Flask

from session_manager import SessionManagers
from session_manager.flask import LegacySseBlueprint, McpBlueprint, RequestContext

from .flask_support import RawStream, TestHandler, ThreadedServer
from .sse_parser import Event

TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "count", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
]


class ToolHandler(TestHandler):
    """TestHandler plus ``tools/list`` and ``tools/call`` (``echo``; ``count`` reports progress and logs)."""

    __test__ = False

    def __call__(self, message: dict[str, Any], ctx: RequestContext) -> Any:
        method = message.get("method")
        params = message.get("params") or {}
        if method == "tools/list" and "id" in message:
            self.seen.put((message, ctx))
            return {"tools": TOOLS}
        if method == "tools/call" and "id" in message:
            self.seen.put((message, ctx))
            args = params.get("arguments") or {}
            if params.get("name") == "count":
                n = int(args.get("n", 3))
                for i in range(1, n + 1):
                    ctx.progress(i, n, f"{i} of {n}")
                    ctx.log("info", {"count": i}, logger="count")
                return {"content": [{"type": "text", "text": f"counted to {n}"}]}
            return {"content": [{"type": "text", "text": str(args.get("text", ""))}]}
        return super().__call__(message, ctx)


def create_app(
    handler: Any, managers: SessionManagers, *, legacy_prefix: str | None = None, **options: Any
) -> tuple[Flask, McpBlueprint, LegacySseBlueprint]:
    """Streamable HTTP at ``/mcp`` and the legacy transport at ``<legacy_prefix>/sse``, one set of managers."""
    mcp = McpBlueprint(handler, managers=managers, **options)
    legacy = mcp.legacy_sse_blueprint(url_prefix=legacy_prefix)
    app = Flask(__name__)
    app.register_blueprint(mcp)
    app.register_blueprint(legacy)
    return app, mcp, legacy


class LegacyClient:
    """A raw client of the legacy transport: the stream on a socket, POSTs to the ``endpoint`` URL.

    *post_port* sends the POSTs to another server than the stream's (same path).
    """

    def __init__(self, port: int, path: str = "/sse", *, headers: dict[str, str] | None = None, post_port: int | None = None) -> None:
        self.port = port
        self.post_port = port if post_port is None else post_port
        self.stream = RawStream(port, "GET", path, {"Accept": "text/event-stream", **(headers or {})})
        assert self.stream.status == 200, self.stream.read_all()
        self.stream.start_reader()
        first = self.event()
        assert first.event == "endpoint", first
        self.endpoint = first.data
        self.sid = parse_qs(urlparse(self.endpoint).query)["sessionId"][0]
        self.http = requests.Session()
        #: Messages read from the stream while waiting for a reply.
        self.pushed: list[dict[str, Any]] = []

    @property
    def post_url(self) -> str:
        return f"http://127.0.0.1:{self.post_port}{self.endpoint}"

    def event(self, timeout: float = 10.0) -> Event:
        """The next SSE event; fails the test if none comes in time or the stream ends."""
        try:
            event = self.stream.events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no SSE event within {timeout}s")
        if event is None:
            pytest.fail("the stream ended")
        return event

    def message(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message event's JSON-RPC message."""
        event = self.event(timeout)
        assert event.event == "message", event
        return json.loads(event.data)

    def post(
        self,
        message: Any,
        *,
        headers: dict[str, Any] | None = None,
        url: str | None = None,
        via: requests.Session | None = None,
    ) -> requests.Response:
        """POST one message (JSON value or raw bytes); *via* another HTTP session (e.g. one pinned to a worker)."""
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        merged = {"Content-Type": "application/json", **(headers or {})}
        return (via or self.http).post(url or self.post_url, data=body, headers=merged, timeout=10)

    def reply_to(self, id: Any, timeout: float = 10.0) -> dict[str, Any]:
        """Read the stream until the response to *id*; what came before is appended to :attr:`pushed`."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.message(max(0.01, deadline - time.monotonic()))
            if "method" not in message and message.get("id") == id:
                return message
            self.pushed.append(message)

    def request(
        self, method: str, params: dict[str, Any] | None = None, *, id: Any = 1, via: requests.Session | None = None
    ) -> dict[str, Any]:
        """POST a request (202 expected) and return its reply from the stream."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            message["params"] = params
        response = self.post(message, via=via)
        assert response.status_code == 202, response.text
        assert response.text == "Accepted"
        return self.reply_to(id)

    def initialize(self, protocol_version: str = "2024-11-05", *, via: requests.Session | None = None) -> dict[str, Any]:
        reply = self.request(
            "initialize",
            {
                "protocolVersion": protocol_version,
                "capabilities": {"roots": {"listChanged": True}},
                "clientInfo": {"name": "legacy-tests", "version": "1.0"},
            },
            id="init",
            via=via,
        )
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, via=via).status_code == 202
        return reply

    def close(self) -> None:
        self.stream.close()
        self.http.close()


class LegacyServer:
    """Both transports on a threaded werkzeug server, a ToolHandler and in-process managers."""

    def __init__(self, managers: SessionManagers | None = None, handler: Any = None, **options: Any) -> None:
        self.handler = ToolHandler() if handler is None else handler
        self.managers = SessionManagers() if managers is None else managers
        options.setdefault("keepalive", 0.2)
        self.app, self.mcp, self.legacy = create_app(self.handler, self.managers, **options)
        self.server = ThreadedServer(self.app)
        self.port = self.server.port
        self.clients: list[LegacyClient] = []

    @property
    def sse_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sse"

    @property
    def mcp_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def connect(self, path: str = "/sse", **kwargs: Any) -> LegacyClient:
        """A raw client; its stream is registered (the ``endpoint`` event is only sent after that)."""
        client = LegacyClient(self.port, path, **kwargs)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.handler.release.set()
        self.managers.close()
        self.server.close()


def main() -> None:
    """Serve :func:`create_app` with Redis managers under gevent.pywsgi (one process of a multi-process test)."""
    from gevent.pywsgi import WSGIServer

    from session_manager.redis import RedisInfoSessionManager, RedisStreamSessionManager

    from .conftest_redis import TEST_HEARTBEAT, TEST_LIVENESS_TTL

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    managers = SessionManagers(
        RedisStreamSessionManager(
            args.redis, prefix=args.prefix, liveness_ttl=TEST_LIVENESS_TTL, heartbeat_interval=TEST_HEARTBEAT
        ),
        RedisInfoSessionManager(args.redis, prefix=args.prefix),
    )
    app, mcp, _ = create_app(ToolHandler(), managers, keepalive=0.2)

    @app.post("/admin/broadcast")
    def broadcast() -> str:
        mcp.tools_list_changed()
        return "sent"

    WSGIServer(("127.0.0.1", args.port), app, log=None).serve_forever()


if __name__ == "__main__":
    main()
