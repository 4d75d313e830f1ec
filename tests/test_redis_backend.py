"""What only the Redis backends promise: many processes acting as one server.

Two manager instances on one Redis stand for two processes (each has its own
node id, listener and heartbeat); real subprocesses are used where a process
boundary matters (a separate sender, SIGKILL, gevent). The behaviour shared
with the in-memory backends is in test_stream_managers.py/test_info_managers.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from session_manager import (
    BackendUnavailableError,
    SessionInfo,
    SessionNotFoundError,
    StreamConflictError,
    StreamController,
)
from session_manager.redis import RedisEventStore, RedisInfoSessionManager, RedisStreamSessionManager

from .conftest import Reader
from .conftest_redis import TEST_HEARTBEAT, TEST_LIVENESS_TTL
from .redis_server import RedisServer
from .resume_support import stream_readers

ROOT = Path(__file__).resolve().parent.parent


def msg(n: object) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}})


def ns(messages: list[str]) -> list[object]:
    return [json.loads(m)["params"]["n"] for m in messages]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll *predicate* until true or *timeout*; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


@pytest.fixture
def readers() -> Iterator[Callable[..., Reader]]:
    """Open a stream on a manager and read it on a thread; all closed afterwards."""
    with stream_readers(Reader) as open_on:
        yield open_on


def admin(server: RedisServer) -> redis.Redis:
    return server.client()


def keys(server: RedisServer, pattern: str) -> list[bytes]:
    client = admin(server)
    try:
        return sorted(client.keys(pattern))
    finally:
        client.close()


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run *code* in a fresh interpreter (the test venv) and return its result."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, env=python_env(), cwd=str(ROOT), check=False,
    )


@contextlib.contextmanager
def spawned(
    code: str, *args: str, stdin: bool = False, capture_stderr: bool = True
) -> Iterator[subprocess.Popen]:
    """Run *code* in a fresh interpreter with piped text output; killed (if still running) on exit.

    *stdin*: a pipe to talk to it too. *capture_stderr*: off for a child that may log more
    than a pipe holds while nobody reads it.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_stderr else None,
        text=True,
        env=python_env(),
        cwd=str(ROOT),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def read_line(process: subprocess.Popen, timeout: float) -> str:
    """Next stdout line of *process*, failing the test if none comes in time."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no output from the subprocess within {timeout} s")


# -- across nodes -------------------------------------------------------------


def test_send_from_one_node_reaches_a_stream_on_another(node_factory, readers, new_id):
    a, b = node_factory(), node_factory()
    assert a.node_id != b.node_id
    sid = new_id()
    reader = readers(b, sid)
    assert a.has(sid) and b.has(sid)
    a.send([sid, new_id()], msg("from-a"))
    b.send([sid], msg("from-b"))
    assert ns(reader.take(2)) == ["from-a", "from-b"]


def test_create_on_one_node_conflicts_with_a_stream_open_on_another(node_factory, readers, new_id):
    a, b = node_factory(), node_factory()
    sid = new_id()
    reader = readers(b, sid)
    with pytest.raises(StreamConflictError):
        a.create(sid, StreamController())
    assert not reader.controller.closed
    a.send([sid], msg("still-here"))
    assert ns(reader.take(1)) == ["still-here"]


def test_delete_on_one_node_closes_the_stream_on_another(node_factory, readers, new_id, redis_server, redis_prefix):
    a, b = node_factory(), node_factory()
    sid = new_id()
    reader = readers(b, sid)
    a.delete(sid)
    assert not a.has(sid)  # at once, on the deleting node
    assert reader.done.wait(5), "the stream on the other node did not end"
    assert reader.controller.closed
    assert not b.has(sid)
    # The owner removes the tombstone once it has closed the stream.
    assert wait_until(lambda: keys(redis_server, f"{redis_prefix}stream:*") == [])
    # The session id is free again, on any node.
    readers(a, sid)
    assert b.has(sid)


def test_stream_ended_by_its_reader_frees_the_id_everywhere(node_factory, readers, new_id):
    a, b = node_factory(), node_factory()
    sid = new_id()
    reader = readers(b, sid)
    reader.controller.close()
    assert reader.done.wait(5)
    assert wait_until(lambda: not a.has(sid), timeout=5)
    second = readers(a, sid)
    b.send([sid], msg("to-the-new-stream"))
    assert ns(second.take(1)) == ["to-the-new-stream"]


def test_broadcast_reaches_streams_on_every_node(node_factory, readers, new_id):
    nodes = [node_factory() for _ in range(3)]
    streams = [readers(node, new_id()) for node in nodes for _ in range(2)]
    sender = node_factory()  # holds no stream: never starts a listener
    sender.send(None, msg("all"))
    for reader in streams:
        assert ns(reader.take(1)) == ["all"]
    nodes[1].send(None, msg("again"))
    for reader in streams:
        assert ns(reader.take(1)) == ["again"]


def test_sends_cost_one_publish_per_node_and_never_scan(private_redis, readers, new_id, redis_prefix):
    a = RedisStreamSessionManager(private_redis.url, prefix=redis_prefix, liveness_ttl=30)
    b = RedisStreamSessionManager(private_redis.url, prefix=redis_prefix, liveness_ttl=30)
    try:
        ids = [new_id() for _ in range(40)]
        for i, sid in enumerate(ids):
            a.create(sid, StreamController()) if i % 2 else b.create(sid, StreamController())
        stats = admin(private_redis)
        try:
            stats.config_resetstat()
            a.send(ids + [new_id() for _ in range(10)], msg("targeted"))
            targeted = stats.info("commandstats")
            stats.config_resetstat()
            a.send(None, msg("broadcast"))
            broadcast = stats.info("commandstats")
        finally:
            stats.close()
        assert targeted["cmdstat_publish"]["calls"] == 2  # one per node holding targets
        assert broadcast["cmdstat_publish"]["calls"] == 1
        for stats_ in (targeted, broadcast):
            assert not {"cmdstat_scan", "cmdstat_keys"} & set(stats_)
    finally:
        a.close()
        b.close()


def test_many_targets_are_sent_in_batches(node_factory, readers, new_id):
    a, b = node_factory(), node_factory()
    s1, s2 = new_id(), new_id()
    r1, r2 = readers(a, s1), readers(b, s2)
    targets = [new_id() for _ in range(1500)]
    targets[10], targets[1400] = s1, s2  # in different batches
    a.send(targets, msg("batched"))
    assert ns(r1.take(1)) == ["batched"] and ns(r2.take(1)) == ["batched"]


def test_fifo_across_targeted_and_broadcast_from_another_node(node_factory, readers, new_id):
    a, b = node_factory(), node_factory()
    sid = new_id()
    reader = readers(b, sid)
    for i in range(100):
        a.send([sid] if i % 3 else None, msg(i))
    assert ns(reader.take(100)) == list(range(100))


def test_lost_delete_message_is_caught_by_the_heartbeat(node_factory, readers, new_id, redis_server, redis_prefix):
    b = node_factory()
    sid = new_id()
    reader = readers(b, sid)
    client = admin(redis_server)
    try:  # what a delete from another node writes, without its message
        key = f"{redis_prefix}stream:{sid}"
        client.set(key, b"-" + client.get(key), px=int(TEST_LIVENESS_TTL * 1000))
    finally:
        client.close()
    assert reader.done.wait(TEST_HEARTBEAT * 4 + 5), "heartbeat did not close a deleted stream"
    assert not b.has(sid)


# -- real processes -------------------------------------------------------------

SEND_SCRIPT = """
import sys, threading
from session_manager.redis import RedisStreamSessionManager
url, prefix, sid, data = sys.argv[1:5]
with RedisStreamSessionManager(url, prefix=prefix) as streams:
    streams.send([sid], data)
    streams.send(None, data)
    print(threading.active_count())
"""


def test_a_separate_process_sends_to_a_stream_held_here(node_factory, readers, new_id, redis_server, redis_prefix):
    holder = node_factory()
    sid = new_id()
    reader = readers(holder, sid)
    result = run_python(SEND_SCRIPT, redis_server.url, redis_prefix, sid, msg("from-a-script"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1", "a process that only sends must not start background threads"
    assert ns(reader.take(2)) == ["from-a-script", "from-a-script"]


HOLD_SCRIPT = """
import sys, time
from session_manager import StreamController
from session_manager.redis import RedisStreamSessionManager
url, prefix, sid, ttl, beat = sys.argv[1:6]
streams = RedisStreamSessionManager(url, prefix=prefix, liveness_ttl=float(ttl), heartbeat_interval=float(beat))
streams.create(sid, StreamController())
print("ready", flush=True)
time.sleep(120)
"""


def test_sigkilled_process_stops_counting_within_the_liveness_bound(node_factory, new_id, redis_server, redis_prefix):
    observer = node_factory()
    sid = new_id()
    with spawned(HOLD_SCRIPT, redis_server.url, redis_prefix, sid, str(TEST_LIVENESS_TTL), str(TEST_HEARTBEAT)) as holder:
        assert read_line(holder, 30).strip() == "ready", holder.stderr.read() if holder.poll() is not None else ""
        # Alive: the heartbeat keeps the stream counted well past the liveness ttl.
        deadline = time.monotonic() + 2 * TEST_LIVENESS_TTL
        while time.monotonic() < deadline:
            assert observer.has(sid)
            time.sleep(0.1)
        with pytest.raises(StreamConflictError):
            observer.create(sid, StreamController())
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        assert wait_until(lambda: not observer.has(sid), timeout=TEST_LIVENESS_TTL + 5, interval=0.02)
        # Redis expires keys to the millisecond; the rest is polling and scheduling slack.
        assert time.monotonic() - killed <= TEST_LIVENESS_TTL + 1.0
        observer.create(sid, StreamController())  # a dead owner does not count
        assert observer.has(sid)


FORK_SCRIPT = """
import os, sys, time
from session_manager import StreamController
from session_manager.redis import RedisStreamSessionManager

url, prefix = sys.argv[1:3]
streams = RedisStreamSessionManager(url, prefix=prefix, liveness_ttl=2, heartbeat_interval=0.5)

def first_data(controller, timeout=10):
    deadline = time.monotonic() + timeout
    for chunk in controller:  # pings every 0.2 s keep the deadline checked
        if chunk.startswith(b"data: "):
            return chunk
        if time.monotonic() > deadline:
            return None

def wait_for(sid):
    deadline = time.monotonic() + 10
    while not streams.has(sid) and time.monotonic() < deadline:
        time.sleep(0.02)

mine = StreamController(keepalive=0.2)
streams.create("parent", mine)  # the parent's listener and heartbeat run before the fork
parent_node = streams.node_id
pid = os.fork()
if pid == 0:  # like a gunicorn --preload worker: same manager object, new process
    ok = False
    try:
        theirs = StreamController(keepalive=0.2)
        assert streams.node_id != parent_node and len(streams) == 0
        assert streams.has("parent")  # held by the parent process
        streams.create("child", theirs)
        streams.send(["parent"], '"from-child"')
        ok = first_data(theirs) == b'data: "from-parent"\\n\\n'
        streams.close()
    finally:
        os._exit(0 if ok else 1)
wait_for("child")
streams.send(["child"], '"from-parent"')
got = first_data(mine)
_, status = os.waitpid(pid, 0)
print(got == b'data: "from-child"\\n\\n', os.waitstatus_to_exitcode(status))
streams.close()
"""


def test_a_forked_process_is_a_new_node(redis_server, redis_prefix):
    result = run_python(FORK_SCRIPT, redis_server.url, redis_prefix)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "0"], result.stderr


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()

import json, sys
import gevent
from session_manager import StreamController
from session_manager.redis import RedisEventStore, RedisInfoSessionManager, RedisStreamSessionManager

url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
streams = RedisStreamSessionManager(url, prefix=prefix, liveness_ttl=2, heartbeat_interval=0.5)
sender = RedisStreamSessionManager(url, prefix=prefix)
info = RedisInfoSessionManager(url, prefix=prefix)
received = {}
ready = []

def consume(i):
    sid = f"g{i}"
    info.create(sid, client_info={"i": i})
    info.add_subscription(sid, "res://all")
    controller = StreamController(keepalive=0.2)
    streams.create(sid, controller)
    ready.append(sid)
    got = []
    for chunk in controller:
        got += [line[6:].decode() for line in chunk.split(b"\\n") if line.startswith(b"data: ")]
        if len(got) >= 2:
            break
    received[sid] = got

greenlets = [gevent.spawn(consume, i) for i in range(count)]
with gevent.Timeout(30):
    while len(ready) < count:
        gevent.sleep(0.01)
subscribers = info.get_subscriptions("res://all")
sender.send(None, '{"n":"broadcast"}')
sender.send(subscribers, '{"n":"targeted"}')
gevent.joinall(greenlets, timeout=30)
ok = sum(got == ['{"n":"broadcast"}', '{"n":"targeted"}'] for got in received.values())
print(json.dumps({"ok": ok, "subscribers": len(subscribers), "info": info.get("g7").client_info}))
streams.close(); sender.close(); info.close()
"""


def test_gevent_greenlets_receive_broadcast_and_targeted_sends(redis_server, redis_prefix):
    count = 300
    result = run_python(GEVENT_SCRIPT, redis_server.url, redis_prefix, str(count), timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"ok": count, "subscribers": count, "info": {"i": 7}}


def test_gevent_without_patched_socket_is_refused(redis_server):
    code = """
    from gevent import monkey
    monkey.patch_thread()  # threading patched, socket not
    from session_manager.redis import RedisInfoSessionManager, RedisStreamSessionManager
    import sys
    for cls in (RedisStreamSessionManager, RedisInfoSessionManager):
        try:
            cls(sys.argv[1])
        except RuntimeError as exc:
            print(exc)
    """
    result = run_python(code, redis_server.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all("socket" in line and "patch_all" in line for line in lines)


# -- faults ---------------------------------------------------------------------


def test_redis_restart_mid_stream_keeps_streams_and_delivers_later_sends(private_redis, readers, new_id, redis_prefix, caplog):
    caplog.set_level(logging.INFO, logger="session_manager.redis")
    kwargs = {"prefix": redis_prefix, "liveness_ttl": TEST_LIVENESS_TTL, "heartbeat_interval": TEST_HEARTBEAT}
    holder = RedisStreamSessionManager(private_redis.url, **kwargs)
    sender = RedisStreamSessionManager(private_redis.url, **kwargs)
    try:
        sid = new_id()
        reader = readers(holder, sid)
        sender.send([sid], msg("before"))
        assert ns(reader.take(1)) == ["before"]

        private_redis.restart()  # every key is lost: the holder must register again

        arrived = None
        deadline = time.monotonic() + 30
        i = 0
        while arrived is None and time.monotonic() < deadline:
            i += 1
            try:
                sender.send([sid], msg(f"retry-{i}"))
            except BackendUnavailableError:
                pass
            try:
                arrived = reader.messages.get(timeout=0.2)
            except queue.Empty:
                pass
        assert arrived is not None, "no targeted send arrived after the restart"
        reader.pending()  # drop retries still in flight
        assert not reader.controller.closed
        assert sender.has(sid)  # re-registered
        sender.send([sid], msg("after"))
        sender.send(None, msg("after-broadcast"))
        got = ns(reader.take(2))
        while got[0] != "after":  # a late retry may still come first
            got = got[1:] + ns(reader.take(1))
        assert got == ["after", "after-broadcast"]
        # Never silent: the outage is logged whether redis-py reconnected by itself or we did.
        assert any("resubscribed" in r.getMessage() for r in caplog.records), caplog.text
        assert any(r.levelno == logging.WARNING for r in caplog.records), caplog.text
    finally:
        holder.close()
        sender.close()


def test_redis_down_makes_calls_fail_fast_with_a_clear_error(private_redis, readers, new_id, redis_prefix):
    kwargs = {"prefix": redis_prefix, "liveness_ttl": TEST_LIVENESS_TTL, "heartbeat_interval": TEST_HEARTBEAT}
    streams = RedisStreamSessionManager(private_redis.url, **kwargs)
    info = RedisInfoSessionManager(private_redis.url, prefix=redis_prefix)
    try:
        sid = new_id()
        reader = readers(streams, sid)
        info.create(sid)
        private_redis.stop()
        calls = {
            "targeted send": lambda: streams.send([sid], msg("lost")),
            "broadcast": lambda: streams.send(None, msg("lost")),
            "has": lambda: streams.has(new_id()),
            "remote delete": lambda: streams.delete(new_id()),
            "create": lambda: streams.create(new_id(), StreamController()),
            "info get": lambda: info.get(sid),
            "info set": lambda: info.set_log_level(sid, "debug"),
            "info subscriptions": lambda: info.get_subscriptions("res://x"),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError, match=r"Redis at 127\.0\.0\.1:\d+/0 is unavailable") as exc:
                call()
            # No hang: bounded by the socket timeouts (5 s by default), refused connections fail at once.
            assert time.monotonic() - started < 6, f"{name} took too long"
            assert "retry later" in str(exc.value)
        assert streams.has(sid), "a stream held here stays open (and known) during the outage"
        assert not reader.controller.closed
    finally:
        streams.close()  # must not hang either, with Redis down
        info.close()
    assert reader.done.wait(5)


def test_connections_per_process_do_not_grow_with_sessions(private_redis, new_id, redis_prefix):
    streams = RedisStreamSessionManager(
        private_redis.url, prefix=redis_prefix, liveness_ttl=TEST_LIVENESS_TTL, heartbeat_interval=TEST_HEARTBEAT
    )
    info = RedisInfoSessionManager(private_redis.url, prefix=redis_prefix)
    stats = admin(private_redis)

    def ours() -> int:
        return sum(c["name"].startswith("session_manager:") for c in stats.client_list())

    def add_sessions(count: int) -> None:
        for _ in range(count):
            sid = new_id()
            info.create(sid, client_info={"name": "c"})
            info.add_subscription(sid, "res://x")
            streams.create(sid, StreamController())

    try:
        add_sessions(10)
        streams.send(None, msg("x"))
        time.sleep(2 * TEST_HEARTBEAT)  # a heartbeat ran
        at_10, threads_10 = ours(), threading.active_count()
        add_sessions(490)
        streams.send(None, msg("x"))
        assert len(info.get_subscriptions("res://x")) == 500
        time.sleep(2 * TEST_HEARTBEAT)
        at_500, threads_500 = ours(), threading.active_count()
        assert len(streams) == 500
        # listener + a few pooled command connections + the info pool, whatever the sessions
        assert at_10 <= 5 and at_500 <= 5
        assert at_500 <= at_10 + 1  # one more if the heartbeat happened to overlap a command
        assert threads_500 == threads_10
    finally:
        stats.close()
        streams.close()
        info.close()


def test_close_stops_threads_deletes_keys_and_is_idempotent(node_factory, new_id, redis_server, redis_prefix):
    before = {t.name for t in threading.enumerate()}
    streams = node_factory()
    controllers = [StreamController() for _ in range(5)]
    for controller in controllers:
        streams.create(new_id(), controller)
    names = [t.name for t in threading.enumerate() if t.name not in before]
    assert sorted(names) == ["session_manager-redis-heartbeat", "session_manager-redis-listener"]
    assert len(keys(redis_server, f"{redis_prefix}stream:*")) == 5
    started = time.monotonic()
    streams.close()
    assert time.monotonic() - started < 3
    assert all(c.closed for c in controllers)
    assert not [t for t in threading.enumerate() if t.name in names]
    assert keys(redis_server, f"{redis_prefix}*") == []
    streams.close()
    with pytest.raises(RuntimeError, match="closed"):
        streams.create(new_id(), StreamController())


def test_a_client_passed_in_is_used_as_is_and_left_open(redis_server, readers, new_id, redis_prefix):
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True, socket_timeout=5)
    try:
        streams = RedisStreamSessionManager(client, prefix=redis_prefix, liveness_ttl=2, heartbeat_interval=0.5)
        other = RedisStreamSessionManager(client, prefix=redis_prefix, liveness_ttl=2, heartbeat_interval=0.5)
        info = RedisInfoSessionManager(client, prefix=redis_prefix)
        sid = new_id()
        reader = readers(streams, sid)
        assert other.has(sid)
        other.send([sid], msg("decoded"))
        assert ns(reader.take(1)) == ["decoded"]
        info.create(sid, protocol_version="2025-11-25", client_info={"name": "é"})
        info.add_subscription(sid, "res://ü")
        assert info.get(sid) == SessionInfo("2025-11-25", {"name": "é"}, None, None)
        assert info.get_subscriptions("res://ü") == [sid]
        other.delete(sid)
        assert reader.done.wait(5)
        for manager in (streams, other, info):
            manager.close()
        assert client.ping()
    finally:
        client.close()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"liveness_ttl": 0}, ValueError),
        ({"liveness_ttl": 10, "heartbeat_interval": 6}, ValueError),
        ({"heartbeat_interval": -1}, ValueError),
        ({"prefix": ""}, ValueError),
        ({"prefix": 3}, TypeError),
        ({"max_connections": 1}, ValueError),
    ],
)
def test_stream_manager_rejects_bad_settings(redis_server, kwargs, error):
    with pytest.raises(error) as excinfo:
        RedisStreamSessionManager(redis_server.url, **kwargs)
    assert str(excinfo.value)


def test_bad_url_or_client_is_a_type_error():
    for cls in (RedisStreamSessionManager, RedisInfoSessionManager):
        with pytest.raises(TypeError, match="redis:// URL"):
            cls(42)
    with pytest.raises(ValueError, match="session_ttl"):
        RedisInfoSessionManager("redis://127.0.0.1:1/0", session_ttl=0)


@pytest.mark.parametrize(
    "url, problem",
    [
        ("localhost:6379", "scheme must be redis, rediss or unix"),
        ("http://127.0.0.1:6379/0", "scheme must be redis, rediss or unix, not 'http'"),
        ("", "scheme"),
        ("redis://127.0.0.1:port/0", "Port"),
        ("redis://127.0.0.1:70000/0", "Port"),
        ("redis://127.0.0.1:6379/abc", "the database must be a number, not 'abc'"),
        ("redis://:s3cret@/0", "no host"),
        ("unix://", "needs the socket's path"),
    ],
)
def test_a_malformed_redis_url_gets_one_error_that_shows_the_accepted_forms(url, problem):
    for cls in (RedisStreamSessionManager, RedisInfoSessionManager, RedisEventStore):
        with pytest.raises(ValueError, match="invalid Redis URL") as excinfo:
            cls(url)
        message = str(excinfo.value)
        assert problem in message and "redis://[[user]:password@]host[:port][/db]" in message
        assert "s3cret" not in message  # a password is never shown


# -- info -----------------------------------------------------------------------


def test_idle_sessions_expire_and_leave_no_subscription(redis_server, redis_prefix, new_id):
    info = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix, session_ttl=1)
    client = admin(redis_server)
    try:
        idle, busy = new_id(), new_id()
        for sid in (idle, busy):
            info.create(sid, client_info={"name": sid})
            info.add_subscription(sid, "res://shared")
        info.add_subscription(idle, "res://idle-only")
        idle_key = f"{redis_prefix}session:{idle}"
        # Keep busy active; watch idle's key without touching the session.
        deadline = time.monotonic() + 10
        while client.exists(idle_key) and time.monotonic() < deadline:
            assert info.get(busy) is not None
            time.sleep(0.2)
        assert not client.exists(idle_key), "idle session did not expire"
        assert not info.exists(idle) and info.get(idle) is None
        assert info.get_client_info(idle) is None
        with pytest.raises(SessionNotFoundError):
            info.set_log_level(idle, "info")
        assert info.get_subscriptions("res://shared") == [busy]
        assert info.get_subscriptions("res://idle-only") == []
        assert wait_until(lambda: keys(redis_server, f"{redis_prefix}*{idle}*") == [], timeout=5)
        info.create(idle)  # an expired id starts clean
        assert info.get_subscriptions("res://shared") == [busy]
    finally:
        client.close()
        info.close()


def test_activity_refreshes_the_session_and_its_subscriptions(redis_server, redis_prefix, new_id):
    info = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix, session_ttl=1.5)
    try:
        sid = new_id()
        info.create(sid)
        info.add_subscription(sid, "res://kept")
        calls = [info.exists, info.get, info.get_log_level, info.get_client_info, lambda s: info.set_log_level(s, "info")]
        end = time.monotonic() + 4
        i = 0
        while time.monotonic() < end:
            calls[i % len(calls)](sid)
            i += 1
            time.sleep(0.2)
        assert info.exists(sid)
        assert info.get_subscriptions("res://kept") == [sid]
    finally:
        info.close()


def test_delete_leaves_no_key_of_the_session(redis_server, redis_prefix, new_id):
    info = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix)
    try:
        sids = [new_id() for _ in range(3)]
        for sid in sids:
            info.create(sid, protocol_version="2025-11-25", client_info={"a": 1}, client_capabilities={"b": {}})
            info.set_log_level(sid, "debug")
            for uri in ("res://1", "res://2", f"res://{sid}"):
                info.add_subscription(sid, uri)
        info.remove_subscription(sids[0], "res://1")
        assert keys(redis_server, f"{redis_prefix}*{sids[0]}*")
        info.delete(sids[0])
        assert keys(redis_server, f"{redis_prefix}*{sids[0]}*") == []
        client = admin(redis_server)
        try:
            assert not any(client.sismember(k, sids[0]) for k in client.keys(f"{redis_prefix}uri:*"))
        finally:
            client.close()
        for sid in sids[1:]:
            info.delete(sid)
        assert keys(redis_server, f"{redis_prefix}*") == []
    finally:
        info.close()


def test_a_setter_racing_delete_never_resurrects_the_session(redis_server, redis_prefix, new_id):
    info = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix)
    try:
        for _ in range(30):
            sid = new_id()
            info.create(sid)
            start = threading.Barrier(3)

            def setter(call: Callable[[], None], start: threading.Barrier = start) -> None:
                start.wait(5)
                for _ in range(20):
                    try:
                        call()
                    except SessionNotFoundError:
                        return

            workers = [
                threading.Thread(target=setter, args=(lambda sid=sid: info.set_client_info(sid, {"x": 1}),)),
                threading.Thread(target=setter, args=(lambda sid=sid: info.add_subscription(sid, "res://race"),)),
            ]
            for worker in workers:
                worker.start()
            start.wait(5)
            info.delete(sid)
            for worker in workers:
                worker.join(10)
            assert not info.exists(sid)
            assert info.get_subscriptions("res://race") == []
            assert keys(redis_server, f"{redis_prefix}*{sid}*") == []
    finally:
        info.close()


def test_info_is_shared_by_managers_of_different_processes(redis_server, redis_prefix, new_id):
    one = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix)
    two = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix)
    try:
        sid = new_id()
        one.create(sid, protocol_version="2025-06-18")
        two.set_log_level(sid, "alert")
        two.add_subscription(sid, "res://a")
        assert one.get(sid) == SessionInfo("2025-06-18", None, None, "alert")
        assert one.get_subscriptions("res://a") == [sid]
        with pytest.raises(ValueError, match="already exists"):
            two.create(sid)
        one.delete(sid)
        assert not two.exists(sid)
        with pytest.raises(SessionNotFoundError):
            two.set_log_level(sid, "info")
    finally:
        one.close()
        two.close()


# -- replies to server-to-client requests, across processes ---------------------------


def test_a_reply_delivered_by_another_node_reaches_the_waiting_one_and_leaves_no_key(node_factory, redis_server):
    waiting, answering = node_factory(), node_factory()
    client = redis.Redis.from_url(redis_server.url)
    pending = waiting.expect_reply("sess", "s2c-00000000000000d1", 5)
    assert client.exists(f"{waiting._prefix}reply:s2c-00000000000000d1:sess") == 1
    assert not answering.deliver_reply("other", "s2c-00000000000000d1", '"foreign"')  # another session's key
    assert answering.deliver_reply("sess", "s2c-00000000000000d1", '"hello"')
    assert pending.wait(5) == '"hello"'
    assert not answering.deliver_reply("sess", "s2c-00000000000000d1", '"twice"')  # taken once
    assert client.exists(f"{waiting._prefix}reply:s2c-00000000000000d1:sess") == 0
    pending.cancel()
    assert len(waiting._node().replies) == 0


def test_a_pending_reply_key_expires_with_its_timeout(node_factory, redis_server):
    waiting = node_factory()
    client = redis.Redis.from_url(redis_server.url)
    pending = waiting.expect_reply("sess", "s2c-00000000000000d2", 0.3)
    key = f"{waiting._prefix}reply:s2c-00000000000000d2:sess"
    assert 0 < client.pttl(key) <= 300
    assert pending.wait(0.3) is None
    pending.cancel()
    assert wait_until(lambda: client.exists(key) == 0, timeout=5)  # Redis expired it
    assert not node_factory().deliver_reply("sess", "s2c-00000000000000d2", '"late"')
