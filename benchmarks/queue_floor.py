"""The floor under benchmarks/fanout.py: the same gevent workloads on bare queues.

N greenlets each block on their own ``queue.SimpleQueue`` (gevent's, after
``monkey.patch_all()``), with and without a ``get`` timeout (the controller
uses ``get(timeout=keepalive)`` for its pings). It measures puts/s into
queues whose reader is blocked (what a targeted send costs at least) and
interleaved deliveries/s (one put per queue, then every reader takes its
item). Whatever fanout.py's gevent mode measures above this is the core's
own cost.

    python benchmarks/queue_floor.py [-n 10000] [-m 100] [--no-gc]
"""

from gevent import monkey

monkey.patch_all()

import argparse
import gc
import os
import queue
import time

import gevent


def run(n: int, m: int, timeout: "float | None") -> "tuple[float, float]":
    queues = [queue.SimpleQueue() for _ in range(n)]
    count = [0]

    def consume(q: "queue.SimpleQueue[object]") -> None:
        while True:
            try:
                item = q.get(timeout=timeout) if timeout else q.get()
            except queue.Empty:
                continue
            if item is None:
                return
            count[0] += 1

    greenlets = [gevent.spawn(consume, q) for q in queues]
    gevent.sleep(0.1)

    t0 = time.perf_counter()
    for q in queues:
        q.put(b"x")
    puts = n / (time.perf_counter() - t0)
    while count[0] < n:
        gevent.sleep(0)

    count[0] = 0
    t0 = time.perf_counter()
    for _ in range(m):
        for q in queues:
            q.put(b"x")
        gevent.sleep(0)
    while count[0] < n * m:
        gevent.sleep(0)
    deliveries = n * m / (time.perf_counter() - t0)

    for q in queues:
        q.put(None)
    gevent.joinall(greenlets, timeout=60)
    return puts, deliveries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("-m", type=int, default=100)
    parser.add_argument("--no-gc", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    if args.no_gc:
        gc.disable()
    print(f"bare gevent SimpleQueue, N={args.n} blocked greenlets, gc {'off' if args.no_gc else 'on'}")
    for timeout in (None, 15.0):
        puts, deliveries = run(args.n, args.m, timeout)
        print(
            f"  get(timeout={timeout}): puts to blocked readers {puts:>10,.0f}/s   "
            f"interleaved deliveries {deliveries:>10,.0f}/s"
        )


if __name__ == "__main__":
    main()
