"""Helpers for tests/test_stateless.py: the stateless era (MCP 2026-07-28) on real servers.

- :func:`modern_request` / :func:`modern_headers`: a request with its
  per-request ``_meta`` and the HTTP headers that mirror it.
- :class:`StatelessHandler`: tools, prompts and resources that ask the
  client through ``ctx.request`` (multi round-trip requests), report
  progress and logs, or wait for cancellation; it counts how often each
  tool was entered and records what the handler saw of cancellation.
- :class:`Endpoint`: raw HTTP to one MCP URL, modern headers by default.
- Servers: :class:`ThreadedServer` (tests/flask_support.py) around an
  ``McpApp`` in the test process; ``python -m tests.stateless_support
  --port N`` (gevent.pywsgi, in memory) and :func:`gunicorn_app` (for
  ``gunicorn -k gevent``, Redis managers from ``MCP_REDIS_URL``) in
  subprocesses. In a subprocess the handler appends what it saw of a
  cancellation to the file named by ``STATELESS_REPORT``.
"""

if __name__ == "__main__":
    # Only when run as the gevent.pywsgi server: patch before anything else is imported.
    from gevent import monkey

    monkey.patch_all()

import argparse
import contextlib
import json
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import requests

from session_manager import SessionManagers
from session_manager.wsgi import INVALID_PARAMS, METHOD_NOT_FOUND, JsonRpcError, McpApp, RequestContext

from .flask_support import ACCEPT_BOTH, RawStream, ThreadedServer, events_of
from .sse_parser import Event, SSEParser

MODERN = "2026-07-28"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
#: Capabilities a client that can answer every input request declares.
ALL_CAPABILITIES: dict[str, Any] = {"elicitation": {}, "sampling": {}, "roots": {}}
#: What :class:`StatelessHandler`'s transports announce.
SERVER_INFO = {"name": "stateless-tests", "version": "9.9"}
CAPABILITIES = {"tools": {}, "prompts": {}, "resources": {}, "logging": {}}
INSTRUCTIONS = "Use the tools wisely."
#: Environment variable naming the file a subprocess handler reports cancellations to.
REPORT_ENV = "STATELESS_REPORT"
WORKER_HEADER = "X-Worker-Pid"
#: Seconds the cancellation tool waits at most.
CANCEL_WAIT = 10.0

_PARAMS_NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


# -- requests -------------------------------------------------------------------


def modern_meta(
    capabilities: dict[str, Any] | None = None,
    *,
    client_info: bool = True,
    log_level: str | None = None,
    progress_token: str | int | None = None,
) -> dict[str, Any]:
    """The ``_meta`` of a stateless request."""
    meta: dict[str, Any] = {META_VERSION: MODERN, META_CAPABILITIES: {} if capabilities is None else capabilities}
    if client_info:
        meta[META_CLIENT_INFO] = {"name": "stateless-tests", "version": "1.0"}
    if log_level is not None:
        meta[META_LOG_LEVEL] = log_level
    if progress_token is not None:
        meta["progressToken"] = progress_token
    return meta


def modern_request(
    method: str,
    params: dict[str, Any] | None = None,
    *,
    id: Any = 1,
    meta: dict[str, Any] | None = None,
    **meta_options: Any,
) -> dict[str, Any]:
    """A stateless JSON-RPC request: *params* plus ``_meta`` (*meta*, else :func:`modern_meta` of *meta_options*)."""
    body = dict(params or {})
    body["_meta"] = modern_meta(**meta_options) if meta is None else meta
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": body}


def tool_call(
    name: str, arguments: dict[str, Any] | None = None, *, id: Any = 1, **meta_options: Any
) -> dict[str, Any]:
    return modern_request("tools/call", {"name": name, "arguments": arguments or {}}, id=id, **meta_options)


def retry_of(
    message: dict[str, Any], responses: dict[str, Any] | None, state: Any, *, id: Any = None
) -> dict[str, Any]:
    """*message* again (a new id), with ``inputResponses`` and ``requestState`` (left out when ``None``)."""
    again = json.loads(json.dumps(message))
    again["id"] = (message["id"] + 1000) if id is None else id
    if responses is not None:
        again["params"]["inputResponses"] = responses
    if state is not None:
        again["params"]["requestState"] = state
    return again


def modern_headers(message: dict[str, Any]) -> dict[str, str]:
    """The HTTP headers that mirror a modern message: protocol version, method, name."""
    params = message.get("params") or {}
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(META_VERSION, MODERN) if isinstance(meta, dict) else MODERN
    headers = {"MCP-Protocol-Version": str(version), "Mcp-Method": str(message.get("method"))}
    field = _PARAMS_NAMED_BY.get(str(message.get("method")))
    if field is not None and isinstance(params, dict) and isinstance(params.get(field), str):
        headers["Mcp-Name"] = params[field]
    return headers


def elicit_result(**content: Any) -> dict[str, Any]:
    return {"action": "accept", "content": content}


SAMPLE_RESULT = {"role": "assistant", "content": {"type": "text", "text": "drafted"}, "model": "test-model"}
ROOTS_RESULT = {"roots": [{"uri": "file:///tmp/project", "name": "project"}]}


# -- the handler ------------------------------------------------------------------


def _text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


def _form(message: str) -> dict[str, Any]:
    return {
        "mode": "form",
        "message": message,
        "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    }


_SCHEMA = {"type": "object"}
TOOLS = [
    {"name": name, "description": f"test tool {name}", "inputSchema": _SCHEMA}
    for name in ("echo", "ctx", "ask", "multi_round", "ask_all", "sample", "progress_log", "wait_cancel")
]
PROMPTS = [{"name": "ask_prompt", "description": "asks the client first"}]
RESOURCES = [{"uri": "test://static", "name": "static", "mimeType": "text/plain"}]
TEMPLATES = [{"uriTemplate": "test://items/{id}", "name": "item"}]
#: A resource whose read sets its own cache hints.
OWN_CACHE_URI = "test://own-cache"
OWN_TTL_MS, OWN_SCOPE = 4321, "public"


class StatelessHandler:
    """An MCP handler for the stateless tests; ``entries`` counts handler entries by ``"method:name"``."""

    def __init__(self, report: str | None = None) -> None:
        self.entries: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.notifications: queue.Queue[tuple[str, RequestContext]] = queue.Queue()
        #: What the cancellation tool saw, by its ``tag``: ``("started"|"cancelled"|"not cancelled", seconds)``.
        self.cancel_reports: queue.Queue[tuple[str, str, float]] = queue.Queue()
        self._report = report

    def count(self, key: str) -> int:
        with self._lock:
            return self.entries[key]

    def __call__(self, message: dict[str, Any], ctx: RequestContext) -> dict[str, Any] | None:
        method = message.get("method")
        params = message.get("params") or {}
        if "id" not in message:
            self.notifications.put((str(method), ctx))
            return None
        name = params.get("name") or params.get("uri") or ""
        with self._lock:
            self.entries[f"{method}:{name}"] += 1
        if method in ("initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"):
            return {}  # the session era's; the stateless era must refuse them before they get here
        if method == "tools/list":
            if params.get("cursor") == "ask":  # not an input method: ctx.request must fail
                ctx.request("elicitation/create", _form("who?"))
            return {"tools": TOOLS}
        if method == "tools/call":
            return self.call(str(name), params.get("arguments") or {}, ctx)
        if method == "prompts/list":
            return {"prompts": PROMPTS}
        if method == "prompts/get":
            answer = ctx.request("elicitation/create", _form("Which style?"), key="style")
            style = (answer.get("content") or {}).get("name", "?")
            return {"messages": [{"role": "user", "content": {"type": "text", "text": f"Write it {style}."}}]}
        if method == "resources/list":
            return {"resources": RESOURCES}
        if method == "resources/templates/list":
            return {"resourceTemplates": TEMPLATES}
        if method == "resources/read":
            uri = params.get("uri")
            if uri == OWN_CACHE_URI:
                return {"contents": [{"uri": uri, "text": "own"}], "ttlMs": OWN_TTL_MS, "cacheScope": OWN_SCOPE}
            if uri == "test://ask":
                answer = ctx.request("roots/list", None, key="roots")
                return {"contents": [{"uri": uri, "text": json.dumps(answer)}]}
            if uri == "test://static":
                return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": "static"}]}
            raise JsonRpcError(INVALID_PARAMS, "Resource not found", {"uri": uri})
        raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    def call(self, name: str, arguments: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        if name in ("echo", "\u00e9cho"):
            return _text(str(arguments.get("text", "")))
        if name == "ctx":
            seen = {
                "stateless": ctx.stateless,
                "session_id": ctx.session_id,
                "protocol_version": ctx.protocol_version,
                "client_info": ctx.client_info,
                "client_capabilities": ctx.client_capabilities,
                "log_level": ctx.log_level,
                "request_id": ctx.request_id,
                "progress_token": ctx.progress_token,
            }
            return {**_text(json.dumps(seen)), "structuredContent": seen}
        if name == "ask":
            answer = ctx.request("elicitation/create", _form("What is your name?"), key="user_name")
            return _text(f"hello {(answer.get('content') or {}).get('name')}")
        if name == "multi_round":
            first = ctx.request("elicitation/create", _form("Step 1?"), key="step1")
            second = ctx.request("elicitation/create", _form(f"Step 2 after {first['content']['name']}?"), key="step2")
            return _text(f"{first['content']['name']}+{second['content']['name']}")
        if name == "ask_all":
            answers = ctx.request_all(
                {
                    "who": ("elicitation/create", _form("Who?")),
                    "draft": ("sampling/createMessage", {"messages": [], "maxTokens": 10}),
                    "roots": ("roots/list", None),
                }
            )
            return _text(json.dumps(answers, sort_keys=True))
        if name == "sample":
            result = ctx.request("sampling/createMessage", {"messages": [], "maxTokens": 10}, key="draft")
            return _text(str((result.get("content") or {}).get("text")))
        if name == "progress_log":
            sent: dict[str, list[bool]] = {"progress": [], "log": []}
            for step in range(1, 4):
                sent["progress"].append(ctx.progress(step, 3, f"step {step}"))
                for level in ("debug", "info", "warning", "error"):
                    sent["log"].append(ctx.log(level, {"step": step, "level": level}, logger="progress_log"))
            return {**_text("done"), "structuredContent": sent}
        if name == "wait_cancel":
            limit = min(float(arguments.get("limit", CANCEL_WAIT)), CANCEL_WAIT)
            return self.wait_cancel(str(arguments.get("tag", "")), limit, ctx)
        raise JsonRpcError(INVALID_PARAMS, f"Unknown tool: {name}")

    def wait_cancel(self, tag: str, limit: float, ctx: RequestContext) -> dict[str, Any]:
        """Report progress once, then wait (up to *limit* seconds) for the client to give up."""
        started = time.monotonic()
        self._note(tag, "started", 0.0)
        ctx.progress(1, 2, "waiting")
        while not ctx.wait_cancelled(0.05):
            if time.monotonic() - started > limit:
                break
        outcome = "cancelled" if ctx.cancelled else "not cancelled"
        self._note(tag, outcome, time.monotonic() - started)
        return _text(outcome)

    def _note(self, tag: str, what: str, seconds: float) -> None:
        self.cancel_reports.put((tag, what, seconds))
        if self._report:
            with open(self._report, "a") as report:
                report.write(json.dumps([tag, what, seconds, os.getpid()]) + "\n")


def read_report(path: str) -> list[tuple[str, str, float, int]]:
    """What subprocess handlers appended to the report file so far."""
    with contextlib.suppress(FileNotFoundError), open(path) as report:
        return [tuple(json.loads(line)) for line in report if line.strip()]  # type: ignore[misc]
    return []


def app_options(**options: Any) -> dict[str, Any]:
    """The options of the test transports: :data:`SERVER_INFO`, :data:`CAPABILITIES`, fast keepalive..."""
    options.setdefault("server_info", SERVER_INFO)
    options.setdefault("capabilities", CAPABILITIES)
    options.setdefault("instructions", INSTRUCTIONS)
    options.setdefault("keepalive", 0.5)
    return options


# -- raw HTTP -------------------------------------------------------------------------


class Endpoint:
    """Raw HTTP to one MCP URL; a POST gets the modern headers of its message unless told otherwise."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = int(url.split(":")[2].split("/")[0])
        self.http = requests.Session()

    def post(
        self, message: Any, *, headers: dict[str, str | None] | None = None, accept: str = ACCEPT_BOTH, **kwargs: Any
    ) -> requests.Response:
        """POST *message* (JSON, or bytes as is); *headers* override the defaults, ``None`` removes one."""
        merged: dict[str, str | None] = {"Content-Type": "application/json", "Accept": accept}
        if isinstance(message, dict):
            merged.update(modern_headers(message))
        merged.update(headers or {})
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        sent = {name: value for name, value in merged.items() if value is not None}
        return self.http.post(self.url, data=body, headers=sent, timeout=15, **kwargs)

    def call(self, message: Any, **kwargs: Any) -> tuple[requests.Response, dict[str, Any]]:
        """POST *message*; the response and its JSON-RPC reply (JSON body, or the last SSE event)."""
        response = self.post(message, **kwargs)
        return response, reply(response)

    def result(self, message: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The result of a request that must succeed (200)."""
        response, answer = self.call(message, **kwargs)
        assert response.status_code == 200, (response.status_code, response.text)
        assert "result" in answer, answer
        return answer["result"]

    def open(self, message: dict[str, Any], headers: dict[str, str] | None = None) -> RawStream:
        """POST *message* on a socket of its own; the SSE answer read as it comes (``take``)."""
        merged = {
            "Content-Type": "application/json",
            "Accept": ACCEPT_BOTH,
            **modern_headers(message),
            **(headers or {}),
        }
        stream = RawStream(self.port, "POST", "/mcp", merged, json.dumps(message).encode())
        assert stream.status == 200, stream.read_all()
        stream.start_reader()
        return stream

    def close(self) -> None:
        self.http.close()


def reply(response: requests.Response) -> dict[str, Any]:
    """The JSON-RPC message of a JSON body, or the last message of an SSE body."""
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("application/json"):
        return response.json()
    assert content_type == "text/event-stream", (response.status_code, response.headers, response.text)
    messages = events_of(response)
    assert messages, response.content
    return json.loads(messages[-1].data)


def sse_events(response: requests.Response) -> list[Event]:
    """Every SSE event of a complete body, those without data (comments aside) included."""
    parser = SSEParser()
    parser.feed(response.content)
    return list(parser.events)


# -- servers ----------------------------------------------------------------------------


class LiveApp:
    """An ``McpApp`` with a :class:`StatelessHandler` on a threaded werkzeug server."""

    def __init__(self, managers: SessionManagers | None = None, **options: Any) -> None:
        self.handler = StatelessHandler()
        self.managers = SessionManagers() if managers is None else managers
        self.app = McpApp(self.handler, managers=self.managers, **app_options(**options))
        self.server = ThreadedServer(self.app)  # type: ignore[arg-type]  # any WSGI app
        self.url = f"http://127.0.0.1:{self.server.port}/mcp"
        self.endpoint = Endpoint(self.url)

    def close(self) -> None:
        self.endpoint.close()
        self.app.close(timeout=2)
        self.server.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveApp]]:
    """Factory: ``serve(**options)`` starts an McpApp with a :class:`StatelessHandler`; closed afterwards."""
    made: list[LiveApp] = []

    def make(**options: Any) -> LiveApp:
        served = LiveApp(**options)
        made.append(served)
        return served

    yield make
    for served in made:
        served.close()


def with_worker_pid(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """*app* with an ``X-Worker-Pid`` response header (which process answered)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, (WORKER_HEADER, str(os.getpid()))], exc_info)

        return app(environ, start)

    return wrapped


def gunicorn_app() -> Callable[..., Iterable[bytes]]:
    """The factory gunicorn workers call: McpApp + :class:`StatelessHandler` on Redis managers (``MCP_REDIS_URL``)."""
    from examples.server import REDIS_URL_ENV, redis_managers

    from .conftest_redis import TEST_HEARTBEAT, TEST_LIVENESS_TTL

    managers = redis_managers(
        os.environ[REDIS_URL_ENV], events=False, liveness_ttl=TEST_LIVENESS_TTL, heartbeat_interval=TEST_HEARTBEAT
    )
    app = McpApp(StatelessHandler(os.environ.get(REPORT_ENV)), managers=managers, **app_options())
    return with_worker_pid(app)


def main() -> None:
    """``python -m tests.stateless_support --port N``: the test app on gevent.pywsgi, in memory."""
    from gevent.pywsgi import WSGIServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = McpApp(StatelessHandler(os.environ.get(REPORT_ENV)), **app_options())
    WSGIServer(("127.0.0.1", args.port), app, log=None).serve_forever()


if __name__ == "__main__":
    main()
