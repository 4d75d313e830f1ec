"""One logical MCP server on several gunicorn gevent workers, through Redis: real processes end to end.

``gunicorn -k gevent -w 3`` serves examples/server.py's app with Redis
managers (tests/gunicorn_app.py: the example plus an ``X-Worker-Pid`` header
and the suite's small liveness bounds), with no sticky routing. Requests are
sent to chosen workers over pinned keep-alive connections, or spread by the
official client opening a connection per request (tests/gunicorn_support.py).
Faults: a SIGKILLed worker, a Redis restart, Redis down.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from mcp import types

from examples.server import NOTE_URI
from session_manager.redis import RedisEventStore, RedisStreamSessionManager
from session_manager.wsgi._session_ids import mint_session_id

from .conftest import Reader
from .conftest_redis import TEST_LIVENESS_TTL
from .flask_support import LATEST, PYTHON, REPO, RawStream, events_of, free_port, initialize_message, wait_until
from .gunicorn_app import WORKER_HEADER
from .gunicorn_support import (
    EXAMPLE_APP,
    EXAMPLE_CONFIG,
    REDIS_URL_ENV,
    Gunicorn,
    Pinned,
    connect_spread,
    open_stream,
    pid_alive,
    run_notify,
    stream_view,
)
from .redis_server import RedisServer
from .resume_support import stream_readers
from .sse_parser import iter_events
from .test_flask_client import run

# The 2025-era methods this transport serves are deprecated for 2026-07-28 clients only.
pytestmark = [pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning"), pytest.mark.timeout(120)]

#: Tries at getting a request onto another worker than a given one, when gunicorn picks (1/3 miss each).
ATTEMPTS = 30
#: How long after a SIGKILL the worker's streams may still count: the TTL plus one heartbeat of slack.
LIVENESS_BOUND = TEST_LIVENESS_TTL + 1.0


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[Gunicorn]:
    """Three workers on the run's Redis (the example's default prefix, used by no other test)."""
    server = Gunicorn(redis_server.url)
    yield server
    server.close()
    assert "Traceback" not in server.stderr(), server.stderr()


@pytest.fixture
def private_cluster(private_redis: RedisServer) -> Iterator[tuple[Gunicorn, RedisServer]]:
    """Three workers on a Redis of this test only (free to kill, restart or stop)."""
    server = Gunicorn(private_redis.url)
    yield server, private_redis
    server.close()


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Things with ``close()`` (streams, pinned connections) closed after the test."""
    things: list[Any] = []
    yield things
    for thing in things:
        thing.close()


def methods_of(response: Any) -> list[tuple[str | None, Any]]:
    """(method, level) of every message in a POST's SSE answer; method None for the reply."""
    out = []
    for event in events_of(response):
        message = json.loads(event.data)
        out.append((message.get("method"), (message.get("params") or {}).get("level")))
    return out


def ping_status(worker: Pinned, sid: str) -> tuple[int, dict[str, Any]]:
    response = worker.request(sid, "ping")
    return response.status_code, response.json() if response.status_code != 200 else {}


# -- one server on three workers ---------------------------------------------------


def test_official_client_across_workers(cluster: Gunicorn) -> None:
    """initialize, GET and POSTs spread over the workers; everything of the Flask issue still holds."""
    sids: list[str] = []

    async def test() -> None:
        async with connect_spread(cluster.url) as (peer, served):
            sids.append(peer.sid)
            # Progress and logs ride the POST's own answer, whichever worker serves it.
            progress: list[float] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(value)

            result = await peer.session.call_tool("slow_count", {"n": 3, "delay": 0}, progress_callback=on_progress)
            assert progress == [1.0, 2.0, 3.0] and result.content[0].text == "counted to 3"
            assert [log.level for log in peer.logs] == ["info", "debug"] * 3

            # The log level set on one worker is honoured on the others.
            await peer.session.set_logging_level("info")
            level_pid = served.last("POST", "logging/setLevel")
            for _ in range(ATTEMPTS):
                before = len(peer.logs)
                await peer.session.call_tool("slow_count", {"n": 2, "delay": 0})
                assert [log.level for log in peer.logs[before:]] == ["info", "info"]
                if served.last("POST", "tools/call") != level_pid:
                    break
                await anyio.sleep(0.02)  # let the worker that just served go idle: the next accept is anyone's
            else:
                pytest.fail(f"no tools/call reached a worker other than {level_pid}: {served.records}")

            # The client opens its GET stream in the background; its head means it is registered.
            with anyio.fail_after(10):
                while served.last("GET") is None:
                    await anyio.sleep(0.01)
            stream_pid = served.last("GET")
            await peer.session.subscribe_resource(NOTE_URI)
            for attempt in range(1, ATTEMPTS + 1):
                await peer.session.call_tool("set_note", {"text": f"v{attempt}"})
                await peer.wait_for("notifications/resources/updated", attempt)  # each one arrives
                if served.last("POST", "tools/call") != stream_pid:
                    break
                await anyio.sleep(0.02)
            else:
                pytest.fail(f"no set_note reached a worker other than the stream's {stream_pid}")
            assert peer.methods().count("notifications/resources/updated") == attempt
            assert len(served.pids()) >= 2, served.records

    run(test)
    # The client sent DELETE on exit: the session is gone on every worker.
    workers = cluster.pinned()
    try:
        for worker in workers:
            status, body = ping_status(worker, sids[0])
            assert status == 404 and body["error"]["code"] == -32001, (worker, status, body)
    finally:
        for worker in workers:
            worker.close()


def test_sessions_and_streams_are_shared_by_every_worker(
    cluster: Gunicorn, redis_server: RedisServer, closing: list[Any]
) -> None:
    workers = cluster.pinned()
    closing.extend(workers)
    sid = workers[0].initialize()
    stream, holder = open_stream(cluster.port, sid)
    closing.append(stream)
    at_holder = next(w for w in workers if w.pid == holder)
    elsewhere = [w for w in workers if w.pid != holder]

    # has() sees a stream held by another process: a second GET there is a conflict.
    response = elsewhere[0].send("GET", sid=sid, Accept="text/event-stream")
    assert response.status_code == 409, response.text
    response.close()

    # A log level set on one worker is honoured on every worker.
    workers[0].result(sid, "logging/setLevel", {"level": "info"})
    for worker in workers:
        response = worker.request(sid, "tools/call", {"name": "slow_count", "arguments": {"n": 2, "delay": 0}, "_meta": {"progressToken": 7}})
        progress, info = ("notifications/progress", None), ("notifications/message", "info")
        assert methods_of(response) == [progress, info, progress, info, (None, None)]

    # Subscribed on one worker, changed on another: the update reaches the stream held by a third.
    at_holder.result(sid, "resources/subscribe", {"uri": NOTE_URI})
    elsewhere[0].result(sid, "tools/call", {"name": "set_note", "arguments": {"text": "from another worker"}})
    assert stream.take(1) == [{"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": NOTE_URI}}]
    assert elsewhere[1].result(sid, "resources/read", {"uri": NOTE_URI})["contents"][0]["text"] == "from another worker"

    # DELETE on a worker that does not hold the stream: the stream ends, and the session is 404 everywhere.
    assert elsewhere[1].send("DELETE", sid=sid).status_code == 204
    assert stream.ended.wait(10), "the stream held by another worker did not end"
    for worker in workers:
        status, body = ping_status(worker, sid)
        assert status == 404 and body["error"]["code"] == -32001, (worker, status, body)
    with stream_view(redis_server.url) as streams:
        assert not streams.has(sid)


def test_notify_script_reaches_streams_of_the_example_on_gunicorn(private_redis: RedisServer, closing: list[Any]) -> None:
    """The example as documented: examples/gunicorn.conf.py, the factory, MCP_REDIS_URL; notify.py as a process."""
    # -w 3 overrides the file's 4. A graceful timeout well above the ~1 s the stop takes: a worker still there at its
    # end is SIGKILLed (no "Worker exiting"), so the check below does not race gunicorn's 1 s polling.
    # The example as users run it: its config's worker class (session_manager.gunicorn.GeventWorker).
    server = Gunicorn(private_redis.url, app=EXAMPLE_APP, config=EXAMPLE_CONFIG, graceful_timeout=5, worker_class=None)
    closing.append(server)
    worker = Pinned(server.url)
    closing.append(worker)
    sid, other = worker.initialize(), worker.initialize()
    worker.result(sid, "resources/subscribe", {"uri": NOTE_URI})
    streams = {}
    for session in (sid, other):
        streams[session] = stream = RawStream(
            server.port, "GET", "/mcp", {"Accept": "text/event-stream", "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        )
        closing.append(stream)
        assert stream.status == 200
        stream.start_reader()
    assert len(server.worker_pids()) == 3

    params = {"level": "info", "data": "from a script"}
    wait_until(lambda: bool(streams[sid].parser.last_event_id), what="the priming event")
    primed = streams[sid].parser.last_event_id
    done = run_notify(private_redis.url, "--session", sid, "--method", "notifications/message", "--params", json.dumps(params))
    assert done.returncode == 0 and "sent to 1 session" in done.stdout, done.stderr
    assert streams[sid].take(1) == [{"jsonrpc": "2.0", "method": "notifications/message", "params": params}]
    # Stored like the server's own messages (the same event store): it has an id, and a resume replays it.
    stored = streams[sid].parser.last_event_id
    assert stored != primed and stored.startswith("g."), (primed, stored)
    resumed = RawStream(
        server.port, "GET", "/mcp",
        {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25", "Last-Event-ID": primed},
    )
    closing.append(resumed)
    assert resumed.status == 200
    resumed.start_reader()
    assert resumed.take(1) == [{"jsonrpc": "2.0", "method": "notifications/message", "params": params}]
    assert streams[sid].ended.wait(10)  # the resume took the session's stream over
    streams[sid].close()  # an idle keep-alive connection would hold its worker at the stop below
    resumed.close()
    streams[sid] = resumed_stream = RawStream(
        server.port, "GET", "/mcp",
        {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25", "Last-Event-ID": stored},
    )
    closing.append(resumed_stream)
    assert resumed_stream.status == 200
    resumed_stream.start_reader()

    done = run_notify(private_redis.url, "--resource-updated", NOTE_URI)
    assert done.returncode == 0, done.stderr
    done = run_notify(private_redis.url, "--broadcast", "--method", "notifications/tools/list_changed")
    assert done.returncode == 0, done.stderr
    updated = {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": NOTE_URI}}
    changed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    assert streams[sid].take(2) == [updated, changed]  # FIFO per stream
    assert streams[other].take(1) == [changed]  # not subscribed: the broadcast only

    # A session without a stream: the script says it will miss it, and still succeeds.
    done = run_notify(private_redis.url, "--session", worker.initialize(), "--method", "notifications/test")
    assert done.returncode == 0 and "no open stream" in done.stderr, done.stderr
    # Usage errors are the script's, not tracebacks.
    done = run_notify(private_redis.url, "--broadcast")
    assert done.returncode == 2 and "--method is required" in done.stderr

    # A graceful stop: the config's SIGTERM handler ends the streams at once, so every worker exits by itself,
    # before the graceful timeout (else gunicorn SIGKILLs it: no "Worker exiting" line), and the streams' keys
    # go with them (else they would count as open for the 30 s default liveness TTL). An idle keep-alive
    # connection holds a gevent worker until the client closes it (or `keepalive` passes), as any client's
    # would: the test closes its own, as soon as each is idle.
    workers = server.worker_pids()
    worker.close()
    server.stop()
    for stream in streams.values():
        assert stream.ended.wait(10), "SIGTERM did not end the stream"
        stream.close()
    server.close()
    log = server.full_stderr()
    assert [pid for pid in workers if f"Worker exiting (pid: {pid})" not in log] == [], log
    assert "Traceback" not in log and "graceful timeout" not in log, log
    with stream_view(private_redis.url) as view:
        assert not view.has(sid) and not view.has(other)


def message_args(params: dict[str, Any]) -> list[str]:
    return ["--method", "notifications/message", "--params", json.dumps(params)]


def test_notify_script_sends_to_a_session_id_starting_with_a_dash(private_redis: RedisServer) -> None:
    """Ids minted before issue 14 could start with "-": notify.py takes them, as a separate word or after "="."""
    sid = "-" + mint_session_id()[1:]
    # A stream of that id, held here, on the default prefix and with the event store (as the example's and the script's).
    streams = RedisStreamSessionManager(private_redis.url, event_store=RedisEventStore(private_redis.url))
    with streams, stream_readers(Reader) as open_on:
        reader = open_on(streams, sid)
        assert reader.take(1) == [""]  # the priming event (an id, no data): the stream is resumable
        for words in (["--session", sid], [f"--session={sid}"]):
            params = {"level": "info", "data": words[0]}
            done = run_notify(private_redis.url, *words, *message_args(params))
            # No "no open stream" warning: the script checked the id it was given.
            assert done.returncode == 0 and "sent to 1 session" in done.stdout and done.stderr == "", done.stderr
            assert reader.take_json(1) == [{"jsonrpc": "2.0", "method": "notifications/message", "params": params}]


def test_notify_script_without_the_event_store_is_refused_where_the_server_stores(
    private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``MCP_EVENTS=0`` for the script only: it would send messages the logs miss, so it refuses and says why."""
    sid = mint_session_id()
    streams = RedisStreamSessionManager(private_redis.url, event_store=RedisEventStore(private_redis.url))
    with streams, stream_readers(Reader) as open_on:
        reader = open_on(streams, sid)
        assert reader.take(1) == [""]  # primed: the server stores events on the default prefix
        params = {"level": "info", "data": "refused"}
        monkeypatch.setenv("MCP_EVENTS", "0")
        for target in (["--session", sid], ["--broadcast"]):
            done = run_notify(private_redis.url, *target, *message_args(params))
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert "stores events on prefix 'mcp:'" in done.stderr and "MCP_EVENTS" in done.stderr, done.stderr
        monkeypatch.delenv("MCP_EVENTS")
        params = {"level": "info", "data": "stored"}
        done = run_notify(private_redis.url, "--session", sid, *message_args(params))
        assert done.returncode == 0, done.stderr
        # Nothing of the refused ones came: the first message is the one sent with the store.
        assert reader.take_json(1) == [{"jsonrpc": "2.0", "method": "notifications/message", "params": params}]


def test_example_config_takes_the_graceful_timeout_of_the_command_line(private_redis: RedisServer) -> None:
    """--graceful-timeout 5 (not the file's 10) bounds the wait for tool calls on SIGTERM: 5 - 2 s, not 8 s."""
    server = Gunicorn(private_redis.url, workers=1, app=EXAMPLE_APP, config=EXAMPLE_CONFIG, graceful_timeout=5)
    try:
        probe = Pinned(server.url)
        probe.probe()  # served: the worker has loaded the app, so post_worker_init has set its SIGTERM handler
        probe.close()
        server.stop()
    finally:
        server.close()
    log = server.full_stderr()
    assert "Graceful stop: MCP streams end now, tool calls get up to 3 s" in log, log
    assert "Traceback" not in log and "graceful timeout" not in log and "still running" not in log, log


def test_example_config_refuses_several_workers_without_redis() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop(REDIS_URL_ENV, None)
    done = subprocess.run(
        [PYTHON, "-m", "gunicorn", "-c", EXAMPLE_CONFIG, "-b", f"127.0.0.1:{free_port()}", EXAMPLE_APP],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"set {REDIS_URL_ENV}=redis://" in done.stderr and "notifications are lost" in done.stderr


# -- faults -------------------------------------------------------------------------


def test_sigkilled_worker_stops_holding_its_stream_within_the_liveness_bound(
    private_cluster: tuple[Gunicorn, RedisServer], closing: list[Any]
) -> None:
    server, redis = private_cluster
    workers = server.pinned()
    closing.extend(workers)
    sid = workers[0].initialize()
    stream, holder = open_stream(server.port, sid)
    closing.append(stream)
    streams = stream_view(redis.url)
    closing.append(streams)
    assert streams.has(sid)

    os.kill(holder, signal.SIGKILL)  # no cleanup at all: only the liveness key can tell
    killed = time.monotonic()
    assert stream.ended.wait(10), "the killed worker's connection stayed open"
    wait_until(lambda: not streams.has(sid), timeout=LIVENESS_BOUND + 5, what="has() to turn false")
    assert time.monotonic() - killed <= LIVENESS_BOUND + 1, "has() stayed true beyond the liveness bound"
    wait_until(lambda: not pid_alive(holder), what="the killed worker to be reaped")

    # The session itself lives in Redis: the client reopens its stream on any worker.
    survivor = next(w for w in workers if w.pid != holder)
    assert survivor.result(sid, "ping") == {}
    stream, _ = open_stream(server.port, sid)
    closing.append(stream)
    survivor.result(sid, "resources/subscribe", {"uri": NOTE_URI})
    survivor.result(sid, "tools/call", {"name": "set_note", "arguments": {"text": "after the kill"}})
    assert stream.take(1)[0]["method"] == "notifications/resources/updated"


def test_redis_restart_ends_resumable_streams_then_service_resumes(
    private_cluster: tuple[Gunicorn, RedisServer], closing: list[Any]
) -> None:
    """The example stores events: after Redis lost its data no stream goes on as if nothing happened.

    Each stream ends (its log is gone: what was sent to it meanwhile was
    dropped); its client comes back with Last-Event-ID and learns that its
    session is gone (Redis lost it too), so it starts over; new sessions and
    streams work on the same workers.
    """
    server, redis = private_cluster
    worker = Pinned(server.url)
    closing.append(worker)
    sids = [worker.initialize() for _ in range(3)]
    opened = [open_stream(server.port, sid) for sid in sids]
    closing.extend(stream for stream, _ in opened)
    pids = server.worker_pids()

    redis.restart()  # every key is lost (no persistence): event logs, stream keys, sessions
    for stream, _ in opened:
        assert stream.ended.wait(30), "a stream whose event log Redis lost stayed open"
    for (stream, _), sid in zip(opened, sids):
        assert stream.parser.last_event_id, "the stream was not primed"
        for _ in range(100):  # bounded: the worker's Redis connections may still be coming back (503)
            last = stream.parser.last_event_id
            response = worker.send("GET", sid=sid, Accept="text/event-stream", Last_Event_ID=last)
            if response.status_code != 503:
                break
            time.sleep(0.1)
        assert response.status_code == 404, response.text

    view = RedisStreamSessionManager(redis.url, socket_timeout=2.0, event_store=RedisEventStore(redis.url))
    closing.append(view)
    new_sid = worker.initialize()

    def stream_opens() -> bool:
        with contextlib.suppress(AssertionError):  # 503 until the holder's listener is back
            fresh.append(open_stream(server.port, new_sid))
        return bool(fresh)

    fresh: list[tuple[RawStream, int]] = []
    wait_until(stream_opens, timeout=20, what="a GET stream to open after the restart")
    closing.append(fresh[0][0])
    marker = {"jsonrpc": "2.0", "method": "notifications/test", "params": {"n": "after"}}
    view.send([new_sid], json.dumps(marker))
    assert fresh[0][0].take(1) == [marker]
    assert server.worker_pids() == pids  # the same processes, still serving
    server.close()
    assert "Traceback" not in server.stderr(), server.stderr()


def test_redis_down_is_503_with_a_json_rpc_error_then_service_resumes(
    private_cluster: tuple[Gunicorn, RedisServer], closing: list[Any]
) -> None:
    server, redis = private_cluster
    workers = server.pinned()
    closing.extend(workers)
    sid = workers[0].initialize()
    pids = server.worker_pids()

    redis.stop()
    for worker in workers:  # each call fails within the managers' socket timeouts, never hangs (TIMEOUT)
        for response in (
            worker.request(sid, "ping"),
            worker.send("POST", {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
            worker.send("GET", sid=sid, Accept="text/event-stream"),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["Content-Type"].startswith("application/json")
            body = response.json()
            assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32603, body
            assert "unavailable" in body["error"]["message"].lower()

    redis.start()  # same port, empty: the old session is gone, new ones work on the same workers
    assert server.worker_pids() == pids, "a worker died during the outage"
    for worker in workers:
        new_sid = worker.initialize()
        assert worker.result(new_sid, "ping") == {}
        assert ping_status(worker, sid)[0] == 404

    # Streams again: the listeners reconnect with backoff (GET is 503 until this worker's is back).
    new_sid = workers[0].initialize()

    def stream_opens() -> bool:
        with contextlib.suppress(AssertionError):
            opened.append(open_stream(server.port, new_sid))
        return bool(opened)

    opened: list[tuple[RawStream, int]] = []
    wait_until(stream_opens, timeout=20, what="a GET stream to open after Redis came back")
    stream, holder = opened[0]
    closing.append(stream)
    other = next(w for w in workers if w.pid != holder)
    other.result(new_sid, "resources/subscribe", {"uri": NOTE_URI})
    for attempt in range(100):  # the holder's listener may still be reconnecting: at most once
        other.result(new_sid, "tools/call", {"name": "set_note", "arguments": {"text": f"v{attempt}"}})
        if stream.events.qsize():
            break
        time.sleep(0.1)
    assert stream.take(1)[0]["method"] == "notifications/resources/updated"
    server.close()
    assert "Traceback" not in server.stderr(), server.stderr()


# -- server-to-client requests: the reply may reach any worker ------------------------


def test_official_client_answers_elicitation_and_sampling_whichever_worker_gets_the_reply(cluster: Gunicorn) -> None:
    """ask_note elicits, draft_note samples; the reply POST is tried until it lands on another worker."""

    async def on_elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"text": "from the user"})

    async def on_sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked = params.messages[0].content.text
        reply = types.TextContent(type="text", text=f"draft: {asked}")
        return types.CreateMessageResult(role="assistant", content=reply, model="test-model")

    async def test() -> None:
        async with connect_spread(cluster.url, elicitation_callback=on_elicit, sampling_callback=on_sample) as (
            peer,
            served,
        ):
            for tool, arguments, expected in (
                ("ask_note", {}, "note updated"),
                ("draft_note", {"topic": "tea"}, "draft: Write a one-line note about tea."),
            ):
                for _ in range(ATTEMPTS):
                    result = await peer.session.call_tool(tool, arguments)
                    assert result.content[0].text == expected and not result.is_error
                    asked_on = served.last("POST", "tools/call")
                    replies = [pid for verb, method, status, pid in served.records if verb == "POST" and status == 202]
                    if replies and replies[-1] != asked_on:  # the last 202 is the reply (initialized came first)
                        break
                    await anyio.sleep(0.02)
                else:
                    pytest.fail(f"no reply to {tool} reached a worker other than the tool's: {served.records}")

    run(test)


def test_a_reply_posted_to_another_worker_resumes_the_handler(cluster: Gunicorn) -> None:
    """Forced: the tool runs on one worker (its pinned connection), the reply goes to another's."""
    asking, answering, *_ = workers = cluster.pinned()
    try:
        hello = initialize_message()
        hello["params"]["capabilities"]["sampling"] = {}
        initialized = asking.send("POST", hello)
        assert initialized.status_code == 200, initialized.text
        sid = initialized.headers["Mcp-Session-Id"]
        params = {"name": "draft_note", "arguments": {"topic": "x"}}
        call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        headers |= {"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
        response = asking.http.post(asking.url, data=json.dumps(call), headers=headers, stream=True, timeout=30)
        assert response.headers[WORKER_HEADER] == str(asking.pid)
        events = iter_events(response.iter_content(chunk_size=None))
        request = next(json.loads(e.data) for e in events if e.data)
        assert request["method"] == "sampling/createMessage"
        result = {"role": "assistant", "content": {"type": "text", "text": "drafted elsewhere"}, "model": "m"}
        accepted = answering.send("POST", {"jsonrpc": "2.0", "id": request["id"], "result": result}, sid)
        assert accepted.status_code == 202 and answering.pid != asking.pid
        final = next(json.loads(e.data) for e in events if e.data)
        assert final == {"jsonrpc": "2.0", "id": 5, "result": {"content": [{"type": "text", "text": "drafted elsewhere"}]}}
        response.close()
        duplicate = answering.send("POST", {"jsonrpc": "2.0", "id": request["id"], "result": result}, sid)
        assert duplicate.status_code == 202  # accepted, and dropped: nothing waits any more
    finally:
        for worker in workers:
            worker.close()
