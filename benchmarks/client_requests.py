"""Server-to-client round trips (issue 13, "Speed"): request out, reply in on another worker, handler resumed.

Each of S sessions has an open stream and a handler thread that asks its
client R times, as ``ctx.request`` does: register the request with the
stream manager (``expect_reply``), send it on the session's stream, wait
for the reply. Each session's client is a thread that reads the stream's
SSE frames, as an HTTP client would, and answers every request by handing
its reply to a stream manager (``deliver_reply``), as the worker that
receives the client's POST does:

- ``memory``: one process, one in-memory stream manager for both sides;
- ``redis``: two Redis stream managers on one Redis, i.e. two nodes with
  their own listeners, the way two worker processes are: the handler waits
  on one, the reply arrives on the other and travels through Redis (one
  script call: take the reply key, PUBLISH to the waiting node).

Printed: round trips/s over all sessions, and the latency of one round trip
(p50, p99). Also the memory one pending request costs in memory
(tracemalloc, 10,000 pending at once). A private redis-server is started
unless ``--redis URL`` is given.

    python benchmarks/client_requests.py [--sessions 50] [--round-trips 200] [--backend memory redis] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from session_manager import InMemoryStreamSessionManager, StreamController, StreamSessionManager
from session_manager.replies import new_request_id

TIMEOUT = 30.0


def client(streams: StreamSessionManager, sid: str, controller: StreamController, expected: int) -> None:
    """Read the session's SSE frames; answer each request through *streams* (the worker the reply reaches)."""
    answered = 0
    for frame in controller:
        for line in frame.decode().splitlines():
            if line.startswith("data: "):
                request = json.loads(line[6:])
                reply = {"jsonrpc": "2.0", "id": request["id"], "result": {"echo": request["params"]["n"]}}
                streams.deliver_reply(sid, request["id"], json.dumps(reply))
                answered += 1
        if answered == expected:
            return


def handler(streams: StreamSessionManager, sid: str, rounds: int, latencies: list[float]) -> None:
    """Ask the client *rounds* times, one request at a time, as a tool would with ctx.request."""
    for n in range(rounds):
        request_id = new_request_id()
        started = time.perf_counter()
        pending = streams.expect_reply(sid, request_id, TIMEOUT)
        streams.send([sid], json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "roots/list", "params": {"n": n}}))
        reply = pending.wait(TIMEOUT)
        pending.cancel()
        assert reply is not None and json.loads(reply)["result"]["echo"] == n, reply
        latencies.append(time.perf_counter() - started)


def run(server: StreamSessionManager, answering: StreamSessionManager, sessions: int, rounds: int) -> dict[str, float]:
    sids = [f"bench-{uuid.uuid4().hex}" for _ in range(sessions)]
    controllers = [StreamController(maxsize=rounds + 10) for _ in sids]
    for sid, controller in zip(sids, controllers):
        server.create(sid, controller)
    latencies: list[list[float]] = [[] for _ in sids]
    clients = [
        threading.Thread(target=client, args=(answering, sid, controller, rounds))
        for sid, controller in zip(sids, controllers)
    ]
    handlers = [threading.Thread(target=handler, args=(server, sid, rounds, lat)) for sid, lat in zip(sids, latencies)]
    for thread in clients:
        thread.start()
    started = time.perf_counter()
    for thread in handlers:
        thread.start()
    for thread in handlers:
        thread.join()
    elapsed = time.perf_counter() - started
    for sid in sids:
        server.delete(sid)
    for thread in clients:
        thread.join(5)
    every = sorted(x for lat in latencies for x in lat)
    assert len(every) == sessions * rounds
    return {
        "per_s": len(every) / elapsed,
        "p50_ms": statistics.median(every) * 1000,
        "p99_ms": every[int(len(every) * 0.99) - 1] * 1000,
    }


def bytes_per_pending(count: int = 10_000) -> float:
    """Memory held by one pending request of the in-memory manager (its registry entry and waiter)."""
    streams = InMemoryStreamSessionManager()
    streams._pending_replies()  # the registry itself is not per request
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    pending = [streams.expect_reply("session", new_request_id(), TIMEOUT) for _ in range(count)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    ids = sum(sys.getsizeof(p.request_id) for p in pending)  # made by the caller, held by the entry
    return (size + ids) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50, help="sessions asking at once (default 50)")
    parser.add_argument("--round-trips", type=int, default=200, help="round trips per session (default 200)")
    parser.add_argument("--backend", nargs="+", choices=["memory", "redis"], default=["memory", "redis"])
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend; the best is printed with the median")
    parser.add_argument("--redis", help="Redis URL (default: a private redis-server)")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, pid {os.getpid()}: {args.sessions} sessions x {args.round_trips} round trips")
    print(f"memory per pending request (in memory): {bytes_per_pending():,.0f} B")
    for backend in args.backend:
        runs = []
        for _ in range(args.repeat):
            if backend == "memory":
                streams = InMemoryStreamSessionManager()
                runs.append(run(streams, streams, args.sessions, args.round_trips))
                streams.close()
            else:
                runs.append(run_redis(args))
        best = max(runs, key=lambda r: r["per_s"])
        median = statistics.median(r["per_s"] for r in runs)
        print(
            f"{backend:<7} round trips/s {best['per_s']:>10,.0f} [median {median:>10,.0f}]   "
            f"p50 {best['p50_ms']:6.2f} ms   p99 {best['p99_ms']:6.2f} ms"
        )


def run_redis(args: argparse.Namespace) -> dict[str, float]:
    """Two nodes (as two workers) on one Redis: the handler waits on one, the reply reaches the other."""
    from session_manager.redis import RedisStreamSessionManager
    from tests.redis_server import url_or_private

    with url_or_private(args.redis) as (url, _):
        prefix = f"bench-{uuid.uuid4().hex[:8]}:"
        waiting = RedisStreamSessionManager(url, prefix=prefix, max_connections=args.sessions + 4)
        answering = RedisStreamSessionManager(url, prefix=prefix, max_connections=args.sessions + 4)
        try:
            return run(waiting, answering, args.sessions, args.round_trips)
        finally:
            waiting.close()
            answering.close()


if __name__ == "__main__":
    main()
