"""The legacy HTTP+SSE transport (2024-11-05): LegacySseBlueprint beside McpBlueprint.

Real servers only: the official ``mcp`` SSE client and a raw client
(tests/legacy_support.py) against a threaded werkzeug server; for POSTs
that land on another process than the stream, two gevent.pywsgi processes
sharing a Redis, and the example on three gunicorn gevent workers (the
helpers of tests/gunicorn_support.py).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote

import anyio
import pytest
import requests
from flask import Blueprint, Flask
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from session_manager import SessionManagers
from session_manager.flask import LEGACY_PROTOCOL_VERSION, LegacySseBlueprint, McpBlueprint
from session_manager.redis import RedisInfoSessionManager

from .flask_support import (
    LATEST,
    PYTHON,
    FlakyInfo,
    RawStream,
    ServerProcess,
    TestHandler,
    free_port,
    new_token,
    wait_until,
)
from .legacy_support import LegacyClient, LegacyServer, ToolHandler
from .redis_server import RedisServer

# The 2025-era methods the client calls are deprecated for 2026-07-28 clients only.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

TIMEOUT = 30
CAPABILITIES = {"tools": {"listChanged": True}, "resources": {"subscribe": True}, "logging": {}}
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


@pytest.fixture
def serve() -> Iterator[Callable[..., LegacyServer]]:
    """Factory: ``serve(**options)`` starts both transports on one server (options go to McpBlueprint)."""
    servers: list[LegacyServer] = []

    def make(**options: Any) -> LegacyServer:
        options.setdefault("capabilities", CAPABILITIES)
        server = LegacyServer(**options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def server(serve: Callable[..., LegacyServer]) -> LegacyServer:
    return serve()


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(TIMEOUT):
            await test()

    anyio.run(bounded)


def assert_error(response: requests.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return body


def methods(messages: list[Any]) -> list[str | None]:
    return [getattr(m, "method", None) if not isinstance(m, dict) else m.get("method") for m in messages]


async def wait_for(pushed: list[Any], method: str, count: int = 1) -> None:
    with anyio.fail_after(10):
        while methods(pushed).count(method) < count:
            await anyio.sleep(0.01)


# -- the official client ---------------------------------------------------------


class Official:
    """The official SSE client, initialized, with what the server pushed to it."""

    def __init__(self) -> None:
        self.sids: list[str] = []
        self.pushed: list[Any] = []
        self.logs: list[Any] = []
        self.session: Any = None

    @property
    def sid(self) -> str:
        return self.sids[0]

    async def on_message(self, message: Any) -> None:
        if not isinstance(message, Exception):
            self.pushed.append(message)

    async def on_log(self, params: Any) -> None:
        self.logs.append(params)


@contextlib.asynccontextmanager
async def official(url: str) -> AsyncIterator[Official]:
    peer = Official()
    async with (
        sse_client(url, timeout=10, on_session_created=peer.sids.append) as (read, write),
        ClientSession(read, write, message_handler=peer.on_message, logging_callback=peer.on_log) as session,
    ):
        peer.session = session
        yield peer


def test_official_client_round_then_disconnect_ends_the_session(server: LegacyServer) -> None:
    info = server.managers.info
    sids: list[str] = []

    async def test() -> None:
        async with official(server.sse_url) as peer:
            session = peer.session
            result = await session.initialize()
            sids.append(peer.sid)
            assert result.protocol_version == LATEST  # what the client asked for
            stored = info.get(peer.sid)
            assert stored.protocol_version == LATEST and stored.client_info["name"] == "mcp"
            assert [t.name for t in (await session.list_tools()).tools] == ["echo", "count"]
            echoed = await session.call_tool("echo", {"text": "héllo"})
            assert echoed.content[0].text == "héllo" and not echoed.is_error

            progress: list[tuple[float, float | None, str | None]] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append((value, total, message))

            counted = await session.call_tool("count", {"n": 3}, progress_callback=on_progress)
            assert counted.content[0].text == "counted to 3"
            # Emitted on the stream before the response, so all here by now.
            assert progress == [(float(i), 3.0, f"{i} of 3") for i in (1, 2, 3)]
            assert [log.data for log in peer.logs] == [{"count": i} for i in (1, 2, 3)]

            await session.set_logging_level("warning")
            assert info.get_log_level(peer.sid) == "warning"
            await session.call_tool("count", {"n": 2})
            assert len(peer.logs) == 3  # info is below warning now
            await session.subscribe_resource("note://x")
            assert info.get_subscriptions("note://x") == [peer.sid]

            server.mcp.resource_updated("note://x")
            server.mcp.tools_list_changed()
            await wait_for(peer.pushed, "notifications/tools/list_changed")
            assert methods(peer.pushed).count("notifications/resources/updated") == 1
            assert server.mcp.log(peer.sid, "info", "dropped") is False
            assert server.mcp.log(peer.sid, "error", "kept") is True
            with anyio.fail_after(10):
                while len(peer.logs) < 4:
                    await anyio.sleep(0.01)
            assert peer.logs[-1].data == "kept"

    run(test)
    (sid,) = sids
    wait_until(lambda: not info.exists(sid), what="the session to end with its stream")
    assert not server.managers.streams.has(sid)
    assert info.get_subscriptions("note://x") == []
    server.handler.messages()
    response = requests.post(f"http://127.0.0.1:{server.port}/messages?sessionId={sid}", json=PING, timeout=10)
    assert_error(response, 404, -32001)
    assert server.handler.messages() == []  # checked before dispatch


def test_legacy_and_streamable_clients_both_receive_one_broadcast(server: LegacyServer) -> None:
    async def test() -> None:
        streamable: list[Any] = []

        async def on_message(message: Any) -> None:
            if not isinstance(message, Exception):
                streamable.append(message)

        async with (
            official(server.sse_url) as legacy,
            streamable_http_client(server.mcp_url) as (read, write),
            ClientSession(read, write, message_handler=on_message) as session,
        ):
            await legacy.session.initialize()
            await session.initialize()
            # The Streamable HTTP client opens its GET stream in the background.
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: len(server.managers.streams) == 2))
            server.mcp.tools_list_changed()
            await wait_for(legacy.pushed, "notifications/tools/list_changed")
            await wait_for(streamable, "notifications/tools/list_changed")
            server.legacy.prompts_list_changed()  # either blueprint is the notifier of both
            await wait_for(legacy.pushed, "notifications/prompts/list_changed")
            await wait_for(streamable, "notifications/prompts/list_changed")
            for pushed in (legacy.pushed, streamable):
                assert methods(pushed).count("notifications/tools/list_changed") == 1

    run(test)


# -- the raw protocol ------------------------------------------------------------------


def read_until(stream: RawStream, buffer: bytes, marker: bytes) -> bytes:
    chunks = stream.chunks()
    while marker not in buffer:
        buffer += next(chunks)
    return buffer


def test_wire_format(server: LegacyServer) -> None:
    stream = RawStream(server.port, "GET", "/sse", {"Accept": "text/event-stream"})
    try:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.headers["cache-control"] == "no-cache" and "Origin" in stream.headers["vary"]
        head = read_until(stream, b"", b"\n\n")
        assert head.startswith(b"event: endpoint\ndata: /messages?sessionId="), head
        endpoint = head.split(b"\n")[1][len(b"data: ") :].decode()
        url = f"http://127.0.0.1:{server.port}{endpoint}"
        response = requests.post(url, json=PING, timeout=10)
        assert response.status_code == 202 and response.text == "Accepted"
        assert "Mcp-Session-Id" not in response.headers
        rest = read_until(stream, head.split(b"\n\n", 1)[1], b"\n\n")
        while rest.startswith(b": ping\n\n"):  # keep-alive comments may come first
            rest = read_until(stream, rest[len(b": ping\n\n") :], b"\n\n")
        assert rest == b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n'
    finally:
        stream.close()


def test_initialize_negotiates_and_records(server: LegacyServer) -> None:
    client = server.connect()
    assert server.managers.info.exists(client.sid)
    assert server.managers.info.get_protocol_version(client.sid) is None  # until initialize
    reply = client.initialize(LEGACY_PROTOCOL_VERSION)
    result = reply["result"]
    assert result["protocolVersion"] == LEGACY_PROTOCOL_VERSION
    assert result["capabilities"] == CAPABILITIES and result["serverInfo"]["name"] == "session_manager"
    info = server.managers.info.get(client.sid)
    assert info.protocol_version == LEGACY_PROTOCOL_VERSION
    assert info.client_info == {"name": "legacy-tests", "version": "1.0"}
    assert info.client_capabilities == {"roots": {"listChanged": True}}
    ctx = client.request("test/ctx", id=7, params={"_meta": {"progressToken": "tok"}})["result"]
    assert ctx == {
        "session_id": client.sid,
        "protocol_version": LEGACY_PROTOCOL_VERSION,
        "client_info": {"name": "legacy-tests", "version": "1.0"},
        "client_capabilities": {"roots": {"listChanged": True}},
        "log_level": None,
        "request_id": 7,
        "method": "test/ctx",
        "progress_token": "tok",
    }
    other = server.connect()
    assert other.initialize("1999-01-01")["result"]["protocolVersion"] == LATEST


def test_handler_messages_travel_before_the_reply(server: LegacyServer) -> None:
    client = server.connect()
    client.initialize()
    reply = client.request("test/emit", {"count": 2, "log_levels": ["info"], "_meta": {"progressToken": "p"}}, id="e")
    assert reply["result"]["sent"] == [True] * 6
    got = [(m["method"], (m.get("params") or {}).get("seq")) for m in client.pushed]
    assert got == [
        ("notifications/test", 0), ("notifications/progress", None), ("notifications/message", None),
        ("notifications/test", 1), ("notifications/progress", None), ("notifications/message", None),
    ]  # fmt: skip


def test_post_is_answered_at_once_while_the_handler_runs(server: LegacyServer) -> None:
    client = server.connect()
    client.initialize()
    blocked = client.post({"jsonrpc": "2.0", "id": "b", "method": "test/block", "params": {"_meta": {"progressToken": 1}}})
    assert blocked.status_code == 202
    assert client.message()["params"]["message"] == "started"
    assert client.request("ping", id="p") == {"jsonrpc": "2.0", "id": "p", "result": {}}
    server.handler.release.set()
    assert client.reply_to("b")["result"] == {"released": True}


def test_notifications_and_responses_reach_the_handler(server: LegacyServer) -> None:
    client = server.connect()
    client.initialize()
    server.handler.messages()
    for message in ({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
                    {"jsonrpc": "2.0", "id": 5, "result": {}}):  # fmt: skip
        response = client.post(message)
        assert response.status_code == 202 and response.text == "Accepted"
    assert server.handler.messages() == [
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
        {"jsonrpc": "2.0", "id": 5, "result": {}},
    ]
    assert client.request("ping", id="marker")["result"] == {}
    assert client.pushed == []  # nothing was sent for them


def test_handler_errors_travel_on_the_stream(server: LegacyServer, caplog: pytest.LogCaptureFixture) -> None:
    client = server.connect()
    client.initialize()
    assert client.request("test/error", id=1)["error"] == {"code": -32050, "message": "custom failure", "data": {"detail": 42}}
    crashed = client.request("test/crash", id=2)
    assert crashed["error"] == {"code": -32603, "message": "Internal error"}
    assert "secret" not in json.dumps(crashed) and "secret internal detail" in caplog.text
    assert client.request("nope/nope", id=3)["error"]["code"] == -32601


def test_invalid_initialize_and_bookkeeping_params_are_errors_on_the_stream(server: LegacyServer) -> None:
    client = server.connect()
    bad = client.request("initialize", {"protocolVersion": 2024}, id="i")
    assert bad["error"]["code"] == -32602
    assert server.managers.info.get_protocol_version(client.sid) is None
    client.initialize()
    assert client.request("logging/setLevel", {"level": "loud"}, id=1)["error"]["code"] == -32602
    assert client.request("resources/subscribe", {"uri": ""}, id=2)["error"]["code"] == -32602
    assert client.request("resources/subscribe", {"uri": "reject://me"}, id=3)["error"]["code"] == -32002
    assert server.managers.info.get_log_level(client.sid) is None
    assert server.managers.info.get_subscriptions("reject://me") == []


def test_fan_out_reaches_legacy_sessions_like_any_other(server: LegacyServer) -> None:
    subscriber, bystander = server.connect(), server.connect()
    for client in (subscriber, bystander):
        client.initialize()
    subscriber.request("resources/subscribe", {"uri": "note://n"})
    subscriber.request("logging/setLevel", {"level": "error"}, id=2)
    assert server.managers.info.get_log_level(subscriber.sid) == "error"
    server.mcp.resource_updated("note://n")
    assert server.mcp.log(subscriber.sid, "info", "dropped") is False
    assert server.mcp.log(subscriber.sid, "critical", "kept") is True
    server.legacy.notify(bystander.sid, "notifications/test", {"to": "bystander"})
    server.mcp.tools_list_changed()
    assert [m["method"] for m in (subscriber.message(), subscriber.message(), subscriber.message())] == [
        "notifications/resources/updated", "notifications/message", "notifications/tools/list_changed",
    ]  # fmt: skip
    assert [m["method"] for m in (bystander.message(), bystander.message())] == [
        "notifications/test", "notifications/tools/list_changed",
    ]  # fmt: skip
    subscriber.request("resources/unsubscribe", {"uri": "note://n"}, id=3)
    assert server.managers.info.get_subscriptions("note://n") == []


def test_a_session_deleted_by_the_app_ends_its_stream(server: LegacyServer) -> None:
    client = server.connect()
    client.initialize()
    server.managers.delete(client.sid)
    assert client.stream.ended.wait(10)
    assert_error(client.post(PING), 404, -32001)


def test_a_stream_outliving_its_session_is_closed_by_the_next_post(server: LegacyServer) -> None:
    client = server.connect()
    server.managers.info.delete(client.sid)  # e.g. expired in Redis while the client was idle
    assert_error(client.post(PING), 404, -32001)
    assert client.stream.ended.wait(10)
    assert not server.managers.streams.has(client.sid)


def test_client_gone_ends_the_session_and_its_metadata(server: LegacyServer) -> None:
    client = server.connect()
    client.initialize()
    client.request("resources/subscribe", {"uri": "note://gone"})
    client.close()
    wait_until(lambda: not server.managers.info.exists(client.sid), what="the session to end")
    assert not server.managers.streams.has(client.sid)
    assert server.managers.info.get_subscriptions("note://gone") == []
    server.handler.messages()
    assert_error(client.post(PING, url=f"http://127.0.0.1:{server.port}{client.endpoint}"), 404, -32001)
    assert server.handler.messages() == []


def test_sessions_are_bound_to_their_principal(serve: Callable[..., LegacyServer]) -> None:
    from flask import request

    server = serve(principal=lambda: request.headers.get("X-User"))
    client = server.connect(headers={"X-User": "alice"})
    assert_error(client.post(PING, headers={"X-User": "mallory"}), 404, -32001)
    assert_error(client.post(PING), 404, -32001)  # no principal: another key
    response = client.post({"jsonrpc": "2.0", "id": 9, "method": "test/ctx"}, headers={"X-User": "alice"})
    assert response.status_code == 202
    assert client.reply_to(9)["result"]["session_id"] == f"alice:{client.sid}"


# -- every error status ---------------------------------------------------------------


def messages_url(server: LegacyServer, query: str = "") -> str:
    return f"http://127.0.0.1:{server.port}/messages{query}"


@pytest.mark.parametrize("query", ["", "?sessionId=", "?session_id=abc"])
def test_missing_session_id_is_400(server: LegacyServer, query: str) -> None:
    server.handler.messages()
    body = assert_error(requests.post(messages_url(server, query), json=PING, timeout=10), 400, -32600)
    assert "sessionId" in body["error"]["message"]
    assert server.handler.messages() == []


@pytest.mark.parametrize("sid", ["nope", new_token(), "a" * 43 + ":x"])
def test_unknown_session_is_404_and_runs_nothing(server: LegacyServer, sid: str) -> None:
    for message in (PING, {"jsonrpc": "2.0", "method": "notifications/initialized"}):
        response = requests.post(messages_url(server, "?sessionId=" + quote(sid)), json=message, timeout=10)
        assert_error(response, 404, -32001)
    assert server.handler.messages() == []


def test_body_checks(serve: Callable[..., LegacyServer]) -> None:
    server = serve(max_body_size=1000)
    client = server.connect()
    server.handler.messages()
    assert_error(client.post(PING, headers={"Content-Type": "text/plain"}), 415, -32000)
    assert_error(client.post(b'{"jsonrpc": "2.0", "pad": "' + b"x" * 2000 + b'"}'), 413, -32000)
    assert_error(client.post(b"{not json"), 400, -32700)
    assert_error(client.post([PING]), 400, -32600)  # no batches
    assert_error(client.post({"jsonrpc": "1.0", "id": 1, "method": "ping"}), 400, -32600)
    assert_error(client.post({"jsonrpc": "2.0", "method": "initialize", "params": {}}), 400, -32600)  # not a request
    assert server.handler.messages() == []
    assert client.request("ping", id="still-fine")["result"] == {}


def test_origin_and_host_are_checked(server: LegacyServer) -> None:
    for headers in ({"Origin": "http://evil.example"}, {"Host": "evil.example"}):
        response = requests.get(server.sse_url, headers=headers, timeout=10)
        assert_error(response, 403, -32000)
    assert len(server.managers.info) == 0  # type: ignore[arg-type]
    client = server.connect(headers={"Origin": f"http://localhost:{server.port}"})
    for headers in ({"Origin": "http://evil.example"}, {"Host": "evil.example"}):
        assert_error(client.post(PING, headers=headers), 403, -32000)
    assert client.post(PING, headers={"Origin": "http://127.0.0.1:1234"}).status_code == 202


def test_the_stream_needs_to_accept_sse(server: LegacyServer) -> None:
    assert_error(requests.get(server.sse_url, headers={"Accept": "application/json"}, timeout=10), 406, -32000)
    assert len(server.managers.info) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PROPFIND"])
def test_other_methods_on_the_stream_url_are_405(server: LegacyServer, method: str) -> None:
    response = requests.request(method, server.sse_url, timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "GET"
    if method != "HEAD":
        assert_error(response, 405, -32000)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS", "BREW"])
def test_other_methods_on_the_messages_url_are_405(server: LegacyServer, method: str) -> None:
    response = requests.request(method, messages_url(server, "?sessionId=x"), timeout=10)
    assert_error(response, 405, -32000)
    assert response.headers["Allow"] == "POST"


def test_backend_down_is_503(serve: Callable[..., LegacyServer]) -> None:
    info = FlakyInfo()
    server = serve(managers=SessionManagers(info=info))
    client = server.connect()
    info.down = True
    assert_error(requests.get(server.sse_url, timeout=10), 503, -32603)
    assert_error(client.post(PING), 503, -32603)
    info.down = False
    assert len(server.managers.streams) == 1  # type: ignore[arg-type]
    assert client.request("ping", id="back")["result"] == {}


# -- mounting and options ------------------------------------------------------------


def test_prefix_and_paths(serve: Callable[..., LegacyServer]) -> None:
    server = serve(legacy_prefix="/legacy")
    client = server.connect("/legacy/sse")
    assert client.endpoint == f"/legacy/messages?sessionId={client.sid}"
    assert client.request("ping", id=1)["result"] == {}
    assert requests.get(server.sse_url, timeout=10).status_code == 404


def test_endpoint_url_under_a_script_root_and_nested_blueprints() -> None:
    app = Flask(__name__)
    parent = Blueprint("api", __name__, url_prefix="/api")
    parent.register_blueprint(LegacySseBlueprint(TestHandler(), sse_path="/events", messages_path="/rpc"))
    app.register_blueprint(parent)
    response = app.test_client().get("/api/events", base_url="http://localhost/root", buffered=False)
    try:
        first = next(response.iter_encoded())
    finally:
        response.close()
    assert first.startswith(b"event: endpoint\ndata: /root/api/rpc?sessionId="), first


def test_options_are_checked() -> None:
    with pytest.raises(TypeError):
        LegacySseBlueprint("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LegacySseBlueprint(TestHandler(), sse_path="/same", messages_path="/same")
    with pytest.raises(ValueError):
        LegacySseBlueprint(TestHandler(), sse_path="sse")
    with pytest.raises(ValueError):
        LegacySseBlueprint(TestHandler(), keepalive=0)


def test_the_legacy_blueprint_shares_the_streamable_ones_options() -> None:
    managers = SessionManagers()
    mcp = McpBlueprint(ToolHandler(), managers=managers, server_info={"name": "both", "version": "2"}, instructions="hi")
    legacy = mcp.legacy_sse_blueprint(url_prefix="/old")
    assert legacy.managers is managers and legacy.name == "mcp_legacy" and legacy.url_prefix == "/old"
    core = legacy.transport.options
    assert core.server_info == {"name": "both", "version": "2"} and core.instructions == "hi"


# -- several processes on Redis ---------------------------------------------------------


def test_posts_to_another_process_than_the_stream(redis_server: RedisServer, redis_prefix: str) -> None:
    ports = [free_port(), free_port()]
    args = ["-m", "tests.legacy_support", "--redis", redis_server.url, "--prefix", redis_prefix]
    servers = [ServerProcess([PYTHON, *args, "--port", str(port)], port) for port in ports]
    info = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix)
    client: LegacyClient | None = None
    try:
        client = LegacyClient(ports[0], post_port=ports[1])  # stream on the first, POSTs to the second
        assert info.exists(client.sid)
        assert client.initialize()["result"]["protocolVersion"] == LEGACY_PROTOCOL_VERSION
        assert info.get(client.sid).client_info == {"name": "legacy-tests", "version": "1.0"}
        reply = client.request("tools/call", {"name": "count", "arguments": {"n": 2}, "_meta": {"progressToken": "t"}}, id=2)
        assert reply["result"]["content"][0]["text"] == "counted to 2"
        assert [m["method"] for m in client.pushed] == ["notifications/progress", "notifications/message"] * 2
        client.request("logging/setLevel", {"level": "debug"}, id=3)
        assert info.get_log_level(client.sid) == "debug"
        assert requests.post(f"http://127.0.0.1:{ports[1]}/admin/broadcast", timeout=10).text == "sent"
        assert client.message()["method"] == "notifications/tools/list_changed"
        client.close()
        wait_until(lambda: not info.exists(client.sid), what="the session to end with its stream")  # type: ignore[union-attr]
        assert_error(client.post(PING), 404, -32001)
    finally:
        if client is not None:
            client.close()
        info.close()
        for server in servers:
            server.close()
    for server in servers:
        assert "Traceback" not in server.stderr(), server.stderr()


def test_gunicorn_workers_serve_posts_for_a_stream_held_by_another(private_redis: RedisServer) -> None:
    """The example on three gunicorn gevent workers and Redis: POSTs pinned to workers that do not hold the stream."""
    from examples.server import NOTE_URI

    from .gunicorn_support import Gunicorn, Pinned

    cluster = Gunicorn(private_redis.url)  # tests/gunicorn_app.py: the example, X-Worker-Pid on every response
    info = RedisInfoSessionManager(private_redis.url)  # the example's default prefix
    workers: list[Pinned] = []
    client: LegacyClient | None = None
    try:
        workers = cluster.pinned()
        client = LegacyClient(cluster.port)
        holder = int(client.stream.headers["x-worker-pid"])
        first, second = [worker for worker in workers if worker.pid != holder]

        def post_on(worker: Pinned, method: str, params: dict[str, Any], id: int) -> dict[str, Any]:
            message = {"jsonrpc": "2.0", "id": id, "method": method, "params": params}
            response = client.post(message, via=worker.http)  # type: ignore[union-attr]
            assert response.status_code == 202 and int(response.headers["X-Worker-Pid"]) == worker.pid
            return client.reply_to(id)  # type: ignore[union-attr]

        assert client.initialize(via=first.http)["result"]["serverInfo"]["name"] == "session-manager-example"
        assert info.get(client.sid).protocol_version == LEGACY_PROTOCOL_VERSION
        counted = post_on(second, "tools/call", {"name": "slow_count", "arguments": {"n": 2, "delay": 0}, "_meta": {"progressToken": "t"}}, 2)
        assert counted["result"]["content"][0]["text"] == "counted to 2"
        # Per step: progress, an info log and a debug log (no level set), all before the reply.
        assert [m["method"] for m in client.pushed] == ["notifications/progress"] + ["notifications/message"] * 2 + [
            "notifications/progress"
        ] + ["notifications/message"] * 2
        post_on(first, "resources/subscribe", {"uri": NOTE_URI}, 3)
        assert info.get_subscriptions(NOTE_URI) == [client.sid]
        post_on(second, "tools/call", {"name": "set_note", "arguments": {"text": "from another worker"}}, 4)
        assert "notifications/resources/updated" in [m["method"] for m in client.pushed]
        client.close()
        wait_until(lambda: not info.exists(client.sid), what="the session to end with its stream")  # type: ignore[union-attr]
        response = client.post(PING, via=first.http)
        assert_error(response, 404, -32001)
    finally:
        if client is not None:
            client.close()
        for worker in workers:
            worker.close()
        info.close()
        cluster.close()
    assert "Traceback" not in cluster.stderr(), cluster.stderr()


def test_a_reply_larger_than_the_stream_holds_becomes_an_error_with_its_id(serve: Callable[..., LegacyServer]) -> None:
    """As on Streamable HTTP: the client gets an answer, not a stream that waits forever."""
    server = serve(stream_max_bytes=200_000)
    client = server.connect()
    client.initialize()
    reply = client.request("tools/call", {"name": "echo", "arguments": {"text": "x" * 300_000}}, id="big")
    assert reply["id"] == "big" and reply["error"]["code"] == -32603
    assert "200000" in reply["error"]["message"]
    assert client.request("ping", id="p") == {"jsonrpc": "2.0", "id": "p", "result": {}}
