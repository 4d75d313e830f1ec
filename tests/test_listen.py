"""``subscriptions/listen`` (MCP 2026-07-28) on real servers: raw HTTP, the official client, gunicorn on Redis.

Rules from /work/shared/docs/MCP-2026-07-28.md §9 (the spec digest): the
acknowledgement comes first and at once, with the honoured subset of the
filter (what the declared capabilities, and the handler, grant) and the
listen request's id as ``_meta["io.modelcontextprotocol/subscriptionId"]``;
every later notification carries that id; only the kinds asked for, a
resource update only for a listed URI; several concurrent listen streams;
the server's graceful end is the listen request's result. Servers: McpApp on
a threaded werkzeug server in this process (keepalive 0.5 s; Redis-backed
for the outage tests), and ``gunicorn -k gevent -w 3`` serving
examples/server.py on a Redis of this module (tests/gunicorn_app.py), shared
by the multi-worker tests (the SIGKILL one last). Helpers:
tests/stateless_support.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from mcp.client.client import Client
from mcp.client.subscriptions import ResourceUpdated, SubscriptionLost, ToolsListChanged

from examples.server import NOTE_URI
from session_manager import BackendUnavailableError, InMemoryEventStore, InMemoryStreamSessionManager, SessionManagers
from session_manager.redis import RedisSubscriptionManager
from session_manager.wsgi import JsonRpcError, McpApp

from .flask_support import ACCEPT_BOTH, LATEST, RawStream, ThreadedServer, build_request, initialize_message, wait_until
from .gunicorn_support import Gunicorn, Pinned, pid_alive, run_notify
from .redis_server import MISSING, RedisServer, find_binary
from .stateless_support import MODERN, Endpoint, LiveApp, modern_headers, modern_request, reply, serve, tool_call

__all__ = ["serve"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.timeout(120)

LISTEN = "subscriptions/listen"
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
TOOLS_CHANGED = "notifications/tools/list_changed"
PROMPTS_CHANGED = "notifications/prompts/list_changed"
RESOURCES_CHANGED = "notifications/resources/list_changed"
UPDATED = "notifications/resources/updated"
INVALID_PARAMS = -32602
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
METHOD_NOT_FOUND = -32601
#: A URI every stream of a test watches: a resource update of it, sent last, proves nothing else is on its way
#: (delivery is FIFO per stream).
MARKER = "test://marker"
#: The keepalive of the in-process servers (app_options): a gone client is noticed within about one.
KEEPALIVE = 0.5
CLIENT_TIMEOUT = 20

#: What a listen stream received: ``(method, uri)``, uri None for a list change.
Seen = tuple[str, str | None]
T: Seen = (TOOLS_CHANGED, None)
P: Seen = (PROMPTS_CHANGED, None)
R: Seen = (RESOURCES_CHANGED, None)
M: Seen = (UPDATED, MARKER)

_ABSENT = object()

#: What the in-process servers declare: every list changes, resources can be subscribed to (all honoured).
LISTEN_CAPABILITIES: dict[str, Any] = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "logging": {},
}


def U(uri: str) -> Seen:
    """A resource update of *uri* (named to read like T, P, R, M)."""
    return (UPDATED, uri)


def listen_request(notifications: Any = _ABSENT, *, id: Any = 1, **meta_options: Any) -> dict[str, Any]:
    """A stateless ``subscriptions/listen`` request (``params.notifications`` left out if not given)."""
    params = {} if notifications is _ABSENT else {"notifications": notifications}
    return modern_request(LISTEN, params, id=id, **meta_options)


def same(value: Any, expected: Any) -> bool:
    """Equal, and of the same JSON type (``7`` is not ``"7"``, ``0`` not ``False``)."""
    return value == expected and type(value) is type(expected)


def take_messages(stream: RawStream, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next *count* messages of a listen stream; none carries an SSE event id (no resumability)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        try:
            event = stream.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"expected {count} messages within {timeout} s, got {len(got)}: {got!r}")
        if event is None:
            pytest.fail(f"the stream ended after {len(got)} of {count} messages: {got!r}")
        assert event.id is None, f"a listen stream carries no event ids: {event!r}"
        got.append(json.loads(event.data))
    return got


def received(stream: RawStream, subscription_id: Any, count: int, timeout: float = 10.0) -> list[Seen]:
    """The next *count* notifications, each checked to be a notification tagged with *subscription_id*."""
    seen: list[Seen] = []
    for message in take_messages(stream, count, timeout):
        assert "id" not in message and message.get("jsonrpc") == "2.0", message
        params = message.get("params")
        assert isinstance(params, dict) and set(params) <= {"uri", "_meta"}, message
        assert same(params["_meta"].get(SUBSCRIPTION_ID), subscription_id), (subscription_id, message)
        assert set(params["_meta"]) == {SUBSCRIPTION_ID}, message
        seen.append((message["method"], params.get("uri")))
    return seen


def expect(stream: RawStream, subscription_id: Any, expected: list[Seen], timeout: float = 10.0) -> None:
    """The stream's next notifications are exactly *expected* (end *expected* with a marker to rule out extras)."""
    assert received(stream, subscription_id, len(expected), timeout) == expected


def acknowledged(stream: RawStream, subscription_id: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The first message: the acknowledgement, tagged; returns the honoured filter it states."""
    (ack,) = take_messages(stream, 1, timeout)
    assert ack.get("method") == ACKNOWLEDGED and "id" not in ack, ack
    assert set(ack["params"]) == {"notifications", "_meta"}, ack
    assert ack["params"]["_meta"] == {SUBSCRIPTION_ID: subscription_id}, ack
    assert same(ack["params"]["_meta"][SUBSCRIPTION_ID], subscription_id), ack
    return ack["params"]["notifications"]


def open_listen(
    endpoint: Endpoint, notifications: Any, subscription_id: Any, headers: dict[str, str] | None = None
) -> RawStream:
    """A listen stream on a socket of its own, acknowledged."""
    stream = endpoint.open(listen_request(notifications, id=subscription_id), headers)
    assert stream.headers["content-type"] == "text/event-stream", stream.headers
    assert "mcp-session-id" not in stream.headers
    acknowledged(stream, subscription_id)
    return stream


def silent_listener(port: int, message: dict[str, Any]) -> socket.socket:
    """Send a listen request on a socket with a tiny receive buffer and never read: a slow consumer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH, **modern_headers(message)}
    sock.sendall(build_request("POST", "/mcp", port, headers, json.dumps(message).encode()))
    return sock


def read_to_end(sock: socket.socket, timeout: float) -> bool:
    """Read *sock* until EOF (or a reset); False if it is still open after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(1 << 20):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


@pytest.fixture
def listen_app(serve: Callable[..., LiveApp]) -> Callable[..., LiveApp]:
    """Factory: ``serve`` with :data:`LISTEN_CAPABILITIES` unless told otherwise."""

    def make(**options: Any) -> LiveApp:
        options.setdefault("capabilities", LISTEN_CAPABILITIES)
        return serve(**options)

    return make


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Things with ``close()`` (streams, sockets, connections) closed after the test."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        with contextlib.suppress(OSError):
            thing.close()


# -- 1. raw HTTP against McpApp ---------------------------------------------------------------


@pytest.mark.parametrize("subscription_id", [0, 7, -3, 2**70, "abc", "7", ""], ids=json.dumps)
def test_acknowledgement_first_then_tagged_notifications(
    listen_app: Callable[..., LiveApp], closing: list[Any], subscription_id: Any
) -> None:
    """The ack is the first message, sent at once; it and every notification carry the listen id, its type kept.

    The server has an event store (its session streams are resumable): a listen stream still carries no ids.
    """
    live = listen_app(managers=SessionManagers(InMemoryStreamSessionManager(event_store=InMemoryEventStore())))
    stream = live.endpoint.open(
        listen_request({"toolsListChanged": True, "resourceSubscriptions": ["test://a"]}, id=subscription_id)
    )
    closing.append(stream)
    assert stream.headers["content-type"] == "text/event-stream"
    assert stream.headers.get("x-accel-buffering") == "no"
    assert "mcp-session-id" not in stream.headers
    honoured = acknowledged(stream, subscription_id, timeout=0.8)  # the suite waits ~0.8 s for it
    assert honoured == {"toolsListChanged": True, "resourceSubscriptions": ["test://a"]}
    assert len(live.managers.subscriptions) == 1
    live.app.tools_list_changed()
    live.app.resource_updated("test://a")
    messages = take_messages(stream, 2)
    assert messages == [
        {"jsonrpc": "2.0", "method": TOOLS_CHANGED, "params": {"_meta": {SUBSCRIPTION_ID: subscription_id}}},
        {
            "jsonrpc": "2.0",
            "method": UPDATED,
            "params": {"uri": "test://a", "_meta": {SUBSCRIPTION_ID: subscription_id}},
        },
    ]
    assert all(same(message["params"]["_meta"][SUBSCRIPTION_ID], subscription_id) for message in messages)


def test_only_the_kinds_asked_for_on_several_streams_of_one_client(
    listen_app: Callable[..., LiveApp], closing: list[Any]
) -> None:
    """Each stream gets exactly the kinds of its filter, tagged with its own id; resource URIs match exactly."""
    live = listen_app()
    http = live.endpoint
    filters: dict[Any, dict[str, Any]] = {
        1: {"toolsListChanged": True},
        "prompts": {"promptsListChanged": True},
        3: {"resourcesListChanged": True},
        "uris": {"resourceSubscriptions": ["test://a", "test://b"]},
        5: {
            "toolsListChanged": True,
            "promptsListChanged": True,
            "resourcesListChanged": True,
            "resourceSubscriptions": ["test://a"],
        },
        "none": {},
    }
    streams: dict[Any, RawStream] = {}
    for subscription_id, wanted in filters.items():
        notifications = {**wanted, "resourceSubscriptions": [*wanted.get("resourceSubscriptions", []), MARKER]}
        streams[subscription_id] = open_listen(http, notifications, subscription_id)
        closing.append(streams[subscription_id])
    twins = [open_listen(http, {"toolsListChanged": True, "resourceSubscriptions": [MARKER]}, 42) for _ in range(2)]
    closing.extend(twins)  # two streams with the same id: each is its own registration
    assert len(live.managers.subscriptions) == len(filters) + 2

    app = live.app
    app.tools_list_changed()
    app.prompts_list_changed()
    app.resources_list_changed()
    app.resource_updated("test://a")
    app.resource_updated("test://b")
    for near_miss in ("test://a/", "test://A", "test://a?x=1", "test://a ", "test://", "test:/a", "test://aa"):
        app.resource_updated(near_miss)
    app.broadcast(TOOLS_CHANGED)  # a list change broadcast reaches listen streams too
    app.broadcast("notifications/other")  # no listen stream can ask for that
    app.broadcast("notifications/message", {"level": "info", "data": "not for listen streams"})
    app.broadcast(RESOURCES_CHANGED)
    app.resource_updated(MARKER)

    expected: dict[Any, list[Seen]] = {
        1: [T, T, M],
        "prompts": [P, M],
        3: [R, R, M],
        "uris": [U("test://a"), U("test://b"), M],
        5: [T, P, R, U("test://a"), T, R, M],
        "none": [M],
    }
    for subscription_id, stream in streams.items():
        expect(stream, subscription_id, expected[subscription_id])
    for twin in twins:
        expect(twin, 42, [T, T, M])


@pytest.mark.parametrize(
    ("notifications", "honoured"),
    [
        ({}, {}),
        ({"toolsListChanged": False, "promptsListChanged": False, "resourceSubscriptions": []}, {}),
        (
            {"toolsListChanged": True, "futureKind": True, "elicitationsChanged": {"x": 1}, "resourcesListChanged": False},
            {"toolsListChanged": True},
        ),
        ({"resourceSubscriptions": ["test://b", "test://a", "test://b"]}, {"resourceSubscriptions": ["test://a", "test://b"]}),
        (
            {"resourceSubscriptions": [f"test://r/{n}" for n in range(1000)]},
            {"resourceSubscriptions": sorted(f"test://r/{n}" for n in range(1000))},
        ),
    ],
    ids=["empty", "all-false", "unknown-keys", "duplicate-uri", "1000-uris"],
)
def test_honoured_subset(
    listen_app: Callable[..., LiveApp], closing: list[Any], notifications: dict[str, Any], honoured: dict[str, Any]
) -> None:
    """Unknown keys and false flags are left out of the ack; a URI listed twice is one subscription."""
    live = listen_app()
    stream = live.endpoint.open(listen_request(notifications, id="subset"))
    closing.append(stream)
    assert acknowledged(stream, "subset") == honoured
    for uri in ("test://a", "test://b", "test://r/999", "test://r/1000"):
        live.app.resource_updated(uri)
    live.app.tools_list_changed()
    live.app.prompts_list_changed()
    live.app.resources_list_changed()
    expected = [U(uri) for uri in ("test://a", "test://b", "test://r/999") if uri in honoured.get("resourceSubscriptions", [])]
    expected += [T] if honoured.get("toolsListChanged") else []
    if expected:
        expect(stream, "subset", expected)
    time.sleep(0.2)
    assert stream.events.empty(), stream.events.get()


def test_stream_unregistered_when_the_client_goes_away(listen_app: Callable[..., LiveApp], closing: list[Any]) -> None:
    """A client that hangs up is noticed at the next write (a keepalive at the latest): its stream is forgotten."""
    live = listen_app()
    streams = [
        open_listen(live.endpoint, {"toolsListChanged": True, "resourceSubscriptions": [f"test://{n}"]}, n)
        for n in range(3)
    ]
    closing.extend(streams)
    subscriptions = live.managers.subscriptions
    assert len(subscriptions) == 3 and subscriptions.watched_uris == 3  # type: ignore[attr-defined]
    streams[0].close()
    wait_until(lambda: len(subscriptions) == 2, timeout=4 * KEEPALIVE, what="the gone client's stream to go")
    assert subscriptions.watched_uris == 2  # type: ignore[attr-defined]
    live.app.tools_list_changed()
    for n in (1, 2):
        expect(streams[n], n, [T])
    for stream in streams[1:]:
        stream.close()
    wait_until(lambda: len(subscriptions) == 0, timeout=4 * KEEPALIVE, what="every stream to go")
    assert subscriptions.watched_uris == 0  # type: ignore[attr-defined]


def test_slow_listener_is_cut_and_the_others_get_everything(listen_app: Callable[..., LiveApp], closing: list[Any]) -> None:
    """A listener that never reads is dropped once *stream_maxsize* frames wait; the reading one misses nothing."""
    live = listen_app(stream_maxsize=16)
    subscriptions = live.managers.subscriptions
    uri = "test://big/" + "x" * 2000  # big frames fill the socket buffers sooner
    wanted = {"toolsListChanged": True, "resourceSubscriptions": [uri]}
    slow = silent_listener(live.server.port, listen_request(wanted, id="slow"))
    closing.append(slow)
    fast = open_listen(live.endpoint, wanted, "fast")
    closing.append(fast)
    wait_until(lambda: len(subscriptions) == 2, what="both streams to be registered")
    sent = 0
    deadline = time.monotonic() + 20
    while len(subscriptions) == 2:
        assert time.monotonic() < deadline and sent < 6000, f"the silent listener was never cut ({sent} sent)"
        for _ in range(4):  # bursts well under the bound, each read by the fast listener before the next
            live.app.resource_updated(uri)
        sent += 4
        expect(fast, "fast", [U(uri)] * 4)
    assert subscriptions.slow_consumers_dropped == 1  # type: ignore[attr-defined]
    assert read_to_end(slow, 5), "the slow listener's connection was not shut"
    live.app.tools_list_changed()
    live.app.resource_updated(uri)
    expect(fast, "fast", [T, U(uri)])
    assert len(subscriptions) == 1


def test_shutdown_ends_each_stream_with_its_result(listen_app: Callable[..., LiveApp], closing: list[Any]) -> None:
    """``app.close()``: each listen stream gets what was queued, then its request's result, then ends."""
    live = listen_app()
    ids: list[Any] = [11, "twelve", 0]
    streams = [open_listen(live.endpoint, {"toolsListChanged": True}, subscription_id) for subscription_id in ids]
    closing.extend(streams)
    live.app.tools_list_changed()  # queued just before the close: delivered first
    assert live.app.close(timeout=2)
    for subscription_id, stream in zip(ids, streams):
        tools, result = take_messages(stream, 2)
        assert tools["method"] == TOOLS_CHANGED and same(tools["params"]["_meta"][SUBSCRIPTION_ID], subscription_id)
        assert result == {
            "jsonrpc": "2.0",
            "id": subscription_id,
            "result": {"resultType": "complete", "_meta": {SUBSCRIPTION_ID: subscription_id}},
        }
        assert same(result["id"], subscription_id) and same(result["result"]["_meta"][SUBSCRIPTION_ID], subscription_id)
        assert stream.ended.wait(3), "the listen stream did not end after its result"
        assert stream.events.get(timeout=1) is None  # nothing after the result
    assert len(live.managers.subscriptions) == 0
    response = live.endpoint.post(listen_request({"toolsListChanged": True}, id=13))
    assert response.status_code == 503, response.text  # refused before the body is read: no id


@pytest.fixture(scope="module")
def serve_module() -> Iterator[LiveApp]:
    """One server for the many refusals (no stream is ever opened on it)."""
    app = LiveApp(capabilities=LISTEN_CAPABILITIES)
    yield app
    app.close()


_1001_URIS = [f"test://r/{n}" for n in range(1001)]


def _filter_id(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    if isinstance(value, dict) and value.get("resourceSubscriptions") is _1001_URIS:
        return "1001-uris"
    return json.dumps(value)


@pytest.mark.parametrize(
    "notifications",
    [
        "tools",
        ["toolsListChanged"],
        5,
        True,
        None,
        {"toolsListChanged": "true"},
        {"promptsListChanged": 1},
        {"resourcesListChanged": {}},
        {"toolsListChanged": True, "promptsListChanged": [True]},
        {"resourceSubscriptions": "test://a"},
        {"resourceSubscriptions": {"test://a": True}},
        {"resourceSubscriptions": [1]},
        {"resourceSubscriptions": [None]},
        {"resourceSubscriptions": ["test://a", {"uri": "test://b"}]},
        {"resourceSubscriptions": [["test://a"]]},
        {"resourceSubscriptions": [""]},
        {"resourceSubscriptions": _1001_URIS},
        _ABSENT,
    ],
    ids=_filter_id,
)
@pytest.mark.parametrize("subscription_id", [21, "bad"], ids=json.dumps)
def test_malformed_filter_is_400_invalid_params(
    serve_module: LiveApp, notifications: Any, subscription_id: Any
) -> None:
    """A malformed ``params.notifications`` gets 400, -32602 with the request's id (never a 500) and no stream."""
    response = serve_module.endpoint.post(listen_request(notifications, id=subscription_id))
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    assert answer["error"]["code"] == INVALID_PARAMS and same(answer["id"], subscription_id), answer
    assert "result" not in answer
    assert len(serve_module.managers.subscriptions) == 0


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"jsonrpc": "2.0", "id": 31, "method": LISTEN, "params": "notifications"}, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 32, "method": LISTEN, "params": [{"toolsListChanged": True}]}, INVALID_REQUEST),
        ({"jsonrpc": "2.0", "id": 33, "method": LISTEN}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 34, "method": LISTEN, "params": {"notifications": {"toolsListChanged": True}}}, INVALID_PARAMS),
    ],
    ids=["params-string", "params-array", "no-params", "no-meta"],
)
def test_listen_without_proper_params_is_never_a_500(serve_module: LiveApp, message: dict[str, Any], code: int) -> None:
    """Params that are not an object: an invalid request; no ``_meta``: invalid params. 400 with the id either way."""
    response, answer = serve_module.endpoint.call(message)
    assert response.status_code == 400, (response.status_code, answer)
    assert answer["error"]["code"] == code and answer["id"] == message["id"], answer
    assert len(serve_module.managers.subscriptions) == 0


def test_listen_needs_an_event_stream(listen_app: Callable[..., LiveApp], closing: list[Any]) -> None:
    """``Accept: application/json`` alone is 406 (with the id); ``text/event-stream`` alone is enough."""
    live = listen_app()
    for subscription_id in (41, "json-only"):
        response = live.endpoint.post(listen_request({"toolsListChanged": True}, id=subscription_id), accept="application/json")
        assert response.status_code == 406, (response.status_code, response.text)
        assert same(response.json()["id"], subscription_id), response.text
    assert len(live.managers.subscriptions) == 0
    stream = open_listen(live.endpoint, {"toolsListChanged": True}, "sse-only", headers={"Accept": "text/event-stream"})
    closing.append(stream)
    live.app.tools_list_changed()
    expect(stream, "sse-only", [T])


def test_listen_sent_as_a_notification_opens_nothing(serve_module: LiveApp) -> None:
    message = listen_request({"toolsListChanged": True})
    del message["id"]
    response = serve_module.endpoint.post(message)
    assert response.status_code == 202 and response.content == b"", response.text
    assert len(serve_module.managers.subscriptions) == 0


def test_listen_is_a_stream_even_with_json_response(listen_app: Callable[..., LiveApp], closing: list[Any]) -> None:
    """``json_response=True`` answers requests with JSON, but a listen answer can only be a stream."""
    live = listen_app(json_response=True)
    stream = open_listen(live.endpoint, {"toolsListChanged": True}, "json-option")
    closing.append(stream)
    live.app.tools_list_changed()
    expect(stream, "json-option", [T])


@pytest.mark.parametrize(
    ("capabilities", "honoured", "delivered"),
    [
        ({"tools": {"listChanged": True}}, {"toolsListChanged": True}, [T]),
        (
            {"resources": {"listChanged": True}},
            {"resourcesListChanged": True},
            [R],
        ),
        (
            {"prompts": {"listChanged": True}, "resources": {"subscribe": True, "listChanged": True}},
            {"promptsListChanged": True, "resourcesListChanged": True, "resourceSubscriptions": ["test://a"]},
            [P, R, U("test://a")],
        ),
    ],
    ids=["tools-only", "resources-without-subscribe", "prompts-and-subscribe"],
)
def test_acknowledged_subset_follows_the_declared_capabilities(
    listen_app: Callable[..., LiveApp],
    closing: list[Any],
    capabilities: dict[str, Any],
    honoured: dict[str, Any],
    delivered: list[Seen],
) -> None:
    """A kind the server does not declare is left out of the ack, and never sent even when raised."""
    live = listen_app(capabilities=capabilities)
    everything = {
        "toolsListChanged": True,
        "promptsListChanged": True,
        "resourcesListChanged": True,
        "resourceSubscriptions": ["test://a"],
    }
    stream = live.endpoint.open(listen_request(everything, id="caps"))
    closing.append(stream)
    assert acknowledged(stream, "caps") == honoured
    live.app.tools_list_changed()
    live.app.prompts_list_changed()
    live.app.resources_list_changed()
    live.app.resource_updated("test://a")
    expect(stream, "caps", delivered)
    time.sleep(0.2)
    assert stream.events.empty(), stream.events.get()


@pytest.fixture
def gated() -> Iterator[Callable[[Callable[[dict[str, Any]], Any]], tuple[McpApp, Endpoint]]]:
    """Factory: an McpApp whose handler answers ``subscriptions/listen`` with ``say(message)`` (others: {})."""
    made: list[tuple[McpApp, ThreadedServer, Endpoint]] = []

    def make(say: Callable[[dict[str, Any]], Any]) -> tuple[McpApp, Endpoint]:
        def handler(message: dict[str, Any], ctx: Any) -> Any:
            return say(message) if message.get("method") == LISTEN else {}

        app = McpApp(handler, capabilities=LISTEN_CAPABILITIES, keepalive=KEEPALIVE)
        server = ThreadedServer(app)  # type: ignore[arg-type]  # any WSGI app
        endpoint = Endpoint(f"http://127.0.0.1:{server.port}/mcp")
        made.append((app, server, endpoint))
        return app, endpoint

    yield make
    for app, server, endpoint in made:
        endpoint.close()
        app.close(timeout=2)
        server.close()


def test_handler_may_grant_less(gated: Callable[..., tuple[McpApp, Endpoint]], closing: list[Any]) -> None:
    app, endpoint = gated(lambda message: {"notifications": {"toolsListChanged": True, "resourceSubscriptions": ["test://a"]}})
    asked = {"toolsListChanged": True, "promptsListChanged": True, "resourceSubscriptions": ["test://a", "test://b"]}
    stream = endpoint.open(listen_request(asked, id="less"))
    closing.append(stream)
    assert acknowledged(stream, "less") == {"toolsListChanged": True, "resourceSubscriptions": ["test://a"]}
    app.prompts_list_changed()
    app.resource_updated("test://b")
    app.tools_list_changed()
    app.resource_updated("test://a")
    expect(stream, "less", [T, U("test://a")])


def test_handler_may_refuse(gated: Callable[..., tuple[McpApp, Endpoint]]) -> None:
    def refuse(message: dict[str, Any]) -> Any:
        raise JsonRpcError(INVALID_PARAMS, "not for you")

    app, endpoint = gated(refuse)
    response = endpoint.post(listen_request({"toolsListChanged": True}, id="refused"), stream=True)
    try:
        assert 400 <= response.status_code < 500, response.status_code  # a refusal, never a stream
        answer = response.json()
    finally:
        response.close()
    assert answer["error"]["code"] == INVALID_PARAMS and answer["id"] == "refused", answer
    assert len(app.managers.subscriptions) == 0


def test_handler_cannot_grant_what_was_not_asked(gated: Callable[..., tuple[McpApp, Endpoint]], closing: list[Any]) -> None:
    grant = {"toolsListChanged": True, "resourceSubscriptions": ["test://x", MARKER]}
    app, endpoint = gated(lambda message: {"notifications": grant})
    stream = endpoint.open(listen_request({"promptsListChanged": True, "resourceSubscriptions": [MARKER]}, id="more"))
    closing.append(stream)
    honoured = acknowledged(stream, "more")
    assert "toolsListChanged" not in honoured and "test://x" not in honoured.get("resourceSubscriptions", []), honoured
    app.tools_list_changed()
    app.resource_updated("test://x")
    app.resource_updated(MARKER)
    assert received(stream, "more", 1) == [M], "a kind the client never asked for was sent"  # FIFO: nothing before


def test_listen_inside_a_session_is_method_not_found(listen_app: Callable[..., LiveApp], closing: list[Any]) -> None:
    """A handshake-era session has no ``subscriptions/listen``: -32601 with the id; the session goes on."""
    live = listen_app()
    http = live.endpoint
    legacy = {"MCP-Protocol-Version": None, "Mcp-Method": None}
    response = http.post(initialize_message(LATEST), headers=legacy)
    assert response.status_code == 200, response.text
    sid = response.headers["Mcp-Session-Id"]
    session = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST, "Mcp-Method": None}
    initialized = http.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
    assert initialized.status_code == 202, initialized.text
    for subscription_id in (51, "in-session"):
        message = {"jsonrpc": "2.0", "id": subscription_id, "method": LISTEN, "params": {"notifications": {"toolsListChanged": True}}}
        response, answer = http.call(message, headers=session)
        assert response.status_code == 404, (response.status_code, answer)
        assert answer["error"]["code"] == METHOD_NOT_FOUND and same(answer["id"], subscription_id), answer
    assert len(live.managers.subscriptions) == 0
    # the session is unaffected: its requests, and its GET stream, which gets the list change (untagged)
    response, answer = http.call({"jsonrpc": "2.0", "id": 52, "method": "tools/list"}, headers=session)
    assert response.status_code == 200 and answer["result"]["tools"], answer
    get = RawStream(
        http.port, "GET", "/mcp", {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
    )
    closing.append(get)
    assert get.status == 200
    get.start_reader()  # registered before its head was sent
    live.app.tools_list_changed()
    (pushed,) = get.take(1)
    assert pushed["method"] == TOOLS_CHANGED and SUBSCRIPTION_ID not in (pushed.get("params") or {}).get("_meta", {})


def _redis_app(serve: Callable[..., LiveApp], redis: RedisServer) -> LiveApp:
    """McpApp in this process with its listen streams in a RedisSubscriptionManager."""
    return serve(managers=SessionManagers(subscriptions=RedisSubscriptionManager(redis.url, socket_timeout=1.0)))


def refused_listen(endpoint: Endpoint, subscription_id: Any, timeout: float = 10.0) -> Any:
    """The refusal of a listen request once Redis is down.

    Until the process's subscription listener notices the outage (its next
    read fails), a listen request is still accepted: its stream would get
    notifications once the listener is back. Such a stream is closed at once
    and the request sent again.
    """
    deadline = time.monotonic() + timeout
    while True:
        response = endpoint.post(listen_request({"toolsListChanged": True}, id=subscription_id), stream=True)
        if response.status_code != 200:
            return response
        response.close()
        if time.monotonic() > deadline:
            pytest.fail("listen requests were still accepted long after Redis stopped")
        time.sleep(0.05)


def test_redis_outage_in_process(listen_app: Callable[..., LiveApp], private_redis: RedisServer, closing: list[Any]) -> None:
    """Redis down: a new listen request is refused (503), a notification raises; the open stream lives on."""
    live = _redis_app(listen_app, private_redis)
    subscriptions = live.managers.subscriptions
    stream = open_listen(live.endpoint, {"toolsListChanged": True, "resourceSubscriptions": [MARKER]}, "before")
    closing.append(stream)
    private_redis.stop()
    response = refused_listen(live.endpoint, "during")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == INTERNAL_ERROR, response.text
    wait_until(lambda: len(subscriptions) == 1, timeout=4 * KEEPALIVE, what="only the first stream to be left")
    with pytest.raises(BackendUnavailableError):
        live.app.tools_list_changed()
    private_redis.start()
    deadline = time.monotonic() + 15
    while stream.events.empty():  # at most once: poke until the listener is back
        assert time.monotonic() < deadline, "no notification reached the stream after Redis came back"
        with contextlib.suppress(BackendUnavailableError):
            live.app.resource_updated(MARKER)
        time.sleep(0.1)
    time.sleep(0.3)
    while not stream.events.empty():
        assert received(stream, "before", 1) == [M]
    live.app.tools_list_changed()
    live.app.resource_updated(MARKER)
    expect(stream, "before", [T, M])
    assert not stream.ended.is_set()


def test_listen_refused_during_a_redis_outage_echoes_its_id(
    listen_app: Callable[..., LiveApp], private_redis: RedisServer
) -> None:
    live = _redis_app(listen_app, private_redis)
    stream = live.endpoint.open(listen_request({"toolsListChanged": True}, id="first"))  # starts the listener
    stream.close()
    private_redis.stop()
    response = refused_listen(live.endpoint, "during")
    assert response.status_code == 503, response.text
    assert response.json()["id"] == "during", response.text


# -- 2. the official client -----------------------------------------------------------------


def test_official_client_listens(listen_app: Callable[..., LiveApp]) -> None:
    """``Client.listen``: the ack's honoured subset, a list change and the watched URI's update; no other URI."""
    live = listen_app()
    watched = "test://static"
    subscriptions = live.managers.subscriptions

    async def main() -> None:
        with anyio.fail_after(CLIENT_TIMEOUT):
            async with (
                Client(live.url, mode=MODERN) as client,
                client.listen(tools_list_changed=True, resource_subscriptions=[watched]) as sub,
            ):
                assert sub.honored.tools_list_changed is True
                assert not sub.honored.prompts_list_changed and not sub.honored.resources_list_changed
                assert sub.honored.resource_subscriptions == [watched]
                assert len(subscriptions) == 1
                live.app.resource_updated("test://other")  # the client would let any URI through: the server must not
                live.app.prompts_list_changed()
                live.app.tools_list_changed()
                live.app.resource_updated(watched)
                events = sub.__aiter__()
                assert await events.__anext__() == ToolsListChanged()
                assert await events.__anext__() == ResourceUpdated(uri=watched)
                with anyio.move_on_after(0.5):
                    extra = await events.__anext__()
                    pytest.fail(f"an event that was not asked for: {extra!r}")
                assert (await client.list_tools()).tools  # the same client goes on with requests

    anyio.run(main)
    wait_until(lambda: len(subscriptions) == 0, timeout=4 * KEEPALIVE, what="the client's stream to go")


def test_official_client_sees_the_servers_graceful_close(listen_app: Callable[..., LiveApp]) -> None:
    """At shutdown the client gets the queued change, then the result: the loop ends, no SubscriptionLost."""
    live = listen_app()

    async def main() -> None:
        with anyio.fail_after(CLIENT_TIMEOUT):
            async with Client(live.url, mode=MODERN) as client, client.listen(tools_list_changed=True) as sub:
                live.app.tools_list_changed()
                closed = await anyio.to_thread.run_sync(live.app.close, 2)
                assert closed
                try:
                    events = [event async for event in sub]
                except SubscriptionLost as lost:
                    pytest.fail(f"the server's close was not graceful to the client: {lost}")
                assert events == [ToolsListChanged()]

    anyio.run(main)


# -- 3. any worker: gunicorn -k gevent -w 3, Redis ------------------------------------------------


#: The listen streams opened on every worker, by kind: their filters (each also watches MARKER).
KINDS: dict[str, dict[str, Any]] = {
    "tools": {"toolsListChanged": True},
    "note": {"resourceSubscriptions": [NOTE_URI]},
    "other": {"promptsListChanged": True, "resourcesListChanged": True, "resourceSubscriptions": ["note://other"]},
}


@dataclass
class Listener:
    stream: RawStream
    subscription_id: Any
    kind: str
    pid: int


@pytest.fixture(scope="module")
def cluster_redis() -> Iterator[RedisServer]:
    """A redis-server of this module only (the cluster's channel and keys are the example's defaults)."""
    binary = find_binary()
    if binary is None:
        pytest.fail(MISSING, pytrace=False)
    server = RedisServer(binary).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def cluster(cluster_redis: RedisServer) -> Iterator[Gunicorn]:
    """examples/server.py (tests/gunicorn_app.py) on 3 gevent workers, Redis managers incl. RedisSubscriptionManager."""
    server = Gunicorn(cluster_redis.url)
    yield server
    server.close()
    assert "Traceback" not in server.stderr(), server.stderr()


@pytest.fixture
def publisher(cluster_redis: RedisServer) -> Iterator[RedisSubscriptionManager]:
    """Publishes from the test process, as a cron job would (same Redis, the example's default prefix)."""
    manager = RedisSubscriptionManager(cluster_redis.url, socket_timeout=2.0)
    yield manager
    manager.close()


@pytest.fixture
def listeners(cluster: Gunicorn, closing: list[Any]) -> list[Listener]:
    """At least one listen stream of each kind on every worker (new connections until each worker holds each)."""
    endpoint = Endpoint(cluster.url)
    closing.append(endpoint)
    pids = {worker.pid for worker in _pinned(cluster, closing)}
    opened: list[Listener] = []
    attempts = 0
    for kind, wanted in KINDS.items():
        notifications = {**wanted, "resourceSubscriptions": [*wanted.get("resourceSubscriptions", []), MARKER]}
        while {listener.pid for listener in opened if listener.kind == kind} != pids:
            attempts += 1
            assert attempts <= 150, f"new connections never reached every worker {sorted(pids)}"
            subscription_id: Any = f"{kind}-{attempts}" if attempts % 2 else attempts  # str and int ids
            stream = open_listen(endpoint, notifications, subscription_id)
            closing.append(stream)
            pid = int(stream.headers["x-worker-pid"])
            if pid in {listener.pid for listener in opened if listener.kind == kind}:
                stream.close()  # this worker has one of this kind already
            else:
                opened.append(Listener(stream, subscription_id, kind, pid))
    return opened


def _pinned(cluster: Gunicorn, closing: list[Any]) -> list[Pinned]:
    workers = cluster.pinned()
    closing.extend(workers)
    assert len({worker.pid for worker in workers}) == 3
    return workers


def call_tool(worker: Pinned, name: str, arguments: dict[str, Any], id: Any) -> dict[str, Any]:
    """A stateless ``tools/call`` sent to *worker*; its result."""
    message = tool_call(name, arguments, id=id)
    headers = {header.replace("-", "_"): value for header, value in modern_headers(message).items()}
    response = worker.send("POST", message, **headers)
    assert response.status_code == 200, response.text
    answer = reply(response)
    assert "result" in answer, answer
    return answer["result"]


def expect_all(listeners: list[Listener], expected: dict[str, list[Seen]]) -> None:
    """Every listener got exactly what its kind expects (each list ends with the marker)."""
    for listener in listeners:
        got = received(listener.stream, listener.subscription_id, len(expected[listener.kind]))
        assert got == expected[listener.kind], (listener.kind, listener.pid, got)


def test_set_note_on_one_worker_reaches_note_listeners_on_every_worker(
    cluster: Gunicorn, listeners: list[Listener], publisher: RedisSubscriptionManager, closing: list[Any]
) -> None:
    worker = _pinned(cluster, closing)[0]
    assert {listener.pid for listener in listeners} == cluster.worker_pids()
    result = call_tool(worker, "set_note", {"text": "from one worker"}, id="note-1")
    assert result["content"][0]["text"] == "note updated", result
    publisher.resource_updated(MARKER)
    expect_all(listeners, {"tools": [M], "note": [U(NOTE_URI), M], "other": [M]})


def test_notify_script_reaches_every_listener_once(
    cluster_redis: RedisServer, listeners: list[Listener], publisher: RedisSubscriptionManager
) -> None:
    """examples/notify.py, a plain process: a tools list_changed broadcast, then a resource update."""
    done = run_notify(cluster_redis.url, "--broadcast", "--method", TOOLS_CHANGED)
    assert done.returncode == 0, done.stderr
    publisher.resource_updated(MARKER)
    expect_all(listeners, {"tools": [T, M], "note": [M], "other": [M]})
    done = run_notify(cluster_redis.url, "--resource-updated", NOTE_URI)
    assert done.returncode == 0, done.stderr
    done = run_notify(cluster_redis.url, "--broadcast", "--method", "notifications/message", "--params", '{"level": "info", "data": "x"}')
    assert done.returncode == 0, done.stderr
    publisher.resource_updated(MARKER)
    expect_all(listeners, {"tools": [M], "note": [U(NOTE_URI), M], "other": [M]})


def test_listen_streams_survive_a_redis_restart(
    cluster: Gunicorn,
    cluster_redis: RedisServer,
    listeners: list[Listener],
    publisher: RedisSubscriptionManager,
    closing: list[Any],
) -> None:
    pids = cluster.worker_pids()
    cluster_redis.restart()  # every process's listener loses its connection, then resubscribes with backoff
    # At most once: what is published before a listener is back is lost, so poke until every stream has a marker.
    waiting = list(listeners)
    deadline = time.monotonic() + 20
    while waiting:
        assert time.monotonic() < deadline, f"no notification reached {[(w.kind, w.pid) for w in waiting]} after the restart"
        with contextlib.suppress(BackendUnavailableError):
            publisher.resource_updated(MARKER)
        time.sleep(0.1)
        waiting = [listener for listener in waiting if listener.stream.events.empty()]
    time.sleep(0.3)  # the last pokes land
    for listener in listeners:
        assert not listener.stream.ended.is_set(), f"the {listener.kind} stream on {listener.pid} ended"
        got: list[Seen] = []
        while not listener.stream.events.empty():
            got += received(listener.stream, listener.subscription_id, 1)
        assert got and set(got) == {M}, got
    assert cluster.worker_pids() == pids  # the same processes, still serving
    result = call_tool(_pinned(cluster, closing)[1], "set_note", {"text": "after the restart"}, id=61)
    assert result["content"][0]["text"] == "note updated", result
    publisher.tools_list_changed()
    publisher.resource_updated(MARKER)
    expect_all(listeners, {"tools": [T, M], "note": [U(NOTE_URI), M], "other": [M]})


def test_sigkilled_worker_leaves_the_other_workers_listeners_working(
    cluster: Gunicorn, listeners: list[Listener], publisher: RedisSubscriptionManager, closing: list[Any]
) -> None:
    workers = _pinned(cluster, closing)
    victim = workers[0].pid
    assert victim is not None
    os.kill(victim, signal.SIGKILL)  # no cleanup at all
    dead = [listener for listener in listeners if listener.pid == victim]
    alive = [listener for listener in listeners if listener.pid != victim]
    assert dead and {listener.pid for listener in alive} == {worker.pid for worker in workers[1:]}
    for listener in dead:
        assert listener.stream.ended.wait(10), "the killed worker's stream stayed open"
    wait_until(lambda: not pid_alive(victim), what="the killed worker to be reaped")
    result = call_tool(workers[1], "set_note", {"text": "after the kill"}, id=71)
    assert result["content"][0]["text"] == "note updated", result
    publisher.tools_list_changed()
    publisher.resource_updated(MARKER)
    expect_all(alive, {"tools": [T, M], "note": [U(NOTE_URI), M], "other": [M]})
    # a new listen stream, on whichever worker takes it (gunicorn's replacement too), gets later notifications
    endpoint = Endpoint(cluster.url)
    closing.append(endpoint)
    late = open_listen(endpoint, {"toolsListChanged": True, "resourceSubscriptions": [MARKER]}, "late")
    closing.append(late)
    publisher.tools_list_changed()
    publisher.resource_updated(MARKER)
    expect(late, "late", [T, M])
    expect_all(alive, {"tools": [T, M], "note": [M], "other": [M]})

