"""Helpers for the multi-worker end-to-end tests (tests/test_redis_e2e.py).

- :class:`Gunicorn`: ``gunicorn -k gevent -w N`` on a free port, sessions in
  Redis (``-e MCP_REDIS_URL=...``), no sticky routing.
- :class:`Pinned`: requests to one chosen worker. gunicorn hands each new
  connection to whichever worker accepts it first; a keep-alive connection
  then stays with that worker. :meth:`Gunicorn.pinned` opens connections
  until it holds one per worker, which makes "set on one worker, check on
  another" deterministic. The worker is known from the ``X-Worker-Pid``
  header that tests/gunicorn_app.py adds.
- :func:`connect_spread`: the official MCP client with one connection per
  request, recording which worker served each.
- :func:`run_notify`: examples/notify.py in a subprocess.
- :meth:`Gunicorn.stop` and :meth:`Gunicorn.full_stderr`: a graceful stop (SIGTERM)
  the test can act during, and gunicorn's whole log once it has exited.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
import requests
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from requests.adapters import HTTPAdapter

from session_manager.redis import RedisStreamSessionManager

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    PYTHON,
    REPO,
    RawStream,
    ServerProcess,
    free_port,
    initialize_message,
    reply_of,
    wait_until,
)
from .gunicorn_app import WORKER_HEADER
from .test_flask_client import Peer

#: The test app (examples/server.py's app plus X-Worker-Pid) and the example as users run it.
TEST_APP = "tests.gunicorn_app:create_app()"
EXAMPLE_APP = "examples.server:create_app()"
EXAMPLE_CONFIG = "examples/gunicorn.conf.py"
REDIS_URL_ENV = "MCP_REDIS_URL"
#: Seconds for any one HTTP request or script run.
TIMEOUT = 10
#: The arbiter's last line on exit: gunicorn's log is complete once it is read.
LAST_LOG_LINE = "Shutting down: Master"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Gunicorn(ServerProcess):
    """``gunicorn -k gevent -w N`` serving *app* with ``MCP_REDIS_URL=redis_url``, ready to connect."""

    def __init__(
        self,
        redis_url: str,
        *,
        workers: int = 3,
        app: str = TEST_APP,
        config: str | None = None,
        graceful_timeout: int = 2,
        worker_class: str | None = "gevent",
    ) -> None:
        port = free_port()
        args = [PYTHON, "-m", "gunicorn"] + (["-c", config] if config else [])
        args += ["-k", worker_class] if worker_class else []  # None: the config's
        args += [
            "-w", str(workers),
            "-b", f"127.0.0.1:{port}",
            "--keep-alive", "120",  # Pinned connections must outlive the test's pauses
            "--graceful-timeout", str(graceful_timeout),  # open streams would hold a stop for the whole default 30 s
            "-e", f"{REDIS_URL_ENV}={redis_url}",
            app,
        ]
        self.workers = workers
        self._seen_workers: set[int] = set()
        self._stopping = False
        super().__init__(args, port)  # ready when the arbiter listens: workers may still be loading the app
        if app == TEST_APP:  # it names its workers: wait until every one has served a request
            for worker in self.pinned():
                worker.close()

    def worker_pids(self) -> set[int]:
        """The live worker processes (children of the arbiter)."""
        pids = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == self.process.pid:
                        pids.add(int(entry))
        self._seen_workers |= pids
        return pids

    def pinned(self, timeout: float = 20.0) -> list[Pinned]:
        """One :class:`Pinned` per worker, found by opening connections until every worker answered one.

        Also how to wait for the workers: a worker still loading the app accepts nothing.
        """
        found: dict[int, Pinned] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            candidate = Pinned(self.url)
            candidate.probe()
            if candidate.pid in found or candidate.pid is None:
                candidate.close()
                time.sleep(0.005)
            else:
                found[candidate.pid] = candidate
                if len(found) == self.workers:
                    self._seen_workers |= set(found)
                    return [found[pid] for pid in sorted(found)]
        for worker in found.values():
            worker.close()
        pytest.fail(f"in {timeout} s, new connections reached only workers {sorted(found)} of {self.workers}")

    def stop(self) -> None:
        """Begin a graceful stop (SIGTERM to the arbiter) and return at once; :meth:`close` waits for its end."""
        self.worker_pids()  # remembered, for close()
        self._stopping = True
        self.process.terminate()

    def full_stderr(self) -> str:
        """gunicorn's whole stderr once it has exited (:meth:`stderr` is its tail, maybe not read to the end yet)."""
        assert self.process.poll() is not None, "gunicorn is still running: close() it first"
        wait_until(lambda: LAST_LOG_LINE in self._whole_stderr(), timeout=5, what=f"gunicorn's {LAST_LOG_LINE!r}")
        return self._whole_stderr()

    def _whole_stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def close(self) -> None:
        """Stop the arbiter (or wait for the stop begun by :meth:`stop`), then SIGKILL any worker that outlived it."""
        workers = self.worker_pids() if self.process.poll() is None else set()
        if self._stopping:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        super().close()
        for pid in workers | self._seen_workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Pinned:
    """HTTP requests on one keep-alive connection, so to one worker; each response is checked to come from it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0))
        self.pid: int | None = None

    def send(self, verb: str, message: Any = None, sid: str | None = None, **headers: str) -> requests.Response:
        """One request; the response must come from this connection's worker (when the app names it)."""
        merged = {"Accept": ACCEPT_BOTH}
        if message is not None:
            merged["Content-Type"] = "application/json"
        if sid is not None:
            merged.update({"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST})
        merged.update({name.replace("_", "-"): value for name, value in headers.items()})
        body = None if message is None else json.dumps(message).encode()
        # stream=True: a GET that opens a stream must not be read to its (never coming) end.
        response = self.http.request(verb, self.url, data=body, headers=merged, timeout=TIMEOUT, stream=verb == "GET")
        if response.status_code != 200:
            _ = response.content  # read it all, so the connection goes back to the pool (and stays with the worker)
        pid = response.headers.get(WORKER_HEADER)
        if pid is not None:
            if self.pid is None:
                self.pid = int(pid)
            assert int(pid) == self.pid, f"connection to worker {self.pid} was served by {pid} (reconnected?)"
        return response

    def probe(self) -> None:
        """A request with no side effect (GET without a session: 400) that tells the worker."""
        self.send("GET", Accept="text/event-stream")

    def initialize(self) -> str:
        response = self.send("POST", initialize_message())
        assert response.status_code == 200, response.text
        return response.headers["Mcp-Session-Id"]

    def request(self, sid: str, method: str, params: dict[str, Any] | None = None) -> requests.Response:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if params is not None:
            message["params"] = params
        return self.send("POST", message, sid)

    def result(self, sid: str, method: str, params: dict[str, Any] | None = None) -> Any:
        """The result of a request that must succeed."""
        response = self.request(sid, method, params)
        assert response.status_code == 200, response.text
        reply = reply_of(response)
        assert "result" in reply, reply
        return reply["result"]

    def close(self) -> None:
        self.http.close()

    def __repr__(self) -> str:
        return f"<Pinned worker {self.pid}>"


def open_stream(port: int, sid: str) -> tuple[RawStream, int]:
    """The session's GET stream on a new connection, and the worker that holds it."""
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
    stream = RawStream(port, "GET", "/mcp", headers)
    if stream.status != 200:
        body = stream.read_all()
        stream.close()
        raise AssertionError(f"GET stream: {stream.status} {body!r}")
    stream.start_reader()  # the stream was registered before its head was sent
    return stream, int(stream.headers[WORKER_HEADER.lower()])


def stream_view(redis_url: str) -> RedisStreamSessionManager:
    """A stream manager on the example's Redis and prefix, for ``has()`` checks from the test."""
    return RedisStreamSessionManager(redis_url, socket_timeout=2.0)


def run_notify(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python examples/notify.py --redis URL ARGS...`` (a plain process: no gevent, no Flask app)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop(REDIS_URL_ENV, None)
    return subprocess.run(
        [PYTHON, "examples/notify.py", "--redis", redis_url, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


class Served:
    """Which worker served each HTTP request of a client: ``(verb, JSON-RPC method or None, status, pid)``."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str | None, int, int]] = []

    async def hook(self, response: httpx2.Response) -> None:
        request = response.request
        method = None
        if request.method == "POST":
            with contextlib.suppress(ValueError, AttributeError):
                method = json.loads(request.content).get("method")
        self.records.append((request.method, method, response.status_code, int(response.headers.get(WORKER_HEADER, 0))))

    def pids(self) -> set[int]:
        return {record[3] for record in self.records}

    def last(self, verb: str, method: str | None = None) -> int | None:
        """The worker of the latest successful request of this kind (``None`` if none yet)."""
        for rverb, rmethod, status, pid in reversed(self.records):
            if rverb == verb and (method is None or rmethod == method) and status < 300:
                return pid
        return None


@contextlib.asynccontextmanager
async def connect_spread(url: str, **callbacks: Any) -> AsyncIterator[tuple[Peer, Served]]:
    """The official client, initialized, with no keep-alive: every request takes a new connection.

    So gunicorn spreads initialize, the GET stream and each POST over its workers.
    *callbacks* go to ``ClientSession`` (``sampling_callback``, ``elicitation_callback``...).
    """
    pushed: list[Any] = []
    logs: list[Any] = []
    sid: list[str] = []
    served = Served()

    async def capture(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers and not sid:
            sid.append(response.headers["mcp-session-id"])
        await served.hook(response)

    async def on_message(message: Any) -> None:
        if not isinstance(message, Exception):
            pushed.append(message)

    async def on_log(params: Any) -> None:
        logs.append(params)

    http = httpx2.AsyncClient(
        timeout=httpx2.Timeout(30, read=300),
        limits=httpx2.Limits(max_keepalive_connections=0),
        event_hooks={"response": [capture]},
    )
    async with (
        http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, message_handler=on_message, logging_callback=on_log, **callbacks) as session,
    ):
        await session.initialize()
        yield Peer(session, pushed, logs, sid), served

