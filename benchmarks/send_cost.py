"""Nanoseconds per in-memory send, of several checkouts side by side in one process.

Differences of a few percent drown in the noise between fresh processes on a
shared machine; alternated in one process, 40 times, they do not. Each tree's
``session_manager`` is copied to a temporary package of its own name, so the
versions load together; each gets N streams registered in an
``InMemoryStreamSessionManager``. One round, per tree: R passes of one targeted
``send([sid], data)`` per stream (timed), a drain, then 20 broadcasts (timed per
delivery), a drain. Prints the minimum and first quartile over the rounds.

    git worktree add /tmp/old <rev>
    python benchmarks/send_cost.py /tmp/old .            # no event store
    python benchmarks/send_cost.py /tmp/old . --store -n 10000 --passes 1 --gc
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any


def load(trees: list[str], into: str) -> list[Any]:
    """Import the ``session_manager`` of every tree under a name of its own."""
    modules = []
    for index, tree in enumerate(trees):
        shutil.copytree(os.path.join(tree, "session_manager"), os.path.join(into, f"session_manager_{index}"))
    sys.path.insert(0, into)
    for index in range(len(trees)):
        modules.append(importlib.import_module(f"session_manager_{index}"))
    return modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", help="checkouts to compare (each holds session_manager/)")
    parser.add_argument("-n", type=int, default=1000, help="streams (default 1000)")
    parser.add_argument("--passes", type=int, default=5, help="targeted sends per stream per round (default 5)")
    parser.add_argument("--rounds", type=int, default=40, help="rounds, each tree once per round (default 40)")
    parser.add_argument("--store", action="store_true", help="with an InMemoryEventStore")
    parser.add_argument("--gc", action="store_true", help="leave the cyclic GC on while timing")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

    data = json.dumps(
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x" * 120}},
        separators=(",", ":"),
    )
    ids = [f"s{i:06d}" for i in range(args.n)]
    with tempfile.TemporaryDirectory() as into:
        setups = []
        for sm in load(args.trees, into):
            manager = sm.InMemoryStreamSessionManager(event_store=sm.InMemoryEventStore() if args.store else None)
            controllers = [sm.StreamController() for _ in ids]
            for sid, controller in zip(ids, controllers):
                manager.create(sid, controller)
            setups.append((manager, [controller._queue for controller in controllers]))

        def drain(queues: list[Any]) -> None:
            for q in queues:
                while q.qsize():
                    q.get_nowait()

        targeted: list[list[float]] = [[] for _ in args.trees]
        broadcast: list[list[float]] = [[] for _ in args.trees]
        if not args.gc:
            gc.disable()
        for _ in range(args.rounds):
            for index, (manager, queues) in enumerate(setups):
                send = manager.send
                took = 0.0
                for _ in range(args.passes):
                    started = time.perf_counter()
                    for sid in ids:
                        send([sid], data)
                    took += time.perf_counter() - started
                    drain(queues)
                targeted[index].append(took / (args.n * args.passes) * 1e9)
                started = time.perf_counter()
                for _ in range(20):
                    send(None, data)
                broadcast[index].append((time.perf_counter() - started) / (args.n * 20) * 1e9)
                drain(queues)
        gc.enable()

    print(f"N={args.n} streams, {'with' if args.store else 'no'} event store, GC {'on' if args.gc else 'off'}, "
          f"{args.rounds} rounds; ns, min and first quartile")
    for tree, sends, deliveries in zip(args.trees, targeted, broadcast):
        sends.sort()
        deliveries.sort()
        q = len(sends) // 4
        print(f"{tree:30s} targeted send {sends[0]:7.0f} {sends[q]:7.0f} | broadcast, per delivery "
              f"{deliveries[0]:6.1f} {deliveries[q]:6.1f}")


if __name__ == "__main__":
    main()
