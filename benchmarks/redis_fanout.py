"""HTTP fan-out through Redis (issue 4, "Speed"): 3 gevent workers, a broadcast from another process.

1. A private redis-server (or ``--redis URL``) and W = 3 worker processes
   (this script with ``--serve``): examples/server.py's ``create_app()`` on
   gevent.pywsgi (``log=None``, after ``monkey.patch_all()``, as
   http_fanout.py's ``ours``), with ``MCP_REDIS_URL`` set, so the example
   takes the Redis managers (default prefix).
2. Warm-up sessions on every worker (pools and listeners start), then 10
   sessions, then N in all, spread evenly: initialize + GET stream each, by
   http_fanout.py's asyncio load generator. Redis connections of each worker
   are counted from ``CLIENT LIST`` at 10 and at N sessions (each client
   address mapped to its process through /proc): they must not grow.
3. A sender process (this script with ``--send``, started and connected
   beforehand, on the generator's core) broadcasts K notifications with a
   ``Notifier`` over Redis managers: one PUBLISH each. Delivered/s = N*K /
   (first send to last receipt); latency = receipt - send time in the message. Every stream must
   get exactly K notifications, in order.
4. The same workload on one in-memory ``ours`` process (http_fanout.py's own
   measurement, broadcast by a trigger route: no other process can reach
   in-memory streams), and the ratio (target: Redis >= 0.5).

Why three gevent.pywsgi processes on their own ports rather than ``gunicorn
-w 3``: gunicorn gives each new connection to whichever worker accepts first,
so how 2,000 streams split would vary from run to run; with one port per
worker the generator spreads them exactly, as a round-robin load balancer
would, and knows each worker's pid for CPU and connection figures. Each
session's POSTs and GET go to the same worker here; tests/test_redis_e2e.py
covers gunicorn itself and sessions spread over workers.

CPU: as in http_fanout.py, the generator runs on one core and the servers
on the other: the three workers and redis-server share that core, the same
server budget as the in-memory process (``--no-pin`` lets them spread).

    python benchmarks/redis_fanout.py [--sessions 2000] [--notifications 20] [--size 200] [--workers 3]
                                      [--repeat 1] [--redis redis://127.0.0.1:6379/0] [--no-pin] [--skip-memory]
"""

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    from gevent import monkey  # a worker process: patch before anything else

    monkey.patch_all()

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

import http_fanout as hf

from examples.server import REDIS_URL_ENV, redis_managers
from session_manager.flask import Notifier

#: Sessions at the first connection count.
FEW = 10


def serve(cpu: int | None) -> None:
    """A worker process: the example app, sessions in Redis (``MCP_REDIS_URL``), on gevent.pywsgi."""
    from gevent.pywsgi import WSGIServer

    from examples.server import create_app

    hf.prepare_process(cpu)
    WSGIServer(hf.listen(), create_app(), log=None).serve_forever()  # hf.listen() prints the port


def start_worker(url: str, cpu: int | None) -> tuple["subprocess.Popen[str]", int]:
    """A worker process on a free port; returns it and its port."""
    cmd = [sys.executable, os.path.abspath(__file__), "--serve"] + ([] if cpu is None else ["--cpu", str(cpu)])
    env = dict(os.environ, **{REDIS_URL_ENV: url})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    line = proc.stdout.readline().split()  # type: ignore[union-attr]
    if len(line) != 2 or line[0] != "PORT":
        hf.stop(proc)
        raise RuntimeError(f"worker failed to start: {line}")
    return proc, int(line[1])


def redis_connections(client: Any, redis_port: int, pids: Sequence[int]) -> list[int]:
    """Connections of each process in ``CLIENT LIST``: client address -> socket inode -> owning pid."""
    listed = {int(entry["addr"].rsplit(":", 1)[1]) for entry in client.client_list()}
    inode_of_port: dict[str, int] = {}
    with open("/proc/net/tcp") as table:  # sl local_address rem_address st ... inode
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == redis_port:
                inode_of_port[fields[9]] = int(fields[1].split(":")[1], 16)
    counts = []
    for pid in pids:
        count = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                count += target.startswith("socket:[") and inode_of_port.get(target[8:-1]) in listed
        counts.append(count)
    return counts


def send(url: str, k: int, size: int) -> None:
    """The sender process: connect, say "ready", and on "go" broadcast K notifications; print the seconds it took."""
    notifier = Notifier(redis_managers(url))
    notifier.managers.streams.has("warm-up")  # the pool's connection is open before "go"
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    for seq in range(k):  # one PUBLISH each, whatever the number of sessions
        notifier.broadcast("notifications/message", hf.bench_params(seq, size))
    print(time.perf_counter() - started, flush=True)
    notifier.managers.close()


def start_sender(url: str, k: int, size: int) -> "subprocess.Popen[str]":
    """This script in sender mode, on the generator's core (it is not part of the server side)."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--send", url, str(k), str(size)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    if proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
        hf.stop(proc)
        raise RuntimeError("the sender process failed to start")
    return proc


def servers_cpu(pids: Sequence[int]) -> float:
    """CPU seconds the processes *pids* ran (http_fanout.cpu_seconds: (ran, waited))."""
    return sum(hf.cpu_seconds(pid)[0] for pid in pids)


def spread(n: int, parts: int) -> list[int]:
    return [n // parts + (i < n % parts) for i in range(parts)]


async def open_spread(ports: Sequence[int], n: int, run: "hf.Run", name: str) -> list[tuple[str, "hf.Stream"]]:
    """*n* sessions split evenly over the workers, opened concurrently."""
    groups = await asyncio.gather(*(hf.open_sessions(port, count, run, name) for port, count in zip(ports, spread(n, len(ports)))))
    return [session for group in groups for session in group]


async def measure_redis(
    url: str, redis_port: int, redis_pid: int | None, ports: Sequence[int], pids: Sequence[int], n: int, k: int, size: int
) -> dict[str, Any]:
    import redis

    admin = redis.Redis.from_url(url)
    loop = asyncio.get_running_loop()
    sender = start_sender(url, k, size)
    try:
        warm = hf.Run(k)  # every worker's pools and listener start, then those sessions go
        for sid, stream in await open_spread(ports, hf.WARMUP_SESSIONS * len(ports), warm, hf.WARMUP_NAME):
            await hf.post_once(ports[0], hf.http_request("DELETE", "/mcp", ports[0], sid))  # any worker will do
            stream.transport.close()  # type: ignore[union-attr]

        run = hf.Run(k)
        run.expected = n
        started = time.time()
        sessions = await open_spread(ports, FEW, run, "bench")
        await asyncio.sleep(1.0)
        at_few = redis_connections(admin, redis_port, pids)
        sessions += await open_spread(ports, n - FEW, run, "bench")
        setup_s = time.time() - started
        await asyncio.sleep(1.0)  # all N streams open and idle
        at_n = redis_connections(admin, redis_port, pids)
        per_worker = [a + b for a, b in zip(spread(FEW, len(ports)), spread(n - FEW, len(ports)))]

        gc.collect()
        gc.freeze()
        servers = [*pids, redis_pid] if redis_pid is not None else list(pids)  # a --redis server is not ours to watch
        server_cpu, own_cpu = servers_cpu(servers), time.process_time()
        triggered = time.time()
        sender.stdin.write("go\n")  # type: ignore[union-attr]
        sender.stdin.flush()  # type: ignore[union-attr]
        with contextlib.suppress(asyncio.TimeoutError):  # missing deliveries are reported as failures
            await asyncio.wait_for(asyncio.shield(run.all_done), hf.STEP_TIMEOUT + n * k / 2000)
        done = time.time()
        server_cpu, own_cpu = servers_cpu(servers) - server_cpu, time.process_time() - own_cpu
        sent_s = float(await loop.run_in_executor(None, sender.stdout.readline))  # type: ignore[union-attr]
        await asyncio.sleep(0.3)  # anything beyond k per stream would show up as a failure
    finally:
        gc.unfreeze()
        admin.close()
        hf.stop(sender)
    for _, stream in sessions:
        stream.transport.close()  # type: ignore[union-attr]

    window = max(run.last_receipt, triggered) - triggered
    latencies: list[float] = []
    failures = sum(not stream.check(latencies) for _, stream in sessions)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
    return {
        "sessions": n,
        "per_worker": per_worker,
        "delivered": len(latencies),
        "per_s": len(latencies) / window if window > 0 else 0.0,
        "p50": pick(0.50),
        "p99": pick(0.99),
        "failures": failures,
        "srv_cpu": server_cpu / (done - triggered),
        "gen_cpu": own_cpu / (done - triggered),
        "setup_s": setup_s,
        "send_ms": sent_s * 1000,
        "conn_few": at_few,
        "conn_n": at_n,
    }


def bench_redis(url: str, server_cpu: int | None, args: argparse.Namespace) -> dict[str, Any]:
    """W Redis-backed workers on their own ports; returns :func:`measure_redis`'s figures."""
    import redis

    port = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
    workers: list[tuple[subprocess.Popen[str], int]] = []
    try:
        for _ in range(args.workers):
            workers.append(start_worker(url, server_cpu))
        ports, pids = [p for _, p in workers], [proc.pid for proc, _ in workers]
        return asyncio.run(measure_redis(url, port, args.redis_pid, ports, pids, args.sessions, args.notifications, args.size))
    finally:
        for proc, _ in workers:
            hf.stop(proc)


COLUMNS = "backend  run     processes  sessions  delivered/s  p50 ms  p99 ms  failures  srv CPU  gen CPU  setup s"
NUMERIC = ("per_s", "p50", "p99", "srv_cpu", "gen_cpu", "setup_s")


def row(name: str, label: str, r: dict[str, Any], workers: int) -> str:
    processes = f"{workers}+redis" if name == "redis" else "1"
    return (
        f"{name:<7}  {label:<6}  {processes:>9}  {r['sessions']:>8}  {r['per_s']:>11,.0f}  {r['p50']:>6.1f}  "
        f"{r['p99']:>6.1f}  {r['failures']:>8}  {r['srv_cpu']:>7.0%}  {r['gen_cpu']:>7.0%}  {r['setup_s']:>7.1f}"
    )


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the timing columns; failures summed; the rest from the last run."""
    summary = dict(runs[-1], failures=sum(r["failures"] for r in runs))
    summary.update({key: statistics.median(r[key] for r in runs) for key in NUMERIC})
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2000, help="N sessions with an open GET stream, over all workers")
    parser.add_argument("--notifications", type=int, default=20, help="K notifications broadcast to each")
    parser.add_argument("--size", type=int, default=200, help="bytes per notification on the wire")
    parser.add_argument("--workers", type=int, default=3, help="W gevent worker processes")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each backend (alternating), medians printed")
    parser.add_argument("--redis", metavar="URL", help="use this Redis (default: start a private redis-server)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let every process run on any core")
    parser.add_argument("--skip-memory", action="store_true", help="skip the in-memory comparison")
    parser.add_argument("--send", nargs=3, help=argparse.SUPPRESS)  # the sender process: URL K SIZE
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # a worker process
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.cpu)
        return
    if args.send:
        send(args.send[0], int(args.send[1]), int(args.send[2]))
        return

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[-1] if args.pin and len(cpus) > 1 else None
    hf.prepare_process(cpus[0] if server_cpu is not None else None)
    from tests.redis_server import url_or_private

    results: dict[str, list[dict[str, Any]]] = {"redis": []} if args.skip_memory else {"redis": [], "memory": []}
    with url_or_private(args.redis) as (url, server):
        args.redis_pid = server.process.pid if server is not None else None
        if server is not None and server_cpu is not None:
            os.sched_setaffinity(args.redis_pid, {server_cpu})  # Redis is part of the server side
        placement = f"servers on CPU {server_cpu}, generator on CPU {cpus[0]}" if server_cpu is not None else "no pinning"
        print(
            f"N={args.sessions} sessions, K={args.notifications} notifications of ~{args.size} bytes, "
            f"{args.workers} workers; {placement}; load average before: {os.getloadavg()[0]:.2f}"
        )
        print(COLUMNS)
        for run in range(1, args.repeat + 1):  # alternating, so noise hits both alike
            for name, runs in results.items():
                runs.append(bench_redis(url, server_cpu, args) if name == "redis" else hf.bench("ours", server_cpu, args))
                print(row(name, f"#{run}", runs[-1], args.workers), flush=True)
    summary = {name: median(runs) for name, runs in results.items()}
    if args.repeat > 1:
        for name, r in summary.items():
            print(row(name, "median", r, args.workers))
    report(summary, args)


def report(summary: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    redis_r = summary["redis"]
    print(f"sessions per worker: {redis_r['per_worker']}; the sender's {args.notifications} broadcasts took {redis_r['send_ms']:.1f} ms")
    print(
        f"Redis connections per worker (CLIENT LIST): at {FEW} sessions {redis_r['conn_few']}, "
        f"at {args.sessions} sessions {redis_r['conn_n']} "
        f"({'constant' if redis_r['conn_few'] == redis_r['conn_n'] else 'CHANGED'}; "
        "bound: streams pool 8 with the listener + info pool 8 + the note's pool 4)"
    )
    if "memory" in summary:
        ratio = redis_r["per_s"] / summary["memory"]["per_s"]
        print(f"redis / in-memory delivered rate{' (medians)' if args.repeat > 1 else ''}: {ratio:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
