"""A session's handler learns that its request was cancelled: ``notifications/cancelled``, DELETE, shutdown.

Real servers (threaded werkzeug) and real clients: raw HTTP with
``requests`` and the official ``mcp`` client. The handler's ``slow`` tool
works, polling ``ctx.wait_cancelled``, until it is cancelled or the test
releases it, and records which. Two apps on one set of managers (in memory,
or each on its own Redis managers) act as two workers: a ``DELETE`` on one
cancels a request running on the other; a ``notifications/cancelled`` that
lands on the other does not (documented: no per-request routing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import anyio
import httpx2
import pytest
import requests
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from session_manager import SessionManagers
from session_manager.flask import METHOD_NOT_FOUND, JsonRpcError, RequestContext
from session_manager.redis import RedisInfoSessionManager, RedisStreamSessionManager
from session_manager.wsgi import McpApp
from session_manager.wsgi._context import RunningRequests

from .conftest_redis import unique_prefix
from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    FlakyInfo,
    Harness,
    ThreadedServer,
    initialize_message,
    reply_of,
    serve,
    wait_until,
)

__all__ = ["serve"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

#: Seconds a slow call works unless cancelled or released: far longer than any test waits for it.
SLOW = 30.0
#: Seconds the handler sleeps between two looks at ``ctx.wait_cancelled``.
POLL = 0.02


class SlowTools:
    """A handler whose ``slow`` tool works until cancelled or released (by its ``tag``); records how each call ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._releases: dict[str, threading.Event] = {}
        self.started: set[str] = set()
        #: How each call ended, by tag: ``"cancelled"``, ``"released"`` or ``"timed out"``.
        self.outcome: dict[str, str] = {}

    def _release_of(self, tag: str) -> threading.Event:
        with self._lock:
            return self._releases.setdefault(tag, threading.Event())

    def release(self, *tags: str) -> None:
        for tag in tags:
            self._release_of(tag).set()

    def release_all(self) -> None:
        """Let every call go (the end of a test): none outlives it by :data:`SLOW` seconds."""
        with self._lock:
            releases = list(self._releases.values())
        for release in releases:
            release.set()

    def __call__(self, message: dict[str, Any], ctx: RequestContext) -> dict[str, Any] | None:
        method = message.get("method")
        if "id" not in message or method is None:
            return None
        if method in ("initialize", "ping"):
            return {}
        if method == "tools/list":  # the official client validates results against it
            return {"tools": [{"name": "slow", "inputSchema": {"type": "object"}}]}
        if method == "tools/call":
            return self.slow(str(message["params"]["arguments"]["tag"]), ctx)
        raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    def slow(self, tag: str, ctx: RequestContext) -> dict[str, Any]:
        release = self._release_of(tag)
        with self._lock:
            self.started.add(tag)
        deadline = time.monotonic() + SLOW
        while not ctx.wait_cancelled(POLL) and not release.is_set() and time.monotonic() < deadline:
            pass
        outcome = "cancelled" if ctx.cancelled else "released" if release.is_set() else "timed out"
        with self._lock:
            self.outcome[tag] = outcome
        return {"content": [{"type": "text", "text": outcome}]}

    def wait_started(self, *tags: str) -> None:
        wait_until(lambda: self.started.issuperset(tags), what=f"calls {tags} to start")

    def wait_outcome(self, tag: str) -> str:
        wait_until(lambda: tag in self.outcome, what=f"call {tag!r} to end")
        return self.outcome[tag]


def slow_call(tag: str, id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "slow", "arguments": {"tag": tag}}}


def cancel_of(params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}


def headers_of(sid: str, **extra: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Accept": ACCEPT_BOTH,
        "Mcp-Session-Id": sid,
        "MCP-Protocol-Version": LATEST,
    } | extra


class Client:
    """Raw HTTP to one MCP URL; each call on its own connection, slow calls on threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool = ThreadPoolExecutor(max_workers=8)

    def initialize(self, **headers: str) -> str:
        response = requests.post(
            self.url, json=initialize_message(), headers={"Accept": ACCEPT_BOTH} | headers, timeout=10
        )
        assert response.status_code == 200, response.text
        return response.headers["Mcp-Session-Id"]

    def post(self, message: dict[str, Any], sid: str, **headers: str) -> requests.Response:
        return requests.post(self.url, json=message, headers=headers_of(sid, **headers), timeout=SLOW + 10)

    def call(self, sid: str, tag: str, id: Any, **headers: str) -> Future[requests.Response]:
        """Start a slow call (its POST waits on a thread for the answer)."""
        return self._pool.submit(self.post, slow_call(tag, id), sid, **headers)

    def cancel(self, sid: str, params: Any, **headers: str) -> requests.Response:
        return self.post(cancel_of(params), sid, **headers)

    def delete(self, sid: str) -> requests.Response:
        return requests.delete(self.url, headers=headers_of(sid), timeout=10)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def text_of(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    return str(reply_of(response)["result"]["content"][0]["text"])


@pytest.fixture(params=[False, True], ids=["sse", "json"])
def live(request: pytest.FixtureRequest, serve: Callable[..., Harness]) -> Iterator[tuple[Harness, SlowTools, Client]]:
    """A live endpoint with :class:`SlowTools`, answering over SSE (the request on its own thread) or JSON (inline)."""
    tools = SlowTools()
    harness = serve(tools, json_response=request.param)
    client = Client(harness.url)
    yield harness, tools, client
    tools.release_all()
    client.close()


def registry_of(harness: Harness) -> RunningRequests:
    return harness.bp.transport._lifecycle.requests


# -- notifications/cancelled ------------------------------------------------------------


def test_notifications_cancelled_stops_the_request_it_names_and_its_response_still_comes(
    live: tuple[Harness, SlowTools, Client],
) -> None:
    harness, tools, client = live
    sid = client.initialize()
    call = client.call(sid, "a", 5)
    tools.wait_started("a")
    assert len(registry_of(harness)) == 1
    cancelled = client.cancel(sid, {"requestId": 5, "reason": "the user pressed stop"})
    assert cancelled.status_code == 202
    assert tools.wait_outcome("a") == "cancelled"
    assert text_of(call.result(10)) == "cancelled"  # the POST is answered all the same
    wait_until(lambda: len(registry_of(harness)) == 0, what="the registry to forget the request")


def test_a_cancel_reaches_only_the_request_it_names_in_its_own_session(live: tuple[Harness, SlowTools, Client]) -> None:
    _, tools, client = live
    first, second = client.initialize(), client.initialize()
    calls = {"a1": client.call(first, "a1", 1), "a2": client.call(first, "a2", 2), "b1": client.call(second, "b1", 1)}
    tools.wait_started("a1", "a2", "b1")
    assert client.cancel(second, {"requestId": 2}).status_code == 202  # id 2 runs in the first session only
    assert client.cancel(first, {"requestId": 1}).status_code == 202
    assert tools.wait_outcome("a1") == "cancelled"
    assert "a2" not in tools.outcome and "b1" not in tools.outcome  # the same id in another session: untouched
    tools.release("a2", "b1")
    assert {tag: text_of(call.result(10)) for tag, call in calls.items()} == {
        "a1": "cancelled",
        "a2": "released",
        "b1": "released",
    }


def test_a_cancel_from_another_principal_finds_no_session_and_cancels_nothing(serve: Callable[..., Harness]) -> None:
    from flask import request

    tools = SlowTools()
    harness = serve(tools, principal=lambda: request.headers.get("X-User"))
    client = Client(harness.url)
    try:
        sid = client.initialize(**{"X-User": "alice"})
        call = client.call(sid, "alice", 1, **{"X-User": "alice"})
        tools.wait_started("alice")
        assert client.cancel(sid, {"requestId": 1}, **{"X-User": "bob"}).status_code == 404  # bob's key is another
        assert client.delete(sid).status_code == 404  # no principal: neither is it this session
        assert "alice" not in tools.outcome
        tools.release("alice")
        assert text_of(call.result(10)) == "released"
    finally:
        tools.release_all()
        client.close()


def test_malformed_and_unknown_cancels_are_ignored_with_202(
    live: tuple[Harness, SlowTools, Client], caplog: pytest.LogCaptureFixture
) -> None:
    _, tools, client = live
    sid = client.initialize()
    call = client.call(sid, "a", 5)
    tools.wait_started("a")
    malformed: list[Any] = [
        {},
        {"requestId": None},
        {"requestId": [5]},
        {"requestId": {"id": 5}},
        {"requestId": True},
        {"requestId": 5.0},
        {"requestId": 5, "reason": 7},
    ]
    unknown = [{"requestId": "5"}, {"requestId": 6}, {"requestId": 0, "reason": "never sent"}]
    with caplog.at_level(logging.DEBUG, logger="session_manager.wsgi._context"):
        for params in malformed + unknown:
            assert client.cancel(sid, params).status_code == 202, params
        no_params = client.post({"jsonrpc": "2.0", "method": "notifications/cancelled"}, sid)
        assert no_params.status_code == 202
    ignored = [r.getMessage() for r in caplog.records if r.name == "session_manager.wsgi._context"]
    assert sum("malformed" in line for line in ignored) == len(malformed) + 1
    assert sum("no such request runs here" in line for line in ignored) == len(unknown)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "session_manager.wsgi._context")
    assert "a" not in tools.outcome
    tools.release("a")
    assert text_of(call.result(10)) == "released"


def test_the_official_client_cancels_a_call_it_gives_up_on(serve: Callable[..., Harness]) -> None:
    """Its read timeout makes the ``mcp`` client send ``notifications/cancelled``: the handler stops."""
    tools = SlowTools()
    harness = serve(tools)

    async def test() -> None:
        http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=60))
        async with (
            http,
            streamable_http_client(harness.url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            with pytest.raises(MCPError, match="timed out"):
                await session.call_tool("slow", {"tag": "official"}, read_timeout_seconds=0.5)
            await anyio.to_thread.run_sync(tools.wait_outcome, "official")

    try:
        anyio.run(test)
        assert tools.outcome["official"] == "cancelled"
    finally:
        tools.release_all()


# -- the session's end, the server's end --------------------------------------------------


def test_deleting_a_session_cancels_its_running_requests_and_no_other(live: tuple[Harness, SlowTools, Client]) -> None:
    harness, tools, client = live
    doomed, other = client.initialize(), client.initialize()
    calls = {"d1": client.call(doomed, "d1", 1), "d2": client.call(doomed, "d2", 2), "o1": client.call(other, "o1", 1)}
    tools.wait_started("d1", "d2", "o1")
    assert client.delete(doomed).status_code == 204
    assert tools.wait_outcome("d1") == tools.wait_outcome("d2") == "cancelled"
    assert "o1" not in tools.outcome
    tools.release("o1")
    assert text_of(calls["o1"].result(10)) == "released"
    for tag in ("d1", "d2"):
        assert calls[tag].result(10).status_code == 200  # answered, though nobody listens any more
    wait_until(lambda: len(registry_of(harness)) == 0, what="the registry to forget the requests")


def test_close_cancels_the_running_requests_so_handlers_finish_early(serve: Callable[..., Harness]) -> None:
    tools = SlowTools()
    harness = serve(tools)
    client = Client(harness.url)
    try:
        sid = client.initialize()
        call = client.call(sid, "a", 1)
        tools.wait_started("a")
        assert harness.bp.close(timeout=SLOW / 2) is True  # no handler left running: it did not wait for SLOW
        assert tools.outcome["a"] == "cancelled"
        assert call.result(10).status_code == 200  # the stream ended (with retry); the client would resume
        assert len(registry_of(harness)) == 0
    finally:
        tools.release_all()
        client.close()


def test_the_registry_is_empty_once_requests_end(live: tuple[Harness, SlowTools, Client]) -> None:
    """200 quick requests, and a few cancelled or deleted: nothing stays registered."""
    harness, tools, client = live
    sid = client.initialize()
    http = requests.Session()
    for n in range(200):
        response = http.post(harness.url, json={"jsonrpc": "2.0", "id": n, "method": "ping"}, headers=headers_of(sid))
        assert reply_of(response) == {"jsonrpc": "2.0", "id": n, "result": {}}
    http.close()
    calls = [client.call(sid, f"c{n}", f"c{n}") for n in range(3)]
    doomed = client.initialize()
    calls += [client.call(doomed, f"d{n}", n) for n in range(3)]
    tools.wait_started("c0", "c1", "c2", "d0", "d1", "d2")
    for n in range(3):
        assert client.cancel(sid, {"requestId": f"c{n}"}).status_code == 202
    assert client.delete(doomed).status_code == 204
    assert all(call.result(10).status_code == 200 for call in calls)
    assert set(tools.outcome.values()) == {"cancelled"}
    registry = registry_of(harness)
    wait_until(lambda: len(registry) == 0, what="the registry to be empty")
    assert registry._sessions == {}  # no empty per-session entry left behind either


class CountingFlakyInfo(FlakyInfo):
    """A :class:`FlakyInfo` that counts the lookups it refused while down."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def exists(self, session_id: str) -> bool:
        if self.down:
            self.refused += 1
        return super().exists(session_id)


def test_a_backend_outage_during_the_session_check_does_not_cancel_the_request(serve: Callable[..., Harness]) -> None:
    tools, info = SlowTools(), CountingFlakyInfo()
    harness = serve(tools, managers=SessionManagers(info=info))
    client = Client(harness.url)
    try:
        sid = client.initialize()
        call = client.call(sid, "a", 1)
        tools.wait_started("a")
        info.down = True
        wait_until(lambda: info.refused >= 1, what="the waiting handler to look its session up")
        time.sleep(1.5)  # one check a second while the backend answers; after a failure it backs off
        assert info.refused == 1
        info.down = False
        assert "a" not in tools.outcome  # an unreachable backend is no reason to give up
        tools.release("a")
        assert text_of(call.result(10)) == "released"
    finally:
        info.down = False
        tools.release_all()
        client.close()


# -- two workers ------------------------------------------------------------------------------


class TwoWorkers:
    """Two apps, A and B, sharing sessions: one set of in-memory managers, or each its own Redis managers."""

    def __init__(self, managers: Callable[[], SessionManagers], shared: bool) -> None:
        first = managers()
        self.tools = SlowTools()
        self.apps = [
            McpApp(self.tools, managers=first),
            McpApp(SlowTools(), managers=first if shared else managers()),
        ]
        self.servers = [ThreadedServer(app) for app in self.apps]
        self.a, self.b = (Client(f"http://127.0.0.1:{server.port}/mcp") for server in self.servers)

    def close(self) -> None:
        self.tools.release_all()
        for client in (self.a, self.b):
            client.close()
        for server in self.servers:
            server.close()
        for app in self.apps:
            app.close(timeout=5)


@pytest.fixture(params=["memory", "redis"])
def two_workers(request: pytest.FixtureRequest) -> Iterator[TwoWorkers]:
    if request.param == "memory":
        workers = TwoWorkers(SessionManagers, shared=True)
    else:
        url, prefix = request.getfixturevalue("redis_server").url, unique_prefix()
        workers = TwoWorkers(
            lambda: SessionManagers(
                RedisStreamSessionManager(url, prefix=prefix), RedisInfoSessionManager(url, prefix=prefix)
            ),
            shared=False,
        )
    yield workers
    workers.close()


def test_a_delete_on_another_worker_cancels_the_request_once_its_handler_asks(two_workers: TwoWorkers) -> None:
    workers = two_workers
    sid = workers.a.initialize()
    call = workers.a.call(sid, "a", 1)
    workers.tools.wait_started("a")
    assert workers.b.cancel(sid, {"requestId": 1}).status_code == 202  # lands on B: ignored there (documented)
    assert len(workers.apps[1]._lifecycle.requests) == 0 and "a" not in workers.tools.outcome
    assert workers.b.delete(sid).status_code == 204
    assert workers.tools.wait_outcome("a") == "cancelled"  # A looks the session up while its handler waits
    assert call.result(10).status_code == 200
