"""The official MCP client (``mcp`` 2.x) against the example server on real servers.

In-process: the example app on a threaded werkzeug server (so the tests can
look into its managers). Subprocesses: the example under ``gevent.pywsgi``
(``python examples/server.py``) and under ``gunicorn -k gevent``.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
import requests
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from examples.server import NOTE_URI, create_app
from session_manager import InMemoryInfoSessionManager, SessionManagers

from .flask_support import LATEST, PYTHON, REPO, ServerProcess, ThreadedServer, free_port, wait_until

# The 2025-era methods this transport serves are deprecated for 2026-07-28 clients only.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

TIMEOUT = 30


class RecordingInfo(InMemoryInfoSessionManager):
    """Remembers the ids of the sessions created, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[str] = []

    def create(self, session_id: str, **kwargs: Any) -> None:
        super().create(session_id, **kwargs)
        self.created.append(session_id)


class Example:
    """The example app on a threaded werkzeug server."""

    def __init__(self) -> None:
        self.info = RecordingInfo()
        self.managers = SessionManagers(info=self.info)
        self.app = create_app(self.managers, keepalive=0.5)
        self.bp = self.app.blueprints["mcp"]
        self.server = ThreadedServer(self.app)
        self.url = f"http://127.0.0.1:{self.server.port}/mcp"

    def close(self) -> None:
        self.managers.close()
        self.server.close()


@pytest.fixture
def example() -> Iterator[Example]:
    server = Example()
    yield server
    server.close()


class Peer:
    """A connected ClientSession and everything the server pushed to it."""

    def __init__(self, session: ClientSession, pushed: list[Any], logs: list[Any], sid: list[str]) -> None:
        self.session = session
        self.pushed = pushed
        self.logs = logs
        self._sid = sid

    @property
    def sid(self) -> str:
        return self._sid[0]

    def methods(self) -> list[str]:
        return [getattr(message, "method", None) for message in self.pushed]

    async def wait_for(self, method: str, count: int = 1) -> None:
        with anyio.fail_after(10):
            while self.methods().count(method) < count:
                await anyio.sleep(0.01)


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[Peer]:
    """The official client, initialized; the session id is captured from the response headers."""
    pushed: list[Any] = []
    logs: list[Any] = []
    sid: list[str] = []

    async def capture(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers and not sid:
            sid.append(response.headers["mcp-session-id"])

    async def on_message(message: Any) -> None:
        if not isinstance(message, Exception):
            pushed.append(message)

    async def on_log(params: Any) -> None:
        logs.append(params)

    http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=300), event_hooks={"response": [capture]})
    async with (
        http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, message_handler=on_message, logging_callback=on_log) as session,
    ):
        await session.initialize()
        yield Peer(session, pushed, logs, sid)


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(TIMEOUT):
            await test()

    anyio.run(bounded)


def raw_ping(url: str, sid: str) -> requests.Response:
    return requests.post(
        url,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Accept": "application/json, text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST},
        timeout=10,
    )


# -- against the in-process example ------------------------------------------------


def test_initialize_tools_resources_prompts(example: Example) -> None:
    async def test() -> None:
        async with connect(example.url) as peer:
            session = peer.session
            assert session.protocol_version == LATEST
            assert session.server_info.name == "session-manager-example"
            capabilities = session.server_capabilities
            assert capabilities.resources.subscribe is True and capabilities.logging is not None
            assert [t.name for t in (await session.list_tools()).tools] == ["echo", "slow_count", "set_note", "ask_note", "draft_note"]
            echoed = await session.call_tool("echo", {"text": "héllo"})
            assert echoed.content[0].text == "héllo" and not echoed.is_error
            resources = (await session.list_resources()).resources
            assert [str(r.uri) for r in resources] == [NOTE_URI]
            note = await session.read_resource(NOTE_URI)
            assert note.contents[0].text
            assert [p.name for p in (await session.list_prompts()).prompts] == ["summarize_note"]
            prompt = await session.get_prompt("summarize_note", {"style": "haiku"})
            assert "haiku" in prompt.messages[0].content.text
            await session.send_ping()
            info = example.info.get(peer.sid)
            assert info.protocol_version == LATEST and info.client_info["name"]

    run(test)


def test_progress_and_logs_arrive_before_the_result(example: Example) -> None:
    async def test() -> None:
        async with connect(example.url) as peer:
            progress: list[tuple[float, float | None, str | None]] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append((value, total, message))

            result = await peer.session.call_tool("slow_count", {"n": 4, "delay": 0.01}, progress_callback=on_progress)
            # Everything was received before call_tool returned.
            assert progress == [(float(i), 4.0, f"counted {i} of 4") for i in range(1, 5)]
            assert [(log.level, log.data) for log in peer.logs if log.level == "info"] == [("info", {"count": i}) for i in range(1, 5)]
            assert [log.logger for log in peer.logs] == ["slow_count"] * 8  # no level set: debug too
            assert result.content[0].text == "counted to 4"

    run(test)


def test_log_level_filtering(example: Example) -> None:
    async def test() -> None:
        async with connect(example.url) as peer:
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: example.managers.streams.has(peer.sid)))
            await peer.session.set_logging_level("info")
            assert example.info.get_log_level(peer.sid) == "info"
            await peer.session.call_tool("slow_count", {"n": 3, "delay": 0})
            assert [log.level for log in peer.logs] == ["info"] * 3
            await peer.session.set_logging_level("error")
            await peer.session.call_tool("slow_count", {"n": 3, "delay": 0})
            assert len(peer.logs) == 3
            # The fan-out API respects the level too.
            before = peer.methods().count("notifications/message")
            assert example.bp.log(peer.sid, "warning", "dropped") is False
            assert example.bp.log(peer.sid, "alert", "kept") is True
            await peer.wait_for("notifications/message", before + 1)
            assert [log.data for log in peer.logs][-1] == "kept"

    run(test)


def test_resource_updates_reach_only_subscribers(example: Example) -> None:
    async def test() -> None:
        async with connect(example.url) as subscriber, connect(example.url) as bystander:
            for peer in (subscriber, bystander):  # the client opens its GET stream after initialize
                await anyio.to_thread.run_sync(lambda p=peer: wait_until(lambda: example.managers.streams.has(p.sid)))
            await subscriber.session.subscribe_resource(NOTE_URI)
            assert example.info.get_subscriptions(NOTE_URI) == [subscriber.sid]
            await bystander.session.call_tool("set_note", {"text": "v2"})
            await subscriber.wait_for("notifications/resources/updated")
            updated = [m for m in subscriber.pushed if m.method == "notifications/resources/updated"]
            assert str(updated[0].params.uri) == NOTE_URI
            assert (await subscriber.session.read_resource(NOTE_URI)).contents[0].text == "v2"
            # A broadcast marker: per-stream FIFO, so anything earlier has arrived by then.
            example.bp.tools_list_changed()
            await bystander.wait_for("notifications/tools/list_changed")
            assert "notifications/resources/updated" not in bystander.methods()

            await subscriber.session.unsubscribe_resource(NOTE_URI)
            await subscriber.session.call_tool("set_note", {"text": "v3"})
            example.bp.prompts_list_changed()
            await subscriber.wait_for("notifications/prompts/list_changed")
            assert subscriber.methods().count("notifications/resources/updated") == 1

    run(test)


def test_session_deletion_then_404(example: Example) -> None:
    async def test() -> str:
        async with connect(example.url) as peer:
            sid = peer.sid
            assert example.info.exists(sid)
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: example.managers.streams.has(sid)))
        return sid

    sids: list[str] = []

    async def collect() -> None:
        sids.append(await test())

    run(collect)
    (sid,) = sids
    assert not example.info.exists(sid)  # the client sent DELETE on exit
    wait_until(lambda: not example.managers.streams.has(sid), what="the stream to end")
    response = raw_ping(example.url, sid)
    assert response.status_code == 404 and response.json()["error"]["code"] == -32001


def test_the_client_sees_a_deleted_session_as_terminated(example: Example) -> None:
    async def test() -> None:
        async with connect(example.url) as peer:
            example.managers.delete(peer.sid)
            with pytest.raises(Exception) as raised:
                await peer.session.send_ping()
            assert "terminated" in str(raised.value).lower() or "not found" in str(raised.value).lower()

    run(test)


# -- the example in its own process: gevent.pywsgi and gunicorn -k gevent --------------------


async def smoke(url: str) -> str:
    """A full round through the example; returns the (deleted) session id."""
    async with connect(url) as peer:
        progress: list[float] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        result = await peer.session.call_tool("slow_count", {"n": 3, "delay": 0.01}, progress_callback=on_progress)
        assert progress == [1.0, 2.0, 3.0] and result.content[0].text == "counted to 3"
        assert len(peer.logs) == 6
        await peer.session.subscribe_resource(NOTE_URI)
        # The GET stream opens in the background; poke until the update gets through.
        for attempt in range(50):
            await peer.session.call_tool("set_note", {"text": f"v{attempt}"})
            with anyio.move_on_after(0.2):
                await peer.wait_for("notifications/resources/updated")
            if "notifications/resources/updated" in peer.methods():
                break
        assert "notifications/resources/updated" in peer.methods()
        return peer.sid


def subprocess_round(server: ServerProcess) -> None:
    sids: list[str] = []

    async def test() -> None:
        sids.append(await smoke(server.url))

    try:
        run(test)
        assert raw_ping(server.url, sids[0]).status_code == 404
    finally:
        server.close()
    assert "Traceback" not in server.stderr(), server.stderr()


def test_example_under_gevent_pywsgi() -> None:
    port = free_port()
    subprocess_round(ServerProcess([PYTHON, "examples/server.py", "--port", str(port)], port))


def test_example_under_gunicorn_gevent() -> None:
    port = free_port()
    args = [PYTHON, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", f"127.0.0.1:{port}", "examples.server:create_app()"]
    subprocess_round(ServerProcess(args, port))


def test_example_help() -> None:
    output = subprocess.run([PYTHON, "examples/server.py", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert output.returncode == 0 and "--port" in output.stdout and "--host" in output.stdout
