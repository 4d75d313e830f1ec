"""Session caps over real HTTP, a flood that ends at the cap, and the in-memory background sweep (issue 15).

The caps themselves (memory and Redis, threads racing) are in the shared
info suite, tests/test_info_managers.py; here: what a client sees (503 or
429, ``Retry-After``, a JSON-RPC error with its id), that both transports
create sessions through the one capped path, that a Redis cap holds for a
whole gunicorn deployment, that memory stays bounded under a flood, and
that expired sessions leave memory with no request arriving.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import textwrap
import threading
import time
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask, Response, request

from session_manager import (
    InMemoryInfoSessionManager,
    SessionLimitError,
    SessionManagers,
    SessionQuota,
    StreamController,
)
from session_manager._jsonrpc import SERVER_ERROR
from session_manager.flask import McpBlueprint
from session_manager.redis import RedisInfoSessionManager
from session_manager.wsgi import INTERNAL_ERROR, McpApp, McpOptions
from session_manager.wsgi._options import DEFAULT_MAX_SESSION_INFO

from .conftest_redis import TEST_HEARTBEAT, TEST_LIVENESS_TTL, unique_prefix
from .flask_support import ACCEPT_BOTH, LATEST, PYTHON, REPO, RawStream, TestHandler, ThreadedServer, initialize_message
from .gunicorn_app import WORKER_HEADER
from .gunicorn_support import REDIS_URL_ENV, Gunicorn
from .redis_server import RedisServer
from .resume_support import wait_until

#: The sweeper thread of an in-memory info manager.
SWEEPER = "session_manager-info-sweep"


def sweepers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == SWEEPER and thread.is_alive()]


# -- a live McpApp on a threaded werkzeug server -------------------------------------------


def answer(message: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
    """A handler that keeps nothing (so the flood measures the transport): ``{}`` for every request."""
    return {} if "id" in message and "method" in message else None


class Live:
    """An McpApp (Streamable HTTP and legacy HTTP+SSE) on 127.0.0.1; the principal is the X-User header."""

    def __init__(self, managers: SessionManagers | None = None, **options: Any) -> None:
        self.managers = SessionManagers() if managers is None else managers
        options.setdefault("principal", lambda req: req.headers.get("X-User"))
        self.app = McpApp(answer, managers=self.managers, legacy_sse=True, keepalive=1.0, **options)
        self.server = ThreadedServer(self.app)  # type: ignore[arg-type]  # any WSGI app
        self.url = f"http://127.0.0.1:{self.server.port}/mcp"
        self.http = requests.Session()
        self.streams: list[RawStream] = []

    def initialize(
        self, user: str | None = None, id: Any = 0, client_info: dict[str, Any] | None = None, http: Any = None
    ) -> requests.Response:
        message = initialize_message(id=id)
        if client_info is not None:
            message["params"]["clientInfo"] = client_info
        headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
        if user is not None:
            headers["X-User"] = user
        return (http or self.http).post(self.url, data=json.dumps(message), headers=headers, timeout=10)

    def session(self, user: str | None = None) -> str:
        response = self.initialize(user)
        assert response.status_code == 200, response.text
        return response.headers["Mcp-Session-Id"]

    def delete(self, sid: str, user: str | None = None) -> None:
        headers = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
        if user is not None:
            headers["X-User"] = user
        assert self.http.delete(self.url, headers=headers, timeout=10).status_code == 204

    def legacy(self, user: str | None = None) -> RawStream:
        headers = {"Accept": "text/event-stream"}
        if user is not None:
            headers["X-User"] = user
        stream = RawStream(self.server.port, "GET", "/sse", headers)
        self.streams.append(stream)
        return stream

    def close(self) -> None:
        for stream in self.streams:
            stream.close()
        self.app.close(timeout=2)
        self.server.close()
        self.http.close()


@pytest.fixture
def live() -> Iterator[Callable[..., Live]]:
    made: list[Live] = []

    def make(managers: SessionManagers | None = None, **options: Any) -> Live:
        made.append(Live(managers, **options))
        return made[-1]

    yield make
    for server in made:
        server.close()


def assert_refused(response: requests.Response, status: int, code: int, scope: str, limit: int, id: Any) -> None:
    """A capped ``initialize``: *status*, ``Retry-After``, and a JSON-RPC error answering request *id*."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert "Mcp-Session-Id" not in response.headers
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == id
    assert body["error"]["code"] == code
    assert f"{limit} sessions" in body["error"]["message"]
    assert body["error"]["data"] == {"scope": scope, "limit": limit, "retryAfter": retry_after}


# -- what a client sees ------------------------------------------------------------------


def test_initialize_past_the_server_cap_is_503_with_retry_after_and_a_delete_frees_a_slot(live) -> None:
    server = live(max_sessions=2)
    first, _ = server.session(), server.session("alice")
    refused = server.initialize(id="third")
    assert_refused(refused, 503, INTERNAL_ERROR, "server", 2, "third")
    assert len(server.managers.info) == 2  # nothing created
    assert_refused(server.initialize("bob", id=7), 503, INTERNAL_ERROR, "server", 2, 7)  # full for everyone
    server.delete(first)
    server.session("bob")
    assert len(server.managers.info) == 2


def test_a_principal_at_its_cap_gets_429_and_others_go_on(live) -> None:
    server = live(max_sessions=10, max_sessions_per_principal=2)
    alice = [server.session("alice"), server.session("alice")]
    assert_refused(server.initialize("alice", id="a3"), 429, SERVER_ERROR, "principal", 2, "a3")
    server.session("bob")  # another principal is not affected
    server.session()  # nor a request without a principal (only the server cap counts it)
    server.session()
    server.session()
    assert_refused(server.initialize("alice", id=42), 429, SERVER_ERROR, "principal", 2, 42)
    server.delete(alice[0], "alice")
    server.session("alice")
    assert len(server.managers.info) == 6


def test_legacy_sse_sessions_obey_the_same_caps(live) -> None:
    server = live(max_sessions=3, max_sessions_per_principal=1)
    opened = server.legacy("alice")
    assert opened.status == 200
    opened.start_reader()
    refused = server.legacy("alice")  # the principal's one session is the legacy one
    assert refused.status == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert json.loads(refused.read_all())["error"]["data"]["scope"] == "principal"
    server.session("bob")
    assert server.legacy().status == 200  # the third session: the server is full now
    full = server.legacy()
    assert full.status == 503 and 1 <= int(full.headers["retry-after"]) <= 60
    body = json.loads(full.read_all())
    assert body["id"] is None and body["error"]["code"] == INTERNAL_ERROR
    assert_refused(server.initialize("carol", id=1), 503, INTERNAL_ERROR, "server", 3, 1)
    opened.close()  # the legacy stream ending ends its session: a slot is free again
    assert wait_until(lambda: len(server.managers.info) == 2, timeout=10)
    server.session("carol")


def test_caps_are_checked_options_and_none_means_no_cap(live) -> None:
    for bad in (0, -1, 1.5, "10", True):
        with pytest.raises(ValueError, match="max_sessions"):
            McpOptions(max_sessions=bad)
        with pytest.raises(ValueError, match="max_sessions_per_principal"):
            McpOptions(max_sessions_per_principal=bad)
    defaults = McpOptions()
    assert (defaults.max_sessions, defaults.max_sessions_per_principal) == (10_000, 100)
    server = live(max_sessions=None, max_sessions_per_principal=None)
    for _ in range(5):
        server.session("alice")
    assert len(server.managers.info) == 5


class OlderInfo(InMemoryInfoSessionManager):
    """An info manager written before caps existed: its create takes no quota, and it says so."""

    enforces_quotas = False

    def create(self, session_id: str, *, protocol_version=None, client_info=None, client_capabilities=None) -> None:  # type: ignore[override]
        super().create(
            session_id,
            protocol_version=protocol_version,
            client_info=client_info,
            client_capabilities=client_capabilities,
        )


def test_an_info_manager_that_cannot_enforce_caps_is_refused_unless_caps_are_off(live) -> None:
    with pytest.raises(TypeError, match="OlderInfo does not enforce session caps.*max_sessions=None"):
        McpApp(TestHandler(), managers=SessionManagers(info=OlderInfo()))
    server = live(SessionManagers(info=OlderInfo()), max_sessions=None, max_sessions_per_principal=None)
    server.session("alice")
    assert server.legacy("alice").status == 200
    assert wait_until(lambda: len(server.managers.info) == 2, timeout=10)


# -- a flood ends at the cap, with memory bounded ------------------------------------------

FLOOD = 150
CAP = 10
#: clientInfo of nearly the most a session may store.
BIG_INFO = {"name": "flood", "version": "1", "padding": "x" * (DEFAULT_MAX_SESSION_INFO - 1024)}


def flood(server: Live) -> list[int]:
    """FLOOD initialize requests with a big clientInfo from 6 threads; their statuses."""
    statuses: list[int] = []
    lock = threading.Lock()

    def send(count: int) -> None:
        with requests.Session() as http:  # a connection per thread
            for i in range(count):
                status = server.initialize(id=i, client_info=BIG_INFO, http=http).status_code
                with lock:
                    statuses.append(status)

    threads = [threading.Thread(target=send, args=(FLOOD // 6,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    return statuses


def test_a_flood_of_big_initializes_ends_at_the_cap_with_memory_bounded(live) -> None:
    server = live(max_sessions=CAP)
    server.session()  # warm up: imports, caches, the sweeper
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        statuses = flood(server)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert statuses.count(200) == CAP - 1 and statuses.count(503) == FLOOD - CAP + 1, sorted(set(statuses))
    assert len(server.managers.info) == CAP
    bound = CAP * DEFAULT_MAX_SESSION_INFO * 3  # what CAP sessions may store, and room for the rest
    unbounded = FLOOD * len(json.dumps(BIG_INFO))  # what the flood would have stored without the cap
    assert grown < bound < unbounded / 3, (grown, bound, unbounded)


def test_a_flood_of_big_initializes_ends_at_the_cap_with_redis_memory_bounded(live, private_redis: RedisServer) -> None:
    prefix = unique_prefix()
    info = RedisInfoSessionManager(private_redis.url, prefix=prefix)
    server = live(SessionManagers(info=info), max_sessions=CAP)
    server.session()
    admin = private_redis.client()
    try:
        before = admin.info("memory")["used_memory"]
        statuses = flood(server)
        grown = admin.info("memory")["used_memory"] - before
        assert len(admin.keys(f"{prefix}session:*")) == CAP
    finally:
        admin.close()
    assert statuses.count(200) == CAP - 1 and statuses.count(503) == FLOOD - CAP + 1, sorted(set(statuses))
    bound = CAP * DEFAULT_MAX_SESSION_INFO * 3
    assert grown < bound < FLOOD * len(json.dumps(BIG_INFO)) / 3, grown


# -- the Redis counts ------------------------------------------------------------------


def test_redis_counts_forget_expired_sessions_in_bounded_steps_and_leave_no_key(redis_server, redis_prefix) -> None:
    info = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix, session_ttl=0.3)
    admin = redis_server.client()
    try:
        for i in range(200):  # no quota: counted all the same
            info.create(f"s{i}")
        for i in range(5):
            info.create(f"p{i}", quota=SessionQuota(principal="alice"))
        info.create("keeper")
        live, alice = f"{redis_prefix}live-sessions", f"{redis_prefix}live-sessions:alice"
        assert (admin.zcard(live), admin.zcard(alice)) == (206, 5)
        # Keep one session in use (and so the count) while the others expire.
        assert wait_until(lambda: info.exists("keeper") and not admin.exists(f"{redis_prefix}session:p4"), timeout=10)
        info.create("late")  # forgets 64 expired members on its way, no more
        assert admin.zcard(live) == 206 - 64 + 1
        for i in range(3):
            info.create(f"later{i}")
        assert admin.zcard(live) == 5  # the 205 expired ones gone in four creates
        for sid in ["keeper", "late", "later0", "later1", "later2"]:
            info.delete(sid)
        # The counting sets go with their last members: deleted ones leave them, expired ones let them expire.
        assert wait_until(lambda: admin.keys(f"{redis_prefix}*") == [], timeout=10)
    finally:
        admin.close()
        info.close()


def test_an_open_redis_stream_keeps_its_session_counted(node_factory, redis_server, redis_prefix) -> None:
    info = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix, session_ttl=0.6)
    streams = node_factory()  # heartbeat every 0.5 s: it refreshes the session's keys and its place in the count
    controller = StreamController()
    try:
        info.create("streaming", quota=SessionQuota(max_sessions=1, max_per_principal=1, principal="alice"))
        streams.create("streaming", controller)
        time.sleep(2.0)  # more than three ttls with no info call
        with pytest.raises(SessionLimitError) as excinfo:
            info.create("other", quota=SessionQuota(max_sessions=1))
        assert excinfo.value.scope == "server"
        with pytest.raises(SessionLimitError, match="principal"):
            info.create("other", quota=SessionQuota(max_per_principal=1, principal="alice"))
    finally:
        controller.close()
        info.close()


GREENLET_RACE = """
from gevent import monkey

monkey.patch_all()
import json, sys
import gevent
from session_manager import InMemoryInfoSessionManager, SessionLimitError, SessionQuota
from session_manager.redis import RedisInfoSessionManager

out = {}
for name, info in (
    ("memory", InMemoryInfoSessionManager()),
    ("redis", RedisInfoSessionManager(sys.argv[1], prefix=sys.argv[2])),
):
    created = []

    def worker(n):
        for i in range(5):
            sid, principal = f"g{n}-{i}", f"p{n % 4}"
            try:
                info.create(sid, quota=SessionQuota(max_sessions=25, max_per_principal=8, principal=principal))
            except SessionLimitError:
                continue
            created.append((principal, sid))

    gevent.joinall([gevent.spawn(worker, n) for n in range(40)], timeout=60)
    per_principal = [sum(1 for who, _ in created if who == f"p{k}") for k in range(4)]
    out[name] = [len(created), sum(info.exists(sid) for _, sid in created), max(per_principal)]
    info.close()
print(json.dumps(out))
"""


def test_greenlets_racing_to_create_never_exceed_a_cap(redis_server, redis_prefix) -> None:
    args = [PYTHON, "-c", GREENLET_RACE, redis_server.url, redis_prefix]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for backend in ("memory", "redis"):  # 200 tries: 25 in all, none past 8 for one of the 4 principals
        created, existing, most = result[backend]
        assert (created, existing) == (25, 25) and most <= 8, (backend, result)


# -- one cap for a whole Redis deployment ----------------------------------------------


def capped_app() -> Flask:
    """gunicorn's factory for the two-worker test: a TestHandler with caps from the environment, on Redis."""
    from examples.server import redis_managers

    managers = redis_managers(
        os.environ[REDIS_URL_ENV], events=False, liveness_ttl=TEST_LIVENESS_TTL, heartbeat_interval=TEST_HEARTBEAT
    )
    app = Flask(__name__)
    app.register_blueprint(
        McpBlueprint(
            TestHandler(),
            managers=managers,
            principal=lambda: request.headers.get("X-User"),
            max_sessions=int(os.environ["CAPS_MAX_SESSIONS"]),
            max_sessions_per_principal=int(os.environ["CAPS_MAX_PER_PRINCIPAL"]),
        )
    )

    @app.after_request
    def tag(response: Response) -> Response:
        response.headers[WORKER_HEADER] = str(os.getpid())
        return response

    return app


def test_the_caps_hold_for_the_deployment_not_per_worker(private_redis: RedisServer, monkeypatch) -> None:
    monkeypatch.setenv("CAPS_MAX_SESSIONS", "4")
    monkeypatch.setenv("CAPS_MAX_PER_PRINCIPAL", "2")
    cluster = Gunicorn(private_redis.url, workers=2, app="tests.test_session_caps:capped_app()")
    try:
        one, two = cluster.pinned()

        def initialize(worker, user: str, id: Any = 0) -> requests.Response:
            return worker.send("POST", initialize_message(id=id), X_User=user)

        alice = initialize(one, "alice")
        assert alice.status_code == 200
        assert initialize(two, "alice").status_code == 200
        assert_refused(initialize(one, "alice", "a3"), 429, SERVER_ERROR, "principal", 2, "a3")  # one each: 2 in all
        assert_refused(initialize(two, "alice", "a4"), 429, SERVER_ERROR, "principal", 2, "a4")
        assert initialize(one, "bob").status_code == 200
        assert initialize(two, "carol").status_code == 200
        assert_refused(initialize(one, "dave", 5), 503, INTERNAL_ERROR, "server", 4, 5)  # 4 in all, 2 per worker
        assert_refused(initialize(two, "dave", 6), 503, INTERNAL_ERROR, "server", 4, 6)
        sid = alice.headers["Mcp-Session-Id"]
        assert two.send("DELETE", sid=sid, X_User="alice").status_code == 204  # deleted on the other worker
        assert initialize(one, "alice").status_code == 200  # its slot is free for the deployment
        for worker in (one, two):
            worker.close()
    finally:
        cluster.close()


# -- the background sweep of the in-memory info manager ------------------------------------


def test_expired_sessions_leave_memory_with_no_request_arriving() -> None:
    before = set(sweepers())
    info = InMemoryInfoSessionManager(session_ttl=0.2)
    try:
        for i in range(300):  # more than one sweep step
            info.create(f"s{i}", client_info={"n": i})
        assert len(set(sweepers()) - before) == 1
        assert wait_until(lambda: len(info) == 0, timeout=10)  # len() sweeps nothing: the background did
    finally:
        info.close()


def test_close_stops_the_sweeper_and_it_does_not_come_back() -> None:
    before = set(sweepers())
    info = InMemoryInfoSessionManager(session_ttl=30)
    ours = set(sweepers()) - before  # started with the manager, not inside the first session's request
    assert len(ours) == 1
    info.create("a")
    assert set(sweepers()) - before == ours
    info.create("b")
    assert set(sweepers()) - before == ours  # one per manager
    info.close()
    assert set(sweepers()) - before == set()
    assert not ours.pop().is_alive()
    info.create("c")  # still usable, inline expiry only
    assert info.exists("c") and set(sweepers()) - before == set()


def test_no_sweeper_without_expiry_or_with_a_test_clock() -> None:
    before = set(sweepers())
    for info in (InMemoryInfoSessionManager(session_ttl=None), InMemoryInfoSessionManager(clock=lambda: 0.0)):
        info.create("a")
        assert set(sweepers()) == before
        info.close()


def test_a_manager_dropped_without_close_ends_its_sweeper() -> None:
    before = set(sweepers())
    info = InMemoryInfoSessionManager(session_ttl=0.2)
    info.create("a")
    (thread,) = set(sweepers()) - before
    ref = weakref.ref(info)
    del info
    gc.collect()
    assert ref() is None  # the sweeper holds no strong reference
    thread.join(10)
    assert not thread.is_alive()


def test_a_forked_child_sweeps_with_its_own_sweeper() -> None:
    info = InMemoryInfoSessionManager(session_ttl=0.2)
    info.create("parent")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's sweeper thread does not exist here
        ok = False
        try:
            os.close(read)
            ok = not sweepers()
            info.create("child")
            ok = ok and len(sweepers()) == 1 and wait_until(lambda: len(info) == 0, timeout=10)
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            assert pipe.read() == b"1"
        assert os.waitpid(pid, 0)[1] == 0
        assert wait_until(lambda: len(info) == 0, timeout=10)  # and the parent's sweeper still runs
    finally:
        info.close()


def test_under_gevent_the_sweeper_is_a_greenlet() -> None:
    code = textwrap.dedent("""
        from gevent import monkey
        monkey.patch_all()
        import json, threading, gevent
        from session_manager import InMemoryInfoSessionManager

        info = InMemoryInfoSessionManager(session_ttl=0.2)
        for i in range(200):
            info.create(f"s{i}")
        (sweeper,) = [t for t in threading.enumerate() if t.name == "session_manager-info-sweep"]
        with open("/proc/self/status") as status:  # the sweeper runs, and no native thread but this one
            native = [int(line.split()[1]) for line in status if line.startswith("Threads:")]
        for _ in range(200):  # no request: only the sweeper runs
            if not len(info):
                break
            gevent.sleep(0.05)
        left = len(info)
        info.close()
        print(json.dumps({"left": left, "native": native, "stopped": not sweeper.is_alive()}))
    """)
    done = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"left": 0, "native": [1], "stopped": True}
