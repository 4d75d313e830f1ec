"""A small but real MCP server on session_manager's Flask blueprint.

Run it (gevent, http://127.0.0.1:8000/mcp)::

    python examples/server.py [--host 127.0.0.1] [--port 8000] [--redis redis://127.0.0.1:6379/0]
    gunicorn -k gevent -b 127.0.0.1:8000 'examples.server:create_app()'

Sessions are in memory (one process) unless a Redis URL is given, by
``--redis`` or the environment variable ``MCP_REDIS_URL``: then any number of
worker processes share them, and ``examples/notify.py`` reaches their streams::

    MCP_REDIS_URL=redis://127.0.0.1:6379/0 gunicorn -c examples/gunicorn.conf.py 'examples.server:create_app()'

Connect the official client (``pip install mcp``)::

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client("http://127.0.0.1:8000/mcp") as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            print(await session.call_tool("echo", {"text": "hi"}))

Clients of the legacy HTTP+SSE transport (2024-11-05, e.g.
``mcp.client.sse.sse_client``) connect to ``http://127.0.0.1:8000/sse``
instead and POST to the URL its ``endpoint`` event names
(``/messages?sessionId=...``); both kinds share sessions and notifications.

What it shows: tools (``echo``; ``slow_count`` reports progress and logs
while it works; ``set_note`` changes the resource ``note://current`` and
notifies its subscribers; ``ask_note`` and ``draft_note`` ask the client,
by elicitation and by sampling, with ``ctx.request``), resources with
subscriptions, a prompt, and ``logging/setLevel``.

Streams are resumable (an event store keeps what was sent, in memory or in
Redis): a client that loses its GET stream, or the stream of a POST, comes
back with ``Last-Event-ID`` and gets what it missed (``--no-events``: at
most once). Stopping the server (Ctrl-C, SIGTERM) ends every stream with a
``retry`` hint, waits for running tool calls and closes the managers.
"""

if __name__ == "__main__":
    # Patch before anything else is imported, and only when run as a script:
    # gunicorn's gevent worker patches by itself, and importers decide for themselves.
    from gevent import monkey

    monkey.patch_all()

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask

from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, SessionManagers
from session_manager.flask import (
    DEFAULT_ALLOWED_HOSTS,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    JsonRpcError,
    McpBlueprint,
    RequestContext,
)

if TYPE_CHECKING:
    from session_manager.pywsgi import WSGIServer

logger = logging.getLogger(__name__)

#: Environment variable with the Redis URL (``redis://HOST:PORT/DB``) that switches the example to Redis.
REDIS_URL_ENV = "MCP_REDIS_URL"
#: Environment variable that turns the event store (resumable streams) off when ``0``.
EVENTS_ENV = "MCP_EVENTS"
#: Seconds a stop waits for running tool calls.
SHUTDOWN_TIMEOUT = 5.0
NOTE_URI = "note://current"
#: MCP's error code for an unknown resource.
RESOURCE_NOT_FOUND = -32002

Params = dict[str, Any]
Result = dict[str, Any] | None

TOOLS: list[dict[str, Any]] = [
    {
        "name": "echo",
        "description": "Return the text it is given.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
    {
        "name": "slow_count",
        "description": "Count to n, reporting progress and logging at each step.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 1, "maximum": 100},
                "delay": {"type": "number", "minimum": 0, "maximum": 5},
            },
        },
    },
    {
        "name": "set_note",
        "description": f"Replace the note at {NOTE_URI}; subscribers are notified.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
    {
        "name": "ask_note",
        "description": "Ask the user for a new note (elicitation), then set it.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "draft_note",
        "description": "Ask the client's model to draft a note on a topic (sampling).",
        "inputSchema": {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]},
    },
]

PROMPTS: list[dict[str, Any]] = [
    {
        "name": "summarize_note",
        "description": "Ask the model to summarize the current note.",
        "arguments": [{"name": "style", "description": "e.g. 'one line', 'bullet points'", "required": False}],
    }
]


class Note:
    """The text behind ``note://current``: in this process, or in Redis so that every worker shares it.

    Sessions are not the only state several workers must share: application
    data is too, or a resource read on one worker contradicts an update
    announced by another.
    """

    KEY = "example:note"
    DEFAULT = "Hello from session_manager."

    def __init__(self, redis_url: str | None = None) -> None:
        self._lock = threading.Lock()
        self._text = self.DEFAULT
        self._redis = None
        if redis_url:
            import redis

            # A bounded pool and timeouts: a few connections per process, no call hangs.
            pool = redis.BlockingConnectionPool.from_url(
                redis_url, max_connections=4, timeout=5, socket_timeout=5, socket_connect_timeout=2
            )
            self._redis = redis.Redis(connection_pool=pool)

    def get(self) -> str:
        if self._redis is not None:
            value = self._redis.get(self.KEY)
            return self.DEFAULT if value is None else value.decode()
        with self._lock:
            return self._text

    def set(self, text: str) -> None:
        if self._redis is not None:
            self._redis.set(self.KEY, text)
            return
        with self._lock:
            self._text = text


def _text(text: str) -> dict[str, Any]:
    """A tool result with one text block."""
    return {"content": [{"type": "text", "text": text}]}


class NoteServer:
    """The application: MCP methods, each a function of (params, ctx)."""

    def __init__(self, note: Note | None = None) -> None:
        self.note = Note() if note is None else note
        self.transport: McpBlueprint | None = None  # set by create_app, for fan-out
        self._methods: dict[str, Callable[[Params, RequestContext], Result]] = {
            # The blueprint fills protocolVersion, serverInfo and capabilities from its options.
            "initialize": lambda params, ctx: {},
            "ping": lambda params, ctx: {},
            "tools/list": lambda params, ctx: {"tools": TOOLS},
            "tools/call": self.call_tool,
            "resources/list": self.list_resources,
            "resources/read": self.read_resource,
            # The blueprint records subscriptions and the log level once these succeed.
            "resources/subscribe": self.check_resource,
            "resources/unsubscribe": lambda params, ctx: {},
            "logging/setLevel": lambda params, ctx: {},
            "prompts/list": lambda params, ctx: {"prompts": PROMPTS},
            "prompts/get": self.get_prompt,
        }

    def handle(self, message: dict[str, Any], ctx: RequestContext) -> Result:
        """The blueprint's handler: dispatch one JSON-RPC message."""
        method = message.get("method")
        function = self._methods.get(method) if method else None
        if function is None:
            if "id" in message and method:
                raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
            return None  # notifications (e.g. notifications/initialized) and client responses
        return function(message.get("params") or {}, ctx)

    # -- tools ---------------------------------------------------------------

    def call_tool(self, params: Params, ctx: RequestContext) -> Result:
        name, args = params.get("name"), params.get("arguments") or {}
        if name == "echo":
            return _text(str(args.get("text", "")))
        if name == "slow_count":
            try:
                n, delay = int(args.get("n", 5)), float(args.get("delay", 0.1))
            except (TypeError, ValueError):
                raise JsonRpcError(INVALID_PARAMS, "slow_count: n must be an integer and delay a number") from None
            return self.slow_count(n, delay, ctx)
        if name == "set_note":
            return self.set_note(str(args.get("text", "")))
        if name == "ask_note":
            return self.ask_note(ctx)
        if name == "draft_note":
            return self.draft_note(str(args.get("topic", "")), ctx)
        raise JsonRpcError(INVALID_PARAMS, f"Unknown tool: {name}")

    @staticmethod
    def slow_count(n: int, delay: float, ctx: RequestContext) -> Result:
        """Progress and log messages reach the client live, before the result."""
        n, delay = max(1, min(n, 100)), max(0.0, min(delay, 5.0))
        for i in range(1, n + 1):
            time.sleep(delay)  # cooperative under gevent
            ctx.progress(i, n, f"counted {i} of {n}")
            ctx.log("info", {"count": i}, logger="slow_count")
            ctx.log("debug", f"step {i} done", logger="slow_count")  # sent unless setLevel asked for less
        return _text(f"counted to {n}")

    def set_note(self, text: str) -> Result:
        self.note.set(text)
        if self.transport is not None:
            self.transport.resource_updated(NOTE_URI)  # only subscribed sessions hear of it
        return _text("note updated")

    def ask_note(self, ctx: RequestContext) -> Result:
        """Ask the user, wait for the answer: the client may POST it to any worker."""
        answer = ctx.request(
            "elicitation/create",
            {
                "mode": "form",
                "message": "What should the note say?",
                "requestedSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
            },
            timeout=300,  # a human is typing
        )
        if answer.get("action") != "accept":
            return _text(f"note unchanged ({answer.get('action')})")
        return self.set_note(str((answer.get("content") or {}).get("text", "")))

    @staticmethod
    def draft_note(topic: str, ctx: RequestContext) -> Result:
        """Borrow the client's model; its reply may reach any worker too."""
        message = {"role": "user", "content": {"type": "text", "text": f"Write a one-line note about {topic}."}}
        result = ctx.request("sampling/createMessage", {"messages": [message], "maxTokens": 100})
        content = result.get("content") or {}
        return _text(str(content.get("text", "")) if isinstance(content, dict) else "")

    # -- resources and prompts ---------------------------------------------

    @staticmethod
    def list_resources(params: Params, ctx: RequestContext) -> Result:
        return {"resources": [{"uri": NOTE_URI, "name": "note", "mimeType": "text/plain"}]}

    @staticmethod
    def check_resource(params: Params, ctx: RequestContext) -> Result:
        if params.get("uri") != NOTE_URI:
            raise JsonRpcError(RESOURCE_NOT_FOUND, "Resource not found", {"uri": params.get("uri")})
        return {}

    def read_resource(self, params: Params, ctx: RequestContext) -> Result:
        self.check_resource(params, ctx)
        note = self.note.get()
        return {"contents": [{"uri": NOTE_URI, "mimeType": "text/plain", "text": note}]}

    def get_prompt(self, params: Params, ctx: RequestContext) -> Result:
        if params.get("name") != "summarize_note":
            raise JsonRpcError(INVALID_PARAMS, f"Unknown prompt: {params.get('name')}")
        style = (params.get("arguments") or {}).get("style", "one line")
        note = self.note.get()
        text = f"Summarize this note ({style}):\n\n{note}"
        return {"messages": [{"role": "user", "content": {"type": "text", "text": text}}]}


def redis_managers(url: str, *, events: bool = True, **stream_options: Any) -> SessionManagers:
    """Sessions, streams and (with *events*) stored events in the Redis at *url*, shared by every process.

    *stream_options* go to :class:`~session_manager.redis.RedisStreamSessionManager` (e.g. ``liveness_ttl``).
    With a Redis event store a client resumes on any worker.
    """
    from session_manager.redis import (  # needs redis-py
        RedisEventStore,
        RedisInfoSessionManager,
        RedisStreamSessionManager,
        RedisSubscriptionManager,
    )

    if events:
        stream_options.setdefault("event_store", RedisEventStore(url))
    streams = RedisStreamSessionManager(url, **stream_options)
    # The third manager: 2026-07-28 listen streams, notified from any worker.
    return SessionManagers(streams, RedisInfoSessionManager(url), RedisSubscriptionManager(url))


def memory_managers(*, events: bool = True) -> SessionManagers:
    """Sessions and streams in this process; with *events*, streams are resumable."""
    return SessionManagers(InMemoryStreamSessionManager(event_store=InMemoryEventStore() if events else None))


def create_app(
    managers: SessionManagers | None = None,
    *,
    redis_url: str | None = None,
    events: bool | None = None,
    **options: Any,
) -> Flask:
    """Build the Flask app; *options* go to McpBlueprint.

    With a Redis URL (*redis_url*, else ``$MCP_REDIS_URL``) the note is kept in Redis and
    *managers* defaults to :func:`redis_managers`; without one, everything is in memory.
    Streams are resumable (an event store) unless *events* is false (default: the
    environment variable ``MCP_EVENTS``, ``0`` turns it off).
    This is the factory for gunicorn (``'examples.server:create_app()'``): each worker calls
    it after the fork, so nothing (locks, connections) is created at import.
    """
    redis_url = redis_url or os.environ.get(REDIS_URL_ENV)
    if events is None:
        events = os.environ.get(EVENTS_ENV, "1") != "0"
    if managers is None:
        managers = redis_managers(redis_url, events=events) if redis_url else memory_managers(events=events)
    server = NoteServer(Note(redis_url))
    options.setdefault("server_info", {"name": "session-manager-example", "version": "1.0.0"})
    options.setdefault(
        "capabilities",
        {
            "tools": {"listChanged": True},
            "resources": {"subscribe": True, "listChanged": True},
            "prompts": {"listChanged": True},
            "logging": {},
        },
    )
    blueprint = McpBlueprint(server.handle, managers=managers, **options)
    server.transport = blueprint
    app = Flask(__name__)
    app.register_blueprint(blueprint)
    app.register_blueprint(blueprint.legacy_sse_blueprint())  # legacy HTTP+SSE: GET /sse, POST /messages
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the example with gevent's WSGI server until SIGINT or SIGTERM."""
    import gevent.event

    from session_manager.pywsgi import WSGIServer  # gevent.pywsgi, streams written from the event loop

    parser = argparse.ArgumentParser(description="Example MCP server on session_manager's Flask blueprint.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="extra Host header value to accept (DNS rebinding protection allows localhost names only)",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get(REDIS_URL_ENV),
        metavar="URL",
        help=f"keep sessions in Redis, e.g. redis://127.0.0.1:6379/0 (default: ${REDIS_URL_ENV}, else in memory)",
    )
    parser.add_argument(
        "--no-events",
        action="store_true",
        help="no event store: streams are not resumable (at-most-once delivery)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    served = create_app(
        redis_url=args.redis, events=not args.no_events, allowed_hosts=[*DEFAULT_ALLOWED_HOSTS, *args.allow_host]
    )
    server = WSGIServer((args.host, args.port), served, log=None)
    server.start()
    where = "in Redis" if args.redis else "in memory"
    logger.info("MCP server on http://%s:%d/mcp, sessions %s", args.host, server.server_port, where)
    stopped = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stopped.set)
    stopped.wait()
    shutdown(served, server)


def shutdown(app: Flask, server: "WSGIServer") -> None:
    """Stop accepting, end every stream (clients get ``retry``), wait for tool calls, close the managers."""
    logger.info("stopping")
    server.close()  # no new connections
    blueprint = app.blueprints["mcp"]
    assert isinstance(blueprint, McpBlueprint)
    blueprint.close(timeout=SHUTDOWN_TIMEOUT)
    server.stop(timeout=1)  # the connections still open were just answered


if __name__ == "__main__":
    main()
