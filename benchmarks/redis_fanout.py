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
   beforehand, on the generator's core) plays the tool call: it broadcasts
   K notifications over Redis managers, as one ``send_many`` batch (one
   round trip, one PUBLISH; ``--sender loop``: K ``send`` calls, one round
   trip and one PUBLISH each). Delivered/s = N*K / (first send to last
   receipt); latency = receipt - send time in the message. Every stream must
   get exactly K notifications, in order.
4. The same workload on one in-memory ``ours`` process (http_fanout.py's own
   measurement, broadcast by a trigger route: no other process can reach
   in-memory streams), and the ratio (target: Redis >= 0.5; with a slow
   Redis, >= 0.7 at 1 ms and >= 0.5 at 5 ms).

A slow Redis: ``--delay-ms 1 5`` puts a delaying proxy (benchmarks/delay_proxy.py,
on the generator's core) between every process and redis-server, adding that
much to each round trip; one Redis run per delay (0: no proxy).

Event stores: ``--events on`` (the default, as the example server) gives the
workers and the sender a ``RedisEventStore`` and compares with the in-memory
server with an ``InMemoryEventStore`` (``ours-ev``); ``--events off``: neither.

Socket writes: ``--strace`` attaches ``strace -f -c`` to the server processes
(the 3 workers; the in-memory server) for the broadcast window only and
prints their write syscalls (``sendto``, ``sendmsg``, ``write``, ``writev``)
per delivered notification, instead of rates (strace slows them down).

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
                                      [--delay-ms 0 1 5] [--sender batch|loop] [--events on|off] [--strace]
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
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

import http_fanout as hf
from delay_proxy import spawn_proxy
from redis_fanout_core import describe_commands

from examples.server import EVENTS_ENV, REDIS_URL_ENV, redis_managers
from session_manager._jsonrpc import notification

#: Sessions at the first connection count.
FEW = 10


def serve(cpu: int | None) -> None:
    """A worker process: the example app, sessions in Redis (``MCP_REDIS_URL``), on gevent.pywsgi."""
    from gevent.pywsgi import WSGIServer

    from examples.server import create_app

    hf.prepare_process(cpu)
    # No session cap: the sessions of earlier runs live on in Redis (session_ttl), and the
    # repeats together open more than the default max_sessions (10,000) would admit.
    app = create_app(max_sessions=None, max_sessions_per_principal=None)
    WSGIServer(hf.listen(), app, log=None).serve_forever()  # hf.listen() prints the port


def start_worker(url: str, cpu: int | None, events: bool) -> tuple["subprocess.Popen[str]", int]:
    """A worker process on a free port; returns it and its port."""
    cmd = [sys.executable, os.path.abspath(__file__), "--serve"] + ([] if cpu is None else ["--cpu", str(cpu)])
    env = dict(os.environ, **{REDIS_URL_ENV: url, EVENTS_ENV: "1" if events else "0"})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    line = proc.stdout.readline().split()  # type: ignore[union-attr]
    if len(line) != 2 or line[0] != "PORT":
        hf.stop(proc)
        raise RuntimeError(f"worker failed to start: {line}")
    return proc, int(line[1])


def redis_connections(client: Any, redis_port: int, pids: Sequence[int], proxied: bool = False) -> list[int]:
    """Connections of each process in ``CLIENT LIST``: client address -> socket inode -> owning pid.

    Through a proxy (*redis_port* is then the proxy's), Redis lists the
    proxy's connections: every socket of a process to that port counts.
    """
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
                port = inode_of_port.get(target[8:-1]) if target.startswith("socket:[") else None
                count += port is not None and (proxied or port in listed)
        counts.append(count)
    return counts


def send(url: str, k: int, size: int, kind: str, events: bool) -> None:
    """The sender process (the tool call): connect, say "ready", and on "go" broadcast K notifications.

    ``batch``: one ``send_many`` (one round trip, one PUBLISH for all K);
    ``loop``: K ``send`` calls (one round trip and one PUBLISH each). Prints
    the seconds the sends blocked the caller.
    """
    streams = redis_managers(url, events=events).streams
    streams.send_many([(["warm-up"], "{}")])  # the pool's connection is open and the script loaded before "go"
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    messages = [notification("notifications/message", hf.bench_params(seq, size)) for seq in range(k)]
    if kind == "batch":
        streams.send_many([(None, message) for message in messages])
    else:
        for message in messages:
            streams.send(None, message)
    print(time.perf_counter() - started, flush=True)
    streams.close()


def start_sender(url: str, k: int, size: int, kind: str, events: bool) -> "subprocess.Popen[str]":
    """This script in sender mode, on the generator's core (it is not part of the server side)."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--send", url, str(k), str(size), kind, "1" if events else "0"],
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


def start_strace(pids: Sequence[int]) -> tuple["subprocess.Popen[bytes]", str]:
    """``strace -f -c`` on *pids* (every thread), counting their write syscalls; stop it with :func:`stop_strace`."""
    fd, path = tempfile.mkstemp(prefix="redis_fanout-strace-")
    os.close(fd)
    cmd = ["strace", "-f", "-c", "-e", "trace=write,writev,sendto,sendmsg", "-o", path]
    proc = subprocess.Popen(cmd + [arg for pid in pids for arg in ("-p", str(pid))], stderr=subprocess.DEVNULL)
    return proc, path


def stop_strace(tracer: tuple["subprocess.Popen[bytes]", str]) -> dict[str, int]:
    """Detach and return the calls of each write syscall (``strace -c``'s table)."""
    proc, path = tracer
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    calls = {}
    with open(path) as table:
        for line in table:
            fields = line.split()
            if len(fields) >= 5 and fields[-1] in ("write", "writev", "sendto", "sendmsg") and fields[3].isdigit():
                calls[fields[-1]] = int(fields[3])
    os.unlink(path)
    return calls


async def measure_redis(
    args: argparse.Namespace, url: str, conn_port: int, proxied: bool, ports: Sequence[int], pids: Sequence[int]
) -> dict[str, Any]:
    """One Redis run: warm-up, N sessions over the workers, the sender's K broadcasts; its figures."""
    import redis

    n, k = args.sessions, args.notifications
    admin = redis.Redis.from_url(args.admin_url)  # the real server, never through the proxy
    loop = asyncio.get_running_loop()
    sender = start_sender(url, k, args.size, args.sender, args.events == "on")
    tracer = None
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
        at_few = redis_connections(admin, conn_port, pids, proxied)
        sessions += await open_spread(ports, n - FEW, run, "bench")
        setup_s = time.time() - started
        await asyncio.sleep(1.0)  # all N streams open and idle
        at_n = redis_connections(admin, conn_port, pids, proxied)
        per_worker = [a + b for a, b in zip(spread(FEW, len(ports)), spread(n - FEW, len(ports)))]
        if args.strace:
            tracer = start_strace(pids)
            await asyncio.sleep(1.0)  # attached to every thread

        gc.collect()
        gc.freeze()
        servers = [*pids, args.redis_pid] if args.redis_pid is not None else list(pids)  # not a --redis server
        server_cpu, own_cpu = servers_cpu(servers), time.process_time()
        commands = command_calls(admin)
        triggered = time.time()
        sender.stdin.write("go\n")  # type: ignore[union-attr]
        sender.stdin.flush()  # type: ignore[union-attr]
        with contextlib.suppress(asyncio.TimeoutError):  # missing deliveries are reported as failures
            await asyncio.wait_for(asyncio.shield(run.all_done), hf.STEP_TIMEOUT + n * k / 2000)
        done = time.time()
        server_cpu, own_cpu = servers_cpu(servers) - server_cpu, time.process_time() - own_cpu
        sent_s = float(await loop.run_in_executor(None, sender.stdout.readline))  # type: ignore[union-attr]
        commands = {name: calls - commands.get(name, 0) for name, calls in command_calls(admin).items()}
        writes = stop_strace(tracer) if tracer is not None else {}
        tracer = None
        await asyncio.sleep(0.3)  # anything beyond k per stream would show up as a failure
    finally:
        gc.unfreeze()
        admin.close()
        hf.stop(sender)
        if tracer is not None:
            stop_strace(tracer)
    for _, stream in sessions:
        stream.transport.close()  # type: ignore[union-attr]
    figures = delivery_figures(sessions, run, triggered)
    figures.update({
        "sessions": n,
        "per_worker": per_worker,
        "srv_cpu": server_cpu / (done - triggered),
        "gen_cpu": own_cpu / (done - triggered),
        "setup_s": setup_s,
        "send_ms": sent_s * 1000,
        "conn_few": at_few,
        "conn_n": at_n,
        "commands": {name: calls / k for name, calls in sorted(commands.items(), key=lambda kv: -kv[1]) if calls},
        "writes": sum(writes.values()) / max(1, figures["delivered"]) if args.strace else float("nan"),
    })
    return figures


def command_calls(admin: Any) -> dict[str, int]:
    """Calls of every command so far (``INFO commandstats``, scripts' own included), but INFO's and CLIENT's."""
    stats = admin.info("commandstats")
    return {name[8:]: entry["calls"] for name, entry in stats.items() if name not in ("cmdstat_info", "cmdstat_client|list")}


def delivery_figures(sessions: list[tuple[str, "hf.Stream"]], run: "hf.Run", triggered: float) -> dict[str, Any]:
    """Delivered/s, latency percentiles and failures (streams without exactly seq 0..K-1, in order)."""
    window = max(run.last_receipt, triggered) - triggered
    latencies: list[float] = []
    failures = sum(not stream.check(latencies) for _, stream in sessions)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
    return {
        "delivered": len(latencies),
        "per_s": len(latencies) / window if window > 0 else 0.0,
        "p50": pick(0.50),
        "p99": pick(0.99),
        "failures": failures,
    }


async def measure_memory_writes(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """The in-memory server under strace: N sessions, then the trigger's K broadcasts; write syscalls per notification."""
    n, k = args.sessions, args.notifications
    run = hf.Run(k)
    run.expected = n
    sessions = await hf.open_sessions(port, n, run, "bench")
    await asyncio.sleep(1.0)
    tracer = start_strace([pid])
    try:
        await asyncio.sleep(1.0)
        triggered = time.time()
        broadcast = hf.http_request("POST", f"/bench/broadcast?k={k}&size={args.size}", port)
        trigger = asyncio.ensure_future(hf.post_once(port, broadcast, hf.STEP_TIMEOUT + n * k / 2000))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(run.all_done), hf.STEP_TIMEOUT + n * k / 2000)
        await trigger
    finally:
        writes = stop_strace(tracer)
        for _, stream in sessions:
            stream.transport.close()  # type: ignore[union-attr]
    figures = delivery_figures(sessions, run, triggered)
    figures.update({"sessions": n, "writes": sum(writes.values()) / max(1, figures["delivered"])})
    return figures


def bench_memory(server_cpu: int | None, args: argparse.Namespace) -> dict[str, Any]:
    """The in-memory server (with an event store if ``--events on``): http_fanout's run, or its writes under strace."""
    kind = "ours-ev" if args.events == "on" else "ours"
    if not args.strace:
        return hf.bench(kind, server_cpu, args)
    proc, port = hf.start_server(kind, server_cpu)
    try:
        return asyncio.run(measure_memory_writes(port, proc.pid, args))
    finally:
        hf.stop(proc)


def bench_redis(url: str, server_cpu: int | None, args: argparse.Namespace) -> dict[str, Any]:
    """W Redis-backed workers on their own ports, Redis at *url* (maybe a proxy); :func:`measure_redis`'s figures."""
    import redis

    port = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
    workers: list[tuple[subprocess.Popen[str], int]] = []
    try:
        for _ in range(args.workers):
            workers.append(start_worker(url, server_cpu, args.events == "on"))
        ports, pids = [p for _, p in workers], [proc.pid for proc, _ in workers]
        return asyncio.run(measure_redis(args, url, port, url != args.admin_url, ports, pids))
    finally:
        for proc, _ in workers:
            hf.stop(proc)


COLUMNS = (
    "backend    run     processes  sessions  delivered/s  p50 ms  p99 ms  failures  srv CPU  gen CPU  setup s  "
    "send ms  writes/notif  commands/broadcast"
)
NUMERIC = ("per_s", "p50", "p99", "srv_cpu", "gen_cpu", "setup_s", "send_ms", "writes")


def row(name: str, label: str, r: dict[str, Any], workers: int) -> str:
    processes = f"{workers}+redis" if name.startswith("redis") else "1"
    commands = describe_commands(r.get("commands") or {})
    return (
        f"{name:<9}  {label:<6}  {processes:>9}  {r['sessions']:>8}  {r['per_s']:>11,.0f}  {r['p50']:>6.1f}  "
        f"{r['p99']:>6.1f}  {r['failures']:>8}  {r.get('srv_cpu', float('nan')):>7.0%}  "
        f"{r.get('gen_cpu', float('nan')):>7.0%}  {r.get('setup_s', float('nan')):>7.1f}  "
        f"{r.get('send_ms', float('nan')):>7.1f}  {r.get('writes', float('nan')):>12.3f}  "
        + commands
    )


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the timing columns; failures summed; the rest from the last run."""
    summary = dict(runs[-1], failures=sum(r["failures"] for r in runs))
    summary.update({key: statistics.median(r[key] for r in runs) for key in NUMERIC if key in runs[-1]})
    summary["min_per_s"] = min(r["per_s"] for r in runs)
    return summary


@contextlib.contextmanager
def redis_urls(args: argparse.Namespace, proxy_cpu: int | None) -> Iterator[dict[float, str]]:
    """The Redis URL of each ``--delay-ms`` (a proxy each; 0: Redis itself); sets ``args.admin_url``, ``args.redis_pid``."""
    from tests.redis_server import url_or_private

    with url_or_private(args.redis) as (url, server), contextlib.ExitStack() as proxies:
        args.admin_url = url
        args.redis_pid = server.process.pid if server is not None else None
        urls = {}
        for delay in args.delay_ms:
            if delay == 0:
                urls[delay] = url
            elif server is None:
                sys.exit("--delay-ms needs the private redis-server (no --redis): the proxy runs on this host")
            else:
                urls[delay] = f"redis://127.0.0.1:{proxies.enter_context(spawn_proxy(server.port, delay, proxy_cpu))}/0"
        yield urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2000, help="N sessions with an open GET stream, over all workers")
    parser.add_argument("--notifications", type=int, default=20, help="K notifications broadcast to each")
    parser.add_argument("--size", type=int, default=200, help="bytes per notification on the wire")
    parser.add_argument("--workers", type=int, default=3, help="W gevent worker processes")
    parser.add_argument("--delay-ms", nargs="+", type=float, default=[0], help="added per Redis round trip (proxy)")
    parser.add_argument("--sender", choices=("batch", "loop"), default="batch", help="one send_many, or K send calls")
    parser.add_argument("--events", choices=("on", "off"), default="on", help="event stores on both sides")
    parser.add_argument("--strace", action="store_true", help="count the servers' write syscalls instead of rates")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each backend (alternating), medians printed")
    parser.add_argument("--redis", metavar="URL", help="use this Redis (default: start a private redis-server)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let every process run on any core")
    parser.add_argument("--skip-memory", action="store_true", help="skip the in-memory comparison")
    parser.add_argument("--send", nargs=5, help=argparse.SUPPRESS)  # the sender process: URL K SIZE KIND EVENTS
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # a worker process
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.cpu)
        return
    if args.send:
        url, k, size, kind, events = args.send
        send(url, int(k), int(size), kind, events == "1")
        return

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[-1] if args.pin and len(cpus) > 1 else None
    generator_cpu = cpus[0] if server_cpu is not None else None
    hf.prepare_process(generator_cpu)
    names = [f"redis@{delay:g}ms" for delay in args.delay_ms]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in (names if args.skip_memory else ["memory", *names])}
    with redis_urls(args, generator_cpu) as urls:
        if args.redis_pid is not None and server_cpu is not None:
            os.sched_setaffinity(args.redis_pid, {server_cpu})  # Redis is part of the server side
        placement = f"servers on CPU {server_cpu}, generator on CPU {cpus[0]}" if server_cpu is not None else "no pinning"
        print(
            f"N={args.sessions} sessions, K={args.notifications} notifications of ~{args.size} bytes, "
            f"{args.workers} workers, sender {args.sender}, event stores {args.events}"
            f"{', under strace' if args.strace else ''}; {placement}; load average before: {os.getloadavg()[0]:.2f}"
        )
        print(COLUMNS)
        for run in range(1, args.repeat + 1):  # alternating, so noise hits both alike
            for name, runs in results.items():
                if name == "memory":
                    runs.append(bench_memory(server_cpu, args))
                else:
                    runs.append(bench_redis(urls[args.delay_ms[names.index(name)]], server_cpu, args))
                print(row(name, f"#{run}", runs[-1], args.workers), flush=True)
    summary = {name: median(runs) for name, runs in results.items()}
    if args.repeat > 1:
        for name, r in summary.items():
            print(row(name, "median", r, args.workers))
    report(summary, results, args)


def report(summary: dict[str, dict[str, Any]], results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    for name, r in summary.items():
        if not name.startswith("redis"):
            continue
        print(
            f"{name}: sessions per worker {r['per_worker']}; the sender's {args.notifications} broadcasts blocked it "
            f"{r['send_ms']:.1f} ms; Redis connections per worker (CLIENT LIST): at {FEW} sessions {r['conn_few']}, "
            f"at {args.sessions} sessions {r['conn_n']} ({'constant' if r['conn_few'] == r['conn_n'] else 'CHANGED'}; "
            f"bound: streams pool 8 with the listener{' + event store pool 8' if args.events == 'on' else ''} "
            "+ info pool 8 + the note's pool 4)"
        )
        if "memory" in summary and not args.strace:
            ratios = [x["per_s"] / m["per_s"] for x, m in zip(results[name], results["memory"])]
            print(
                f"{name} / in-memory delivered rate: {r['per_s'] / summary['memory']['per_s']:.2f} of the medians "
                f"(per run: min {min(ratios):.2f}, median {statistics.median(ratios):.2f}; "
                "targets: >= 0.5 with Redis at hand, >= 0.7 at 1 ms, >= 0.5 at 5 ms)"
            )


if __name__ == "__main__":
    main()
