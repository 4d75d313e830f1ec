"""Time to resume a stream that missed 10,000 events (issue 5).

A session's stream is opened, the client goes away, K messages of ~SIZE
bytes are sent to the session, then the client resumes with its last event
id: ``streams.create(sid, controller, last_event_id=...)`` (the store's
replay and framing) and the new stream is read until all K events came out.
Prints, per backend, the time of the resume call, the time until the last
replayed event left the generator, and events per second.

    python benchmarks/replay.py                       # memory and Redis (private redis-server), K=10000
    python benchmarks/replay.py --backend memory -k 10000 --repeat 5
    python benchmarks/replay.py --backend redis --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, StreamController, StreamSessionManager


def payload(size: int, n: int) -> str:
    head = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "n": n, "data": ""}}
    head["params"]["data"] = "x" * max(0, size - len(json.dumps(head, separators=(",", ":"))))
    return json.dumps(head, separators=(",", ":"))


def last_id(chunk: bytes) -> str:
    return chunk.rsplit(b"id: ", 1)[1].split(b"\n", 1)[0].decode()


def one_run(streams: StreamSessionManager, k: int, size: int) -> dict[str, float]:
    sid = f"replay-{uuid.uuid4().hex}"
    first = StreamController()
    streams.create(sid, first)
    frames = iter(first)
    primer = last_id(next(frames))  # the priming event: the client's last event id
    first.close()
    frames.close()
    data = [payload(size, i) for i in range(k)]
    for message in data:
        streams.send([sid], message)
    if not wait_stored(streams, sid, primer, k):
        raise SystemExit(f"the store did not hold {k} events for {sid} in time")
    second = StreamController(maxsize=16)
    t0 = time.perf_counter()
    streams.create(sid, second, last_event_id=primer)
    t1 = time.perf_counter()
    got = 0
    for chunk in second:
        got += chunk.count(b"\ndata: {")
        if got >= k:
            break
    t2 = time.perf_counter()
    second.close()
    streams.delete(sid)
    if got != k:
        raise SystemExit(f"replayed {got} of {k} events")
    return {"resume_s": t1 - t0, "total_s": t2 - t0}


def wait_stored(streams: StreamSessionManager, sid: str, primer: str, k: int, timeout: float = 60.0) -> bool:
    """Sends through Redis are stored synchronously; this only guards against a misconfigured run."""
    store = streams.event_store
    assert store is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(store.replay(sid, primer).events) >= k:
            return True
        time.sleep(0.05)
    return False


def bench(name: str, make: Callable[[int], StreamSessionManager], k: int, size: int, repeat: int) -> None:
    streams = make(k)
    try:
        runs: list[dict[str, float]] = [one_run(streams, k, size) for _ in range(repeat)]
    finally:
        streams.close()
    resume = statistics.median(r["resume_s"] for r in runs)
    total = statistics.median(r["total_s"] for r in runs)
    print(
        f"{name:<7}: resume call {resume * 1000:8.1f} ms, all {k:,} events out {total * 1000:8.1f} ms "
        f"({k / total:>10,.0f} events/s); median of {repeat}, best {min(r['total_s'] for r in runs) * 1000:.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["memory", "redis", "both"], default="both")
    parser.add_argument("-k", type=int, default=10_000, help="missed events to replay (default 10000)")
    parser.add_argument("--size", type=int, default=200, help="message size in bytes (default 200)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--redis", help="redis:// URL (default: a private redis-server on a free port)")
    args = parser.parse_args()
    print(f"replay of K={args.k:,} missed events of ~{args.size} B, store max_events = K")
    if args.backend in ("memory", "both"):
        bench("memory", lambda k: InMemoryStreamSessionManager(event_store=InMemoryEventStore(k)), args.k, args.size, args.repeat)
    if args.backend in ("redis", "both"):
        from session_manager.redis import RedisEventStore, RedisStreamSessionManager
        from tests.redis_server import url_or_private

        with url_or_private(args.redis) as (url, _):
            prefix = f"bench-{uuid.uuid4().hex[:8]}:"

            def make(k: int) -> StreamSessionManager:
                store = RedisEventStore(url, prefix=prefix, max_events=k)
                return RedisStreamSessionManager(url, prefix=prefix, event_store=store)

            bench("redis", make, args.k, args.size, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
