"""Fan-out through Redis at the manager level (no HTTP), against the in-memory manager, with Redis near or slow.

A *tool call* (the ``send`` step of one worker) sends M broadcasts at once to
N streams, as a server does when one request notifies every session. Each
stream is drained by a greenlet (as in a gevent WSGI worker) that counts the
chunks it gets: each chunk is one socket write in a real server.

For each shape N x M and each added Redis delay D (ms per round trip, by a
delaying proxy in front of redis-server: benchmarks/delay_proxy.py; 0 = no
proxy), every repeat runs one process set per backend (one warm-up tool
call, then ``--rounds`` of them, the median kept; sets alternate, so noise
hits both alike):

- ``memory``: one gevent process, ``InMemoryStreamSessionManager``; the tool
  call sends the M broadcasts with ``send_many`` (a loop of ``send``);
- ``redis``: W gevent processes (default 1) holding the N streams between
  them, ``RedisStreamSessionManager`` through the proxy; worker 0 makes the
  tool call: ``send_many`` (one round trip for the batch) or, with
  ``--sender loop``, M calls of ``send`` (one round trip each).

It prints per run: delivered notifications/s (from the tool call's start to
the last frame out of a generator), p50/p99 latency (message creation to
receipt), how long the tool call's sends blocked it, chunks per notification
(socket writes per delivered notification), and for Redis the commands per
broadcast (``INFO commandstats`` delta over the run: every command, those run
inside scripts included) and the Redis connections of each worker
(``CLIENT LIST``) at 10 streams and at N. Then min and median over the
repeats, and redis / memory of the same repeat, min and median (targets:
>= 0.7 at 1 ms, >= 0.5 at 5 ms). Workers and the in-memory process are pinned to the last CPU;
redis-server, the proxies and this script to the first (``--no-pin``: no
pinning).

    python benchmarks/redis_fanout_core.py                                # shapes 1000x20 200x50 50x200, 0/1/5 ms
    python benchmarks/redis_fanout_core.py --shape 2000x20 -w 3 --delay-ms 0 1 5 --repeat 5
    python benchmarks/redis_fanout_core.py --sender both                  # also M sends, one round trip each
    python benchmarks/redis_fanout_core.py --events on                    # resumable streams (event stores)
    python benchmarks/redis_fanout_core.py --redis redis://127.0.0.1:6379/0   # an existing Redis (no proxy then)

With ``--events on`` (or ``both``) the managers have event stores
(``InMemoryEventStore`` / ``RedisEventStore``): every broadcast is stored,
on the shared broadcast log in Redis (one XADD, whatever N), in the same
script that publishes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

from delay_proxy import spawn_proxy

#: Streams open at the first connection count.
FEW = 10

WORKER = r"""
from gevent import monkey
monkey.patch_all()

import json, os, re, sys, time
import gevent, gevent.event, gevent.pool
import redis
from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, StreamController

config = json.loads(sys.argv[1])
if config["cpu"] is not None:
    os.sched_setaffinity(0, {config["cpu"]})
name, count, messages = config["name"], config["streams"], config["messages"]
if config["backend"] == "redis":
    from session_manager.redis import RedisEventStore, RedisStreamSessionManager
    pool = redis.BlockingConnectionPool.from_url(
        config["url"], max_connections=8, timeout=5, socket_timeout=5, client_name=name
    )
    client = redis.Redis(connection_pool=pool)
    store = RedisEventStore(client, prefix=config["prefix"]) if config["events"] else None
    # liveness_ttl 300: no heartbeat (nor its commands) during the measurement
    streams = RedisStreamSessionManager(client, prefix=config["prefix"], event_store=store, liveness_ttl=300)
else:
    streams = InMemoryStreamSessionManager(event_store=InMemoryEventStore() if config["events"] else None)

STAMP = re.compile(rb'"t": ?([0-9.]+)')
rounds = config["rounds"]
latencies = [[] for _ in range(rounds)]  # per tool call (round): every frame's latency
chunks, last = [0] * rounds, [0.0] * rounds
finished, all_in = [0] * rounds, [gevent.event.Event() for _ in range(rounds)]
frames = []

def line():
    return gevent.get_hub().threadpool.apply(sys.stdin.readline).strip()  # the hub runs meanwhile

def consume(stream):
    got = 0
    for chunk in stream:
        now = time.time()
        stamps = STAMP.findall(chunk)
        if not stamps:
            continue  # the priming event, a ping
        r = got // messages  # tool calls do not overlap: a chunk is of one round
        chunks[r] += 1
        latencies[r].extend(now - float(t) for t in stamps)
        got += len(stamps)
        last[r] = max(last[r], now)
        if got >= messages * (r + 1):
            finished[r] += 1
            if finished[r] == count:
                all_in[r].set()
            if r + 1 == rounds:
                return

def open_one(i):
    controller = StreamController(maxsize=4 * messages + 16)
    streams.create(f"{name}-{i}", controller)
    stream = iter(controller)
    frames.append(stream)  # kept until the end: a finished stream would delete its key during the run
    gevent.spawn(consume, stream)

def open_streams(n):
    start = len(frames)
    gevent.pool.Pool(8).map(open_one, range(start, start + n))

open_streams(min(config["few"], count))
print("at-few", flush=True)
line()
open_streams(count - len(frames))
streams.send_many([([name + "-nobody"], "{}")])  # loads the send script (once per Redis): not measured
print("ready", flush=True)
pad = "x" * 150
for r in range(rounds):
    result = {}
    if line() == "send":  # the tool call
        if config["sender"] == "batch":
            started = time.time()
            streams.send_many([(None, json.dumps({"t": started, "i": i, "pad": pad})) for i in range(messages)])
        else:
            started = time.time()
            for i in range(messages):
                streams.send(None, json.dumps({"t": time.time(), "i": i, "pad": pad}))
        result = {"started": started, "send_ms": (time.time() - started) * 1000}
    all_in[r].wait(60)
    result.update(latencies=latencies[r], last=last[r], chunks=chunks[r])
    print(json.dumps(result), flush=True)
line()
streams.close()
"""


def spawn(config: dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )


def tell(proc: subprocess.Popen[str], word: str) -> None:
    proc.stdin.write(word + "\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]


def expect(proc: subprocess.Popen[str], word: str) -> None:
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if line != word:
        raise RuntimeError(f"worker said {line!r}, expected {word!r}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def command_calls(admin: Any) -> dict[str, int]:
    """Calls of every command so far (``INFO commandstats``), scripts' own commands included."""
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in admin.info("commandstats").items()}


def connections(admin: Any, names: list[str]) -> list[int]:
    listed = [c.get("name") for c in admin.client_list()]
    return [listed.count(name) for name in names]


def run(backend: str, args: argparse.Namespace, streams: int, messages: int, url: str = "", admin: Any = None) -> list[dict[str, Any]]:
    """One process set: spawn the workers, open the streams, then a warm-up and ``--rounds`` tool calls; their figures."""
    workers = args.workers if backend == "redis" else 1
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    names = [f"bench-{prefix[5:-1]}-{i}" for i in range(workers)]
    shares = [streams // workers + (i < streams % workers) for i in range(workers)]
    rounds = args.rounds + 1
    procs = [
        spawn({
            "backend": backend, "url": url, "prefix": prefix, "name": name, "streams": share, "messages": messages,
            "events": args.events_on, "sender": args.sender_now, "cpu": args.worker_cpu, "rounds": rounds, "few": FEW,
        })
        for name, share in zip(names, shares)
    ]
    figures = []
    try:
        for proc in procs:
            expect(proc, "at-few")
        at_few = connections(admin, names) if admin is not None else []
        for proc in procs:
            tell(proc, "go")
        for proc in procs:
            expect(proc, "ready")
        time.sleep(0.5)  # every stream open and idle
        at_n = connections(admin, names) if admin is not None else []
        for r in range(rounds):
            before = command_calls(admin) if admin is not None else {}
            for proc in procs[1:]:
                tell(proc, "wait")
            tell(procs[0], "send")
            results = [json.loads(proc.stdout.readline()) for proc in procs]  # type: ignore[union-attr]
            after = command_calls(admin) if admin is not None else {}
            if r:  # round 0 warms up
                figures.append(round_figures(results, streams, messages, before, after, at_few, at_n))
            time.sleep(0.05)
        for proc in procs:
            tell(proc, "quit")
        for proc in procs:
            proc.wait(60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return figures


def round_figures(
    results: list[dict[str, Any]], streams: int, messages: int, before: dict[str, int], after: dict[str, int],
    at_few: list[int], at_n: list[int],
) -> dict[str, Any]:
    """What one tool call measured, over every worker."""
    latencies = [x for r in results for x in r["latencies"]]
    started = results[0]["started"]
    elapsed = max(r["last"] for r in results) - started
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    delta.pop("info", None)  # our own INFO
    delta = {name: calls for name, calls in delta.items() if calls}
    return {
        "delivered": len(latencies),
        "expected": streams * messages,
        "per_s": len(latencies) / elapsed if elapsed > 0 else float("nan"),
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "send_ms": results[0]["send_ms"],
        "chunks": sum(r["chunks"] for r in results) / max(1, len(latencies)),
        "commands": {name: calls / messages for name, calls in sorted(delta.items(), key=lambda kv: -kv[1])},
        "conn_few": at_few,
        "conn_n": at_n,
    }


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The tool call of median delivered/s (its other figures with it), failures summed."""
    ordered = sorted(rounds, key=lambda r: r["per_s"])
    middle = dict(ordered[len(ordered) // 2])
    middle["delivered"] = sum(r["delivered"] for r in rounds)
    middle["expected"] = sum(r["expected"] for r in rounds)
    return middle


def describe_commands(commands: dict[str, float]) -> str:
    """Commands per broadcast: all (those scripts run included), then the round trips (EVALSHA) and PUBLISHes."""
    if not commands:
        return ""
    others = [f"{name} {calls:.2f}" for name, calls in commands.items() if name not in ("evalsha", "publish")][:3]
    return (
        f"{sum(commands.values()):.2f}: evalsha {commands.get('evalsha', 0):.2f}, publish {commands.get('publish', 0):.2f}"
        + (f", {', '.join(others)}" if others else "")
    )


HEADER = "delay  shape      sender  backend   delivered/s  p50 ms  p99 ms  send ms  chunks/notif  commands/broadcast"


def line_of(delay: str, shape: str, sender: str, backend: str, r: dict[str, Any]) -> str:
    missing = "" if r["delivered"] == r["expected"] else f"  MISSING {r['expected'] - r['delivered']}"
    return (
        f"{delay:<5}  {shape:<9}  {sender:<6}  {backend:<8}  {r['per_s']:>11,.0f}  {r['p50']:>6.1f}  {r['p99']:>6.1f}  "
        f"{r['send_ms']:>7.1f}  {r['chunks']:>12.3f}  {describe_commands(r['commands'])}{missing}"
    )


@contextlib.contextmanager
def redis_urls(args: argparse.Namespace, redis_cpu: int | None) -> Iterator[tuple[dict[float, str], Any]]:
    """Redis URL per delay (a proxy each, 0: direct), and an admin client on the real server."""
    import redis

    from tests.redis_server import url_or_private

    with url_or_private(args.redis) as (url, server), contextlib.ExitStack() as stack:
        if server is not None and redis_cpu is not None:
            os.sched_setaffinity(server.process.pid, {redis_cpu})
        admin = redis.Redis.from_url(url)
        stack.callback(admin.close)
        urls = {}
        for delay in args.delay_ms:
            if delay == 0:
                urls[delay] = url
            elif server is None:
                sys.exit("--delay-ms needs the private redis-server (no --redis): the proxy runs on this host")
            else:
                port = stack.enter_context(spawn_proxy(server.port, delay, redis_cpu))
                urls[delay] = f"redis://127.0.0.1:{port}/0"
        yield urls, admin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs="+", default=["1000x20", "200x50", "50x200"], help="N x M: streams x broadcasts")
    parser.add_argument("--delay-ms", nargs="+", type=float, default=[0, 1, 5], help="added per Redis round trip")
    parser.add_argument("-w", "--workers", type=int, default=1, help="Redis worker processes holding the streams")
    parser.add_argument("--sender", choices=["batch", "loop", "both"], default="batch")
    parser.add_argument("--events", choices=["off", "on", "both"], default="off", help="event stores (resumable streams)")
    parser.add_argument("--repeat", type=int, default=3, help="process sets per backend and delay (alternating)")
    parser.add_argument("--rounds", type=int, default=5, help="tool calls per process set (after one warm-up)")
    parser.add_argument("--redis", help="Redis URL (default: a private redis-server)")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.pin and len(cpus) > 1
    args.worker_cpu = cpus[-1] if pinned else None
    redis_cpu = cpus[0] if pinned else None
    if redis_cpu is not None:
        os.sched_setaffinity(0, {redis_cpu})
    shapes = [tuple(int(x) for x in shape.lower().split("x")) for shape in args.shape]
    senders = ["batch", "loop"] if args.sender == "both" else [args.sender]
    events = {"off": [False], "on": [True], "both": [False, True]}[args.events]
    print(
        f"workers {args.workers}; CPUs: workers {args.worker_cpu}, redis/proxy {redis_cpu}; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    runs: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    with redis_urls(args, redis_cpu) as (urls, admin):
        print(HEADER)
        for repeat in range(args.repeat):
            for events_on in events:
                args.events_on = events_on
                tag = "+ev" if events_on else ""
                for n, m in shapes:
                    shape = f"{n}x{m}"
                    for sender in senders:
                        args.sender_now = sender
                        memory = median_round(run("memory", args, n, m))
                        runs.setdefault(("-", shape, sender, "memory" + tag), []).append(memory)
                        print(line_of("-", shape, sender, "memory" + tag, memory), flush=True)
                        for delay in args.delay_ms:
                            r = median_round(run("redis", args, n, m, urls[delay], admin))
                            r["ratio"] = r["per_s"] / memory["per_s"]
                            key = (f"{delay:g}ms", shape, sender, "redis" + tag)
                            runs.setdefault(key, []).append(r)
                            print(line_of(*key, r) + f"  x{r['ratio']:.2f}", flush=True)
            print(f"-- repeat {repeat + 1}/{args.repeat} done; load average {os.getloadavg()[0]:.2f}", flush=True)
    summarize(runs)


def summarize(runs: dict[tuple[Any, ...], list[dict[str, Any]]]) -> None:
    print("\nsummary: min / median over repeats (ratio: redis / memory of the same repeat)")
    print("delay  shape      sender  backend   delivered/s (min / median)  send ms (median)  chunks/notif  "
          "ratio (min / median)  commands/broadcast  connections at 10 / at N")
    for (delay, shape, sender, backend), results in runs.items():
        rates = [r["per_s"] for r in results]
        ratio = ""
        if "ratio" in results[0]:
            ratios = [r["ratio"] for r in results]
            ratio = f"{min(ratios):.2f} / {statistics.median(ratios):.2f}"
        conns = f"{results[-1]['conn_few']} / {results[-1]['conn_n']}" if results[-1]["conn_n"] else ""
        print(
            f"{delay:<5}  {shape:<9}  {sender:<6}  {backend:<8}  {min(rates):>11,.0f} / {statistics.median(rates):>11,.0f}  "
            f"{statistics.median(r['send_ms'] for r in results):>16.1f}  "
            f"{statistics.median(r['chunks'] for r in results):>12.3f}  {ratio:>20}  "
            f"{describe_commands(results[-1]['commands'])}  {conns}"
        )


if __name__ == "__main__":
    main()
