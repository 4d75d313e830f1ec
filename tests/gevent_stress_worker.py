"""Run by tests/test_core_gevent.py in its own process: gevent stress and fan-out.

``gevent.monkey.patch_all()`` comes first, before session_manager (or
anything that imports threading/queue) is imported, as a gevent worker of
gunicorn does. Prints one JSON summary on stdout; exit code 0 means the
script ran to the end (the test judges the summary).
"""

from gevent import monkey

monkey.patch_all()

import json
import os
import sys
import time

import gevent

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from session_manager import InMemoryStreamSessionManager, StreamController
from tests.core_stress import gevent_runtime, run_stress
from tests.sse_parser import SSEParser


def fanout(consumers: int = 2000, messages: int = 100, time_limit: float = 60.0) -> dict:
    """Broadcast *messages* to *consumers* greenlets, each iterating its own controller.

    Even consumers read until their session is deleted; odd ones walk away
    (close their generator, as a WSGI server does when the client is gone)
    right after the last message, which must unregister their stream.
    """
    streams = InMemoryStreamSessionManager()
    received = [[] for _ in range(consumers)]
    callbacks = [0] * consumers
    errors = []
    controllers = []

    def consume(i: int, controller: StreamController) -> None:
        parser = SSEParser()
        frames = iter(controller)
        try:
            for chunk in frames:
                for event in parser.feed(chunk):
                    received[i].append(json.loads(event.data)["n"])
                if i % 2 and len(received[i]) >= messages:
                    frames.close()  # client gone
                    return
        except BaseException as exc:  # noqa: BLE001
            errors.append(f"consumer {i}: {exc!r}")

    def count_callback(i: int):
        def callback() -> None:
            callbacks[i] += 1

        return callback

    greenlets = []
    for i in range(consumers):
        controller = StreamController(keepalive=5.0, on_close=count_callback(i))
        streams.create(f"c{i}", controller)
        controllers.append(controller)
        greenlets.append(gevent.spawn(consume, i, controller))
    gevent.sleep(0)  # every consumer is now blocked on its empty queue

    started = time.monotonic()
    for n in range(messages):
        streams.send(None, json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "n": n}))
        if n % 3 == 0:
            gevent.sleep(0)  # let consumers run between some of the sends
    deadline = started + time_limit
    while time.monotonic() < deadline and sum(len(r) >= messages for r in received) < consumers:
        gevent.sleep(0.01)
    delivered_seconds = time.monotonic() - started

    abandoned_still_registered = sum(streams.has(f"c{i}") for i in range(1, consumers, 2))
    for i in range(0, consumers, 2):
        streams.delete(f"c{i}")
    gevent.joinall(greenlets, timeout=30)
    expected = list(range(messages))
    wrong = [i for i, got in enumerate(received) if got != expected]
    return {
        "consumers": consumers,
        "messages": messages,
        "complete_consumers": consumers - len(wrong),
        "wrong": [{"consumer": i, "got_count": len(received[i]), "head": received[i][:5]} for i in wrong[:5]],
        "errors": errors[:10],
        "stuck_consumers": sum(not g.dead for g in greenlets),
        "abandoned_still_registered": abandoned_still_registered,
        "callbacks_not_once": sum(c != 1 for c in callbacks),
        "left_streams": len(streams._streams),
        "all_closed": all(c.closed for c in controllers),
        "seconds": round(delivered_seconds, 3),
    }


def resume(consumers: int = 500, senders: int = 8, per_sender: int = 60, time_limit: float = 60.0) -> dict:
    """Greenlet senders and consumers that drop their stream and resume it three times each.

    Senders alternate broadcasts and targeted sends to every consumer.
    Each consumer reads until a random point, walks away without closing
    (a dead connection: the stream stays registered) and resumes with its
    last event id, which takes the stream over. Every consumer must end
    with every message exactly once, each sender's in order.
    """
    import random

    from session_manager import InMemoryEventStore

    streams = InMemoryStreamSessionManager(event_store=InMemoryEventStore(senders * per_sender + 10))
    rng = random.Random(5)
    got = [[] for _ in range(consumers)]
    errors = []
    total = senders * per_sender
    ids = [f"r{i}" for i in range(consumers)]

    held = []  # abandoned iterators stay referenced: their streams stay open, as dead connections do

    def consume(i: int) -> None:
        last = None
        try:
            for attempt in range(4):
                controller = StreamController(keepalive=5.0, maxsize=total + 10)
                streams.create(ids[i], controller, last_event_id=last)
                parser = SSEParser()
                stop_after = len(got[i]) + rng.randrange(1, total // 3) if attempt < 3 else total
                frames = iter(controller)
                held.append(frames)
                for chunk in frames:  # walking away = leaving the loop without closing
                    for event in parser.feed(chunk):
                        if event.data:
                            got[i].append(json.loads(event.data)["n"])
                    last = parser.last_event_id
                    if len(got[i]) >= min(stop_after, total):
                        break
                if len(got[i]) >= total:
                    return
        except BaseException as exc:  # noqa: BLE001
            errors.append(f"consumer {i}: {exc!r}")

    def send(w: int) -> None:
        for k in range(per_sender):
            data = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "n": f"{w}:{k}"})
            streams.send(None if k % 2 else ids, data)
            gevent.sleep(0)

    readers = [gevent.spawn(consume, i) for i in range(consumers)]
    gevent.sleep(0.1)  # every consumer has opened its stream
    writers = [gevent.spawn(send, w) for w in range(senders)]
    gevent.joinall(writers, timeout=time_limit)
    gevent.joinall(readers, timeout=time_limit)
    taken_over = sum(frames._controller.closed for frames in held)  # replaced by a resume (before delete)
    expected = {w: [f"{w}:{k}" for k in range(per_sender)] for w in range(senders)}
    wrong = [
        i for i, seen in enumerate(got)
        if len(seen) != total or any([n for n in seen if n.startswith(f"{w}:")] != expected[w] for w in expected)
    ]
    for sid in ids:
        streams.delete(sid)
    return {
        "consumers": consumers,
        "messages": total,
        "wrong": [{"consumer": i, "count": len(got[i]), "head": got[i][:5]} for i in wrong[:5]],
        "errors": errors[:10],
        "stuck": sum(not g.dead for g in readers + writers),
        "taken_over": taken_over,
        "left_streams": len(streams._streams),
        "left_logs": len(streams._logged) + len(streams.event_store),
    }


def main() -> int:
    probe = StreamController()
    summary = {
        "patched": {
            "threading": monkey.is_module_patched("threading"),
            "queue": monkey.is_module_patched("queue"),
            "queue_type": f"{type(probe._queue).__module__}.{type(probe._queue).__name__}",
            "lock_type": f"{type(probe._lock).__module__}.{type(probe._lock).__name__}",
        },
    }
    probe.close()
    which = sys.argv[1:] or ["stress", "fanout", "resume"]
    if "stress" in which:
        summary["stress"] = run_stress(gevent_runtime(), workers=16, ops_per_worker=3200, time_limit=90.0)
    if "fanout" in which:
        summary["fanout"] = fanout()
    if "resume" in which:
        summary["resume"] = resume()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
