"""Fan-out benchmark of the in-memory stream manager (issue 2).

N streams, each drained by a consumer; M broadcasts of a ~200-byte message;
then one targeted ``send([sid], data)`` per session (ten passes per timed
run, so GC pauses are amortised rather than hit or missed). Prints broadcast
deliveries per second (SSE frames that came out of the generators),
targeted sends per second and memory per idle open stream, for two kinds
of consumer, each on one core:

* ``sync``: every consumer generator is pulled round-robin by the same
  thread, for as long as its queue holds frames (a generator yields one
  chunk of up to 64 frames per resume). This is the CPU cost of the core
  alone, producer and consumer, with no scheduler in between.
* ``gevent``: N greenlets, each iterating its controller like a gevent WSGI
  worker, under ``gevent.monkey.patch_all()`` (run in a child process, as
  patching must come first).

Broadcasts are measured two ways: ``burst`` (all M sends, then the
consumers catch up: frames are batched into chunks) and ``interleaved``
(after every send each consumer takes its one frame: the worst case, one
generator resume per frame). Frames are counted as
``chunk.count(b"\\n\\n")`` minus keep-alive pings.

    python benchmarks/fanout.py                 # both modes
    python benchmarks/fanout.py --mode sync -n 10000 -m 100
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc

TARGETS = {"deliveries": 250_000, "targeted": 500_000, "bytes_per_stream": 8 * 1024}
NODE = {"deliveries": 110_000, "targeted": 4_300}
#: Passes of one targeted send per session in each timed run.
TARGETED_ROUNDS = 10


def pin_one_core() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    return f"pinned to CPU {cpus[-1]} of {cpus}"


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def payload(size: int, n: object) -> str:
    head = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "n": n, "data": ""}}
    pad = size - len(json.dumps(head, separators=(",", ":")))
    head["params"]["data"] = "x" * max(0, pad)
    return json.dumps(head, separators=(",", ":"))


class gc_mode:
    """Leave the cyclic GC on (as a server runs), or switch it off with --no-gc."""

    def __init__(self, off: bool) -> None:
        self.off = off

    def __enter__(self) -> None:
        if self.off:
            gc.collect()
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.off:
            gc.enable()


def best_and_median(runs: list, key: str) -> tuple[dict, float]:
    ordered = sorted(runs, key=lambda r: r[key])
    return ordered[-1], ordered[len(ordered) // 2][key]


# -- sync mode -------------------------------------------------------------------


def make_streams(store: bool, max_events: int):
    """The manager under test: plain, or resumable (every event stored and id'd)."""
    from session_manager import InMemoryEventStore, InMemoryStreamSessionManager

    return InMemoryStreamSessionManager(event_store=InMemoryEventStore(max_events) if store else None)


def run_sync(n: int, m: int, size: int, repeat: int, no_gc: bool, store: bool = False, max_events: int = 1000) -> dict:
    from session_manager import StreamController
    from session_manager.sse import PING

    streams = make_streams(store, max_events)
    ids = [f"session-{i:06d}" for i in range(n)]

    gc.collect()
    rss0 = rss_bytes()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    controllers = []
    generators = []
    for sid in ids:
        controller = StreamController()
        streams.create(sid, controller)
        controllers.append(controller)
        generators.append(iter(controller))
    # The queue objects each consumer polls (harness bookkeeping, not the core).
    queues = [c._queue for c in controllers]
    pairs = list(zip(generators, queues))

    def drain() -> int:
        frames = 0
        for gen, q in pairs:
            while q.qsize():
                chunk = next(gen)
                frames += chunk.count(b"\n\n") - chunk.count(PING)
        return frames

    messages = [payload(size, i) for i in range(m)]
    frame_bytes = len(messages[0].encode()) + len(b"data: \n\n")

    # Warm-up: every generator starts, yields one frame and is left suspended,
    # as an idle open stream is. Measured for memory, not for time.
    streams.send(None, payload(size, "warm"))
    assert drain() == n * (2 if store else 1)  # with a store, each stream's priming event too
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # What tracemalloc itself held is freed now; RSS would count it.
    rss1 = rss_bytes()

    burst, inter, targeted = [], [], []
    with gc_mode(no_gc):
        for _ in range(repeat):
            # burst: all sends, then the consumers catch up.
            t0 = time.perf_counter()
            for data in messages:
                streams.send(None, data)
            t1 = time.perf_counter()
            frames = drain()
            t2 = time.perf_counter()
            assert frames == n * m, frames
            burst.append({"deliveries_per_s": frames / (t2 - t0), "send_s": t1 - t0, "drain_s": t2 - t1})

            # interleaved: every consumer takes its frame after each send.
            t3 = time.perf_counter()
            frames = 0
            for data in messages:
                streams.send(None, data)
                frames += drain()
            t4 = time.perf_counter()
            assert frames == n * m, frames
            inter.append({"deliveries_per_s": frames / (t4 - t3), "s": t4 - t3})

            # targeted: one send([sid], data) per session, TARGETED_ROUNDS times
            # (a single round is too short to time against GC pauses).
            data = payload(size, "targeted")
            send_s = total_s = 0.0
            for _ in range(TARGETED_ROUNDS):
                t5 = time.perf_counter()
                for sid in ids:
                    streams.send([sid], data)
                t6 = time.perf_counter()
                frames = drain()
                t7 = time.perf_counter()
                assert frames == n, frames
                send_s += t6 - t5
                total_s += t7 - t5
            sends = n * TARGETED_ROUNDS
            targeted.append({"sends_per_s": sends / send_s, "end_to_end_per_s": sends / total_s})

    streams.close()
    for gen in generators:
        gen.close()
    return {
        "mode": "sync",
        "store": store,
        "n": n,
        "m": m,
        "frame_bytes": frame_bytes,
        "burst": burst,
        "interleaved": inter,
        "targeted": targeted,
        "memory": {
            "tracemalloc_bytes_per_stream": (after - before) / n,
            "rss_bytes_per_stream": (rss1 - rss0) / n,
            "what": "StreamController + registration in the manager + its started, suspended generator; "
            "RSS includes tracemalloc's own bookkeeping, so trust the tracemalloc figure",
        },
    }


# -- gevent mode ------------------------------------------------------------------


def run_gevent(n: int, m: int, size: int, repeat: int, no_gc: bool, store: bool = False, max_events: int = 1000) -> dict:
    from gevent import monkey

    if not monkey.is_module_patched("threading"):
        raise SystemExit("gevent mode must run with monkey.patch_all() first (use --mode gevent)")
    import gevent
    from gevent.event import Event

    from session_manager import StreamController
    from session_manager.sse import PING

    streams = make_streams(store, max_events)
    ids = [f"session-{i:06d}" for i in range(n)]
    state = {"frames": 0, "target": 0}
    reached = Event()

    def consume(controller: StreamController) -> None:
        for chunk in controller:
            state["frames"] += chunk.count(b"\n\n") - chunk.count(PING)
            if state["frames"] >= state["target"]:
                reached.set()

    def wait_for(total: int, timeout: float = 300.0) -> None:
        state["target"] = total
        if state["frames"] < total:
            reached.clear()
            if not reached.wait(timeout):
                raise SystemExit(f"only {state['frames']} of {total} frames arrived in {timeout}s")

    gc.collect()
    rss0 = rss_bytes()
    greenlets = []
    for sid in ids:
        controller = StreamController()
        streams.create(sid, controller)
        greenlets.append(gevent.spawn(consume, controller))
    gevent.sleep(0.1)  # every consumer runs and blocks on its empty queue
    gc.collect()
    rss1 = rss_bytes()

    messages = [payload(size, i) for i in range(m)]
    streams.send(None, payload(size, "warm"))
    wait_for(n * (2 if store else 1))  # with a store, each stream's priming event too

    burst, inter, targeted = [], [], []
    with gc_mode(no_gc):
        for _ in range(repeat):
            state["frames"] = 0
            t0 = time.perf_counter()
            for data in messages:
                streams.send(None, data)
            t1 = time.perf_counter()
            wait_for(n * m)
            t2 = time.perf_counter()
            burst.append({"deliveries_per_s": n * m / (t2 - t0), "send_s": t1 - t0, "drain_s": t2 - t1})

            state["frames"] = 0
            t3 = time.perf_counter()
            for data in messages:
                streams.send(None, data)
                gevent.sleep(0)  # let every consumer take its frame
            wait_for(n * m)
            t4 = time.perf_counter()
            inter.append({"deliveries_per_s": n * m / (t4 - t3), "s": t4 - t3})

            data = payload(size, "targeted")
            send_s = total_s = 0.0
            for _ in range(TARGETED_ROUNDS):
                state["frames"] = 0
                t5 = time.perf_counter()
                for sid in ids:
                    streams.send([sid], data)
                t6 = time.perf_counter()
                wait_for(n)
                t7 = time.perf_counter()
                send_s += t6 - t5
                total_s += t7 - t5
            sends = n * TARGETED_ROUNDS
            targeted.append({"sends_per_s": sends / send_s, "end_to_end_per_s": sends / total_s})

    streams.close()
    gevent.joinall(greenlets, timeout=60)
    return {
        "mode": "gevent",
        "store": store,
        "n": n,
        "m": m,
        "burst": burst,
        "interleaved": inter,
        "targeted": targeted,
        "memory": {
            "rss_bytes_per_stream": (rss1 - rss0) / n,
            "what": "StreamController + registration + a greenlet blocked iterating it (RSS delta)",
        },
    }


# -- output ---------------------------------------------------------------------------


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "meets target" if ok else "MISSES target"


def report(result: dict) -> None:
    mode = result["mode"]
    store = "with an InMemoryEventStore (ids + stored events)" if result["store"] else "no event store"
    print(f"\n== {mode} consumers, {store}: N={result['n']} streams, M={result['m']} broadcasts ==")
    burst, burst_median = best_and_median(result["burst"], "deliveries_per_s")
    inter, inter_median = best_and_median(result["interleaved"], "deliveries_per_s")
    targeted, targeted_median = best_and_median(result["targeted"], "sends_per_s")
    runs = len(result["burst"])
    print(f"(best of {runs} runs; median in brackets)")
    print(
        f"broadcast deliveries/s, burst       : {burst['deliveries_per_s']:>12,.0f} [{burst_median:>10,.0f}]  "
        f"{verdict(burst['deliveries_per_s'], TARGETS['deliveries'])} {TARGETS['deliveries']:,}; "
        f"sends {burst['send_s']:.3f}s + drain {burst['drain_s']:.3f}s"
    )
    print(
        f"broadcast deliveries/s, interleaved : {inter['deliveries_per_s']:>12,.0f} [{inter_median:>10,.0f}]  "
        f"{verdict(inter['deliveries_per_s'], TARGETS['deliveries'])} {TARGETS['deliveries']:,}; one frame per resume"
    )
    print(
        f"targeted sends/s (send calls)       : {targeted['sends_per_s']:>12,.0f} [{targeted_median:>10,.0f}]  "
        f"{verdict(targeted['sends_per_s'], TARGETS['targeted'])} {TARGETS['targeted']:,}"
    )
    print(f"targeted, send + delivery, per s    : {targeted['end_to_end_per_s']:>12,.0f}")
    memory = result["memory"]
    if "tracemalloc_bytes_per_stream" in memory:
        value = memory["tracemalloc_bytes_per_stream"]
        print(
            f"memory per idle stream, tracemalloc : {value:>12,.0f} B ({verdict(value, TARGETS['bytes_per_stream'], False)}"
            f" {TARGETS['bytes_per_stream']:,} B)"
        )
    print(f"memory per idle stream, RSS delta   : {memory['rss_bytes_per_stream']:>12,.0f} B")
    print(f"  (memory counts: {memory['what']})")


def compare(plain: dict, stored: dict) -> None:
    """What the event store costs: the share of delivered/s lost (target: at most 25%)."""
    print(f"\n== cost of the event store ({plain['mode']} consumers; medians) ==")
    for phase, key in (("burst", "deliveries_per_s"), ("interleaved", "deliveries_per_s"), ("targeted", "sends_per_s")):
        without = best_and_median(plain[phase], key)[1]
        with_store = best_and_median(stored[phase], key)[1]
        cost = 1 - with_store / without
        print(
            f"{phase:<12}: {without:>12,.0f} -> {with_store:>12,.0f} per s, cost {cost:6.1%}  "
            f"{'meets' if cost <= 0.25 else 'MISSES'} target <= 25%"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["sync", "gevent", "both"], default="both")
    parser.add_argument("-n", type=int, default=10_000, help="streams (default 10000)")
    parser.add_argument("-m", type=int, default=100, help="broadcast messages (default 100)")
    parser.add_argument("--size", type=int, default=200, help="message size in bytes (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each phase (default 3)")
    parser.add_argument("--no-gc", action="store_true", help="switch the cyclic GC off while timing")
    parser.add_argument("--json", action="store_true", help="print the raw result as JSON")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    parser.add_argument(
        "--store", choices=["none", "memory", "both"], default="both",
        help="run without an event store, with an InMemoryEventStore, or both and compare (default both)",
    )
    parser.add_argument("--max-events", type=int, default=1000, help="events kept per stream by the store")
    args = parser.parse_args()

    if args.mode == "gevent":
        from gevent import monkey

        monkey.patch_all()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    pinned = "not pinned (--no-pin)" if args.no_pin else pin_one_core()
    import session_manager

    print(
        f"session_manager {session_manager.__version__}, Python {sys.version.split()[0]}, "
        f"{args.mode} mode, {pinned}"
    )
    print(
        f"reference, @tmcp/session-manager on Node 20: ~{NODE['deliveries']:,} deliveries/s, "
        f"~{NODE['targeted']:,} targeted sends/s"
    )

    results = []
    stores = {"none": [False], "memory": [True], "both": [False, True]}[args.store]
    run = run_gevent if args.mode == "gevent" else run_sync
    for store in stores:
        results.append(run(args.n, args.m, args.size, args.repeat, args.no_gc, store, args.max_events))
        report(results[-1])
    if len(results) == 2:
        compare(*results)
    if args.json:
        print(json.dumps(results))
    if args.mode == "both":
        command = [sys.executable, os.path.abspath(__file__), "--mode", "gevent", "-n", str(args.n),
                   "-m", str(args.m), "--size", str(args.size), "--repeat", str(args.repeat)]
        if args.no_gc:
            command.append("--no-gc")
        if args.no_pin:
            command.append("--no-pin")
        command += ["--store", args.store, "--max-events", str(args.max_events)]
        if args.json:
            command.append("--json")
        sys.stdout.flush()
        return subprocess.call(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
