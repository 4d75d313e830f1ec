"""Open GET streams at scale (issue 16, "Speed and memory"): ours against tmcp at 1,000, 10,000 and 50,000 streams.

For each N (``--streams``) and each of ``--repeat`` runs, a fresh server
process of each kind (alternating, so noise hits both alike), pinned to one
core, this load generator pinned to the other:

1. warm-up: 20 sessions opened, sent one notification and deleted (first-request
   and first-send costs do not count as memory per stream);
2. N sessions, 50 at a time: POST initialize, POST notifications/initialized
   (over 8 keep-alive connections), then the session's GET stream on its own
   connection, kept open;
3. memory per idle stream: server VmRSS delta over the N streams / N, each
   reading after a full GC in the server (``POST /bench/gc``);
4. ``POST /bench/notify?k=K``: the server sends K ``notifications/tools/list_changed``
   to every session. Delivered/s = N*K / (trigger to last receipt); the
   latency of a stream is trigger to its K-th notification (p50, p99). Every
   stream must get exactly K (else it counts as a failure).

- ours: listen_fanout.py's server: ``McpApp`` (in-memory managers, no event
  store, ``max_sessions=None``) on ``gevent.pywsgi`` (``log=None``, after
  ``monkey.patch_all()``); its ``/bench/notify`` calls ``McpApp.tools_list_changed()``
  K times, its ``/bench/gc`` runs ``gc.collect()``.
- tmcp: benchmarks/tmcp/serve.mjs: ``tmcp`` ``McpServer`` + ``@tmcp/transport-http``
  0.9 with its in-memory session managers, on ``srvx`` (Node run with
  ``--expose-gc``); ``/bench/notify`` calls ``server.changed('tools')`` K
  times, which the transport writes to every session's GET stream.

The load generator is http_fanout.py's asyncio client (hand-written HTTP/1.1,
a protocol per stream that de-chunks and splits SSE events). N open streams
take N file descriptors in each process and N local ports towards the
server's one port: this script raises its RLIMIT_NOFILE to the hard limit
(the servers inherit it; ours raises it itself too) and, where the hard limit
or ``net.ipv4.ip_local_port_range`` does not allow N, runs the largest N they
allow and says so. A run a server cannot complete (tmcp at 50,000, say) is
printed with the reason and the others go on (that server's later runs at
that N only if an earlier one succeeded). Every step is bounded in time.

Prints each run as listen_fanout.py's part 2 does ("srv wait": the server
runnable while a neighbour had its core; a run with a high one measured the
neighbours), then per N: KB per idle stream (median), delivered/s (min /
median / max), p99 (median) of each server, and ours / tmcp of the medians
against the goals of issue 16: KB per idle stream <= 0.6x tmcp's at 10,000,
delivered/s >= 3x tmcp's at 1,000 and 10,000. Its item 5 (min and max over 10
fresh runs at 1,000 x 20): ``--streams 1000 --repeat 10``.

    python benchmarks/stream_scale.py [--streams 1000 10000 50000] [--notifications 20]
                                      [--repeat 1] [--server ours|tmcp|both] [--no-pin]
"""

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

import http_fanout as hf
import listen_fanout as lf

#: What every notification of a run is, as both servers serialize it (no spaces).
LIST_CHANGED = b'"method":"notifications/tools/list_changed"'
#: File descriptors and local ports kept aside from N: the POST connections, the
#: trigger and GC requests, warm-up streams still closing, the processes' own files.
FD_MARGIN = 100
PORT_MARGIN = 200
#: Opening N sessions may take STEP_TIMEOUT plus this many seconds per session (20 ms: 50/s at the least).
SETUP_S_PER_SESSION = 0.02
#: Goals (issue 16): ours / tmcp of KB per idle stream at these N, and of delivered/s at these N.
MEMORY_GOAL = (0.6, {10_000})
RATE_GOAL = (3.0, {1_000, 10_000})


class Round(hf.Run):
    """A run's shared state, and every stream opened for it (closed at the end whatever happened)."""

    def __init__(self, k: int) -> None:
        super().__init__(k)
        self.opened: list[Notified] = []

    def close(self) -> None:
        for stream in self.opened:
            if stream.transport is not None:
                stream.transport.close()


class Notified(hf.Stream):
    """A session's GET stream that counts ``notifications/tools/list_changed``; the receipt time of its K-th."""

    run: Round

    def __init__(self, run: Round) -> None:
        super().__init__(run)
        run.opened.append(self)

    def events(self, data: bytes, now: float) -> None:
        sse = self.sse + data
        end = sse.rfind(b"\n\n") + 2  # complete events end at a blank line (neither server writes CR)
        if end < 2:
            self.sse = sse
            return
        events, self.sse = b"\n" + sse[:end], sse[end:]
        found = events.count(LIST_CHANGED)
        self.malformed += events.count(b"\ndata:") - found  # comments (": ping") are no data lines
        if not found:
            return
        before = self.count
        self.count += found
        self.run.counted(self, before, now)

    def exact(self) -> bool:
        """True if it got exactly K notifications and nothing else."""
        return not self.malformed and self.count == self.run.k


async def server_gc(port: int) -> None:
    status = await hf.post_once(port, hf.http_request("POST", "/bench/gc", port))
    if status != 200:
        raise RuntimeError(f"/bench/gc: {status}")


async def warm_up(port: int) -> None:
    """Sessions opened, sent one notification, deleted: first-request and first-send costs are paid before N."""
    run = Round(1)
    try:
        sessions = await asyncio.wait_for(
            hf.open_sessions(port, hf.WARMUP_SESSIONS, run, hf.WARMUP_NAME, Notified), hf.STEP_TIMEOUT
        )
        await lf.notify(port, 1)
        await asyncio.sleep(0.3)
        for sid, _ in sessions:
            await hf.post_once(port, hf.http_request("DELETE", "/mcp", port, sid))
    finally:
        run.close()
    await asyncio.sleep(0.5)


async def measure(port: int, pid: int, n: int, k: int) -> dict[str, Any]:
    """Warm-up, N sessions with their GET streams, K notifications to each: listen_fanout.py's figures."""
    await warm_up(port)
    await server_gc(port)
    rss_before = hf.rss_kb(pid)

    run = Round(k)
    run.expected = n
    try:
        started = time.time()
        await asyncio.wait_for(
            hf.open_sessions(port, n, run, "bench", Notified), hf.STEP_TIMEOUT + n * SETUP_S_PER_SESSION
        )
        setup_s = time.time() - started
        await asyncio.sleep(1.0)  # all N streams open and idle
        await server_gc(port)
        rss_after = hf.rss_kb(pid)
        times, cpu, send_ms, trigger_failed = await lf.delivery_window(
            run, [pid], n, k, lambda timeout: lf.notify(port, k, timeout)
        )
    finally:
        run.close()

    streams = run.opened
    return lf.figures(
        streams, k, times, cpu,
        kb=(rss_after - rss_before) / n, failures=sum(not s.exact() for s in streams) + trigger_failed,
        setup_s=setup_s, send_ms=send_ms,
    )


def bench(kind: str, cpu: int | None, n: int, k: int) -> dict[str, Any] | str:
    """One run on a fresh server process: the figures, or why the server could not do it."""
    try:
        proc, port = lf.STARTERS[kind](cpu)
    except (OSError, RuntimeError) as exc:
        return f"did not start: {exc}"
    try:
        return asyncio.run(measure(port, proc.pid, n, k))
    except (OSError, RuntimeError, asyncio.TimeoutError) as exc:  # refused, reset, timed out, a bad status
        alive = "" if proc.poll() is None else f"; the server exited with {proc.returncode}"
        return f"{type(exc).__name__}: {str(exc) or 'timed out'}{alive}"
    finally:
        hf.stop(proc)


def largest_n() -> tuple[int, str]:
    """The most streams one client may hold open to one server here, and what sets it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = []
    if hard != resource.RLIM_INFINITY:
        limits.append((hard - FD_MARGIN, f"file descriptors: hard limit {hard:,} (RLIMIT_NOFILE)"))
    with contextlib.suppress(OSError), open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        low, high = map(int, ports.read().split())
        limits.append((high - low + 1 - PORT_MARGIN, f"local ports {low}-{high} (net.ipv4.ip_local_port_range)"))
    return min(limits) if limits else (sys.maxsize, "")


def node_version() -> str:
    done = subprocess.run([lf.node_binary(), "--version"], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip() or "unknown"


def spread(runs: list[dict[str, Any]]) -> str:
    rates = sorted(r["per_s"] for r in runs)
    return f"{rates[0]:,.0f} / {statistics.median(rates):,.0f} / {rates[-1]:,.0f}"


def summarize(n: int, results: dict[str, list[dict[str, Any]]], failed: dict[str, list[str]]) -> None:
    """The table of one N: medians, delivered/s min / median / max, the ratios and the goals."""
    print(f"-- N={n:,}: median of {max(map(len, results.values()), default=0)} run(s) --")
    print("server  runs  KB/stream  delivered/s min / median / max   p99 ms  failures")
    summary = {}
    for kind, runs in results.items():
        if not runs:
            print(f"{kind:<6}  {0:>4}  could not: {failed[kind][0]}")
            continue
        summary[kind] = median = lf.median(runs)
        print(
            f"{kind:<6}  {len(runs):>4}  {median['kb']:>9.1f}  {spread(runs):>31}  {median['p99']:>6.1f}  "
            f"{median['failures']:>8}" + (f"  ({len(failed[kind])} run(s) could not)" if failed[kind] else "")
        )
    tmcp = summary.get("tmcp")
    for mine in [kind for kind in summary if kind != "tmcp"] if tmcp else []:
        ours = summary[mine]
        memory, rate, p99 = ours["kb"] / tmcp["kb"], ours["per_s"] / tmcp["per_s"], ours["p99"] / tmcp["p99"]
        goals = []
        if n in MEMORY_GOAL[1]:
            goals.append(f"KB/stream <= {MEMORY_GOAL[0]:g}x: {lf.verdict(memory <= MEMORY_GOAL[0])}")
        if n in RATE_GOAL[1]:
            goals.append(f"delivered/s >= {RATE_GOAL[0]:g}x: {lf.verdict(rate >= RATE_GOAL[0])}")
        print(
            f"{mine} / tmcp: KB/stream x{memory:.2f}, delivered/s x{rate:.2f}, p99 x{p99:.2f}"
            + (f"; goals: {', '.join(goals)}" if goals else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1_000, 10_000, 50_000], help="N open GET streams")
    parser.add_argument("--notifications", type=int, default=20, help="K tools/list_changed to every stream")
    parser.add_argument("--repeat", type=int, default=1, help="fresh runs per server and N (alternating)")
    parser.add_argument(
        "--server", choices=lf.SERVER_CHOICES, default="all", help="parked: ours on session_manager.pywsgi"
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let every process run on any core")
    args = parser.parse_args()
    if min(args.streams) < 1 or args.notifications < 1 or args.repeat < 1:
        parser.error("--streams, --notifications and --repeat must be positive")

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[-1] if args.pin and len(cpus) > 1 else None
    generator_cpu = cpus[0] if server_cpu is not None else None
    hf.prepare_process(generator_cpu)  # RLIMIT_NOFILE soft = hard here, and in the servers started from here
    kinds = lf.server_kinds(args.server)
    if "tmcp" in kinds:
        lf.ensure_tmcp()
    allowed, why = largest_n()
    print(
        f"open GET streams at scale (issue 16); K={args.notifications} tools/list_changed per stream; server on CPU "
        f"{server_cpu}, generator on CPU {generator_cpu}; at most {allowed:,} streams here ({why})"
        + (f"; Node {node_version()}" if "tmcp" in kinds else "")
        + f"; load average before: {lf.load_average()}"
    )
    for wanted in args.streams:
        n = min(wanted, allowed)
        capped = f" (asked for {wanted:,}: the largest N allowed here, {why})" if n < wanted else ""
        print(f"\n== N={n:,} open GET streams{capped}; load average {lf.load_average()} ==")
        print(lf.COLUMNS)
        results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        failed: dict[str, list[str]] = {kind: [] for kind in kinds}
        for run in range(1, args.repeat + 1):  # servers alternate, so noise hits both alike
            for kind in kinds:
                if failed[kind] and not results[kind]:
                    continue  # it could not on its first run: the same N on a fresh process would not either
                outcome = bench(kind, server_cpu, n, args.notifications)
                if isinstance(outcome, str):
                    failed[kind].append(outcome)
                    print(f"{kind:<10}  #{run:<5}  {n:>7}  could not: {outcome}", flush=True)
                else:
                    results[kind].append(outcome)
                    print(lf.row(kind, f"#{run}", outcome), flush=True)
        summarize(n, results, failed)
    print(f"\nload average after: {lf.load_average()}")


if __name__ == "__main__":
    main()
