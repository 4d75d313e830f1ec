"""Fan-out through Redis, at the manager level (no HTTP): issue 4's benchmark core.

W gevent worker processes hold N streams between them (each drained by a
greenlet, like a gevent WSGI worker); a separate process (this one) sends M
broadcasts. Prints delivered notifications per second, p50/p99 latency
(send to the frame leaving the generator), and the Redis connections of each
worker (``CLIENT LIST``, by client name) at 10 sessions and at N: the count
must not grow with sessions. For comparison, the same broadcasts on the
in-memory manager in one gevent process.

    python benchmarks/redis_fanout_core.py                  # private redis-server, N=2000, W=3, M=20
    python benchmarks/redis_fanout_core.py --redis redis://127.0.0.1:6379/0 -n 5000
    python benchmarks/redis_fanout_core.py --event-store    # also with a RedisEventStore (resumable streams)

With ``--event-store`` the Redis run is repeated with resumable streams: each
broadcast is stored once, on the store's broadcast log, and published with its
event id in one script (O(1) in Redis, whatever the number of sessions), and
the two delivered rates are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
from gevent import monkey
monkey.patch_all()

import json, sys, time
import gevent
import redis
from session_manager import InMemoryStreamSessionManager, StreamController

mode, url, prefix, name, count, messages = sys.argv[1:7]
count, messages = int(count), int(messages)
if mode in ("redis", "redis-store"):
    from session_manager.redis import RedisEventStore, RedisStreamSessionManager
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=8, timeout=5, socket_timeout=5, client_name=name)
    client = redis.Redis(connection_pool=pool)
    store = RedisEventStore(client, prefix=prefix) if mode == "redis-store" else None
    streams = RedisStreamSessionManager(client, prefix=prefix, event_store=store)
else:
    streams = InMemoryStreamSessionManager()
latencies, last = [], [0.0]

def consume(sid, controller):
    got = 0
    for chunk in controller:
        now = time.time()
        for line in chunk.split(b"\n"):
            if line.startswith(b"data: {"):  # not the priming event (empty data)
                latencies.append(now - json.loads(line[6:])["t"])
                got += 1
        last[0] = now
        if got >= messages:
            return

def open_streams(n):
    for _ in range(n):
        controller = StreamController(maxsize=4 * messages)
        sid = f"{name}-{len(greenlets)}"
        streams.create(sid, controller)
        greenlets.append(gevent.spawn(consume, sid, controller))

greenlets = []
open_streams(min(10, count))
print("at10", flush=True)
sys.stdin.readline()
open_streams(count - len(greenlets))
print("ready", flush=True)
if mode == "memory":  # no separate process can reach it: send from here
    gevent.sleep(0.5)
    for i in range(messages):
        streams.send(None, json.dumps({"t": time.time(), "i": i, "pad": "x" * 150}))
        gevent.sleep(0)
gevent.joinall(greenlets, timeout=120)
print(json.dumps({"latencies": latencies, "last": last[0]}), flush=True)
streams.close()
"""


def connections(client, name: str) -> int:
    return sum(c.get("name") == name for c in client.client_list())


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def spawn(mode: str, url: str, prefix: str, name: str, count: int, messages: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, mode, url, prefix, name, str(count), str(messages)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )


def report(label: str, results: list[dict], started: float, expected: int) -> float:
    latencies = [x for r in results for x in r["latencies"]]
    elapsed = max(r["last"] for r in results) - started
    rate = len(latencies) / elapsed if elapsed > 0 else float("nan")
    print(
        f"{label}: delivered {len(latencies)}/{expected} in {elapsed:.3f} s = {rate:,.0f} notifications/s; "
        f"latency p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms"
    )
    return rate


def run_redis(url: str, sessions: int, workers: int, messages: int, event_store: bool = False) -> float:
    import redis

    from session_manager.redis import RedisEventStore, RedisStreamSessionManager

    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    names = [f"bench-worker-{i}" for i in range(workers)]
    shares = [sessions // workers + (i < sessions % workers) for i in range(workers)]
    mode = "redis-store" if event_store else "redis"
    procs = [spawn(mode, url, prefix, name, share, messages) for name, share in zip(names, shares)]
    admin = redis.Redis.from_url(url)
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "at10"
        time.sleep(1)
        at10 = [connections(admin, name) for name in names]
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        time.sleep(1)
        at_n = [connections(admin, name) for name in names]
        store = RedisEventStore(url, prefix=prefix) if event_store else None
        with RedisStreamSessionManager(url, prefix=prefix, event_store=store) as sender:
            started = time.time()
            for i in range(messages):
                sender.send(None, json.dumps({"t": time.time(), "i": i, "pad": "x" * 150}))
        results = [json.loads(proc.stdout.readline()) for proc in procs]
    finally:
        admin.close()
        for proc in procs:
            proc.wait(60)
    label = "redis with event store" if event_store else "redis"
    rate = report(f"{label}, {workers} workers, {sessions} sessions, {messages} broadcasts", results, started,
                  sessions * messages)
    print(f"Redis connections per worker: at 10 sessions {at10}, at {sessions // workers}+ sessions {at_n}")
    return rate


def run_memory(sessions: int, messages: int) -> float:
    proc = spawn("memory", "", "", "memory", sessions, messages)
    assert proc.stdout.readline().strip() == "at10"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "ready"
    started = time.time() + 0.5  # the worker sleeps 0.5 s before sending
    result = json.loads(proc.stdout.readline())
    proc.wait(60)
    return report(f"in-memory, 1 process, {sessions} sessions, {messages} broadcasts", [result], started,
                  sessions * messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="Redis URL (default: start a private redis-server)")
    parser.add_argument("-n", "--sessions", type=int, default=2000)
    parser.add_argument("-w", "--workers", type=int, default=3)
    parser.add_argument("-m", "--messages", type=int, default=20)
    parser.add_argument("--event-store", action="store_true", help="also run with a RedisEventStore and compare")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from tests.redis_server import url_or_private

    with url_or_private(args.redis) as (url, _):
        redis_rate = run_redis(url, args.sessions, args.workers, args.messages)
        if args.event_store:
            stored_rate = run_redis(url, args.sessions, args.workers, args.messages, event_store=True)
        memory_rate = run_memory(args.sessions, args.messages)
        print(f"redis / in-memory delivered rate: {redis_rate / memory_rate:.2f} (target >= 0.5)")
        if args.event_store:
            print(f"redis with / without event store delivered rate: {stored_rate / redis_rate:.2f}")


if __name__ == "__main__":
    main()
