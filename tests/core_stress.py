"""Concurrency stress of the in-memory managers, shared by threads and gevent.

``run_stress(runtime, ...)`` lets *workers* threads (or greenlets) do random
create/send/has/delete stream operations and info operations over a small
shared pool of session ids; every stream that gets registered is drained by
its own reader. Afterwards it checks, from what the readers parsed:

* no unexpected exception anywhere (a conflict on ``create``, an info call on
  a session that does not exist are expected outcomes, not errors);
* FIFO per sender within each stream: a sender's sequence numbers strictly
  increase (so nothing is duplicated or reordered);
* every message a stream delivered was addressed to it (targeted, broadcast,
  or enqueued straight on a controller reference, possibly a stale one, as a
  backend's listener does);
* nothing sent after the stream was closed is delivered. Provable form: a
  global counter ``clock`` (``next()`` on ``itertools.count`` is atomic) is
  read by the sender *before* ``send()`` starts and stored in the message as
  its tag; each controller records ``clock`` right *after* its ``close()``
  returned (``delete()`` closes it before it returns, so this is no earlier
  than "delete() returned" can be observed). tag > closed_at means the send
  started after the close had completed: such a message must never appear.
  Messages with tag < closed_at may legitimately arrive (queued or already
  taken by the reader before the close);
* with the workers stopped, the info manager's reverse index matches its
  sessions; after every session is deleted and every reader ended, the
  internal maps (``_streams``, ``_sessions``, ``_subscribers``) are empty,
  every controller is closed and its close callbacks ran exactly once.

Nothing here starts a thread or creates a lock at import, so the gevent
worker can import it after ``monkey.patch_all()``.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from session_manager import (
    InMemoryInfoSessionManager,
    InMemoryStreamSessionManager,
    SessionNotFoundError,
    StreamConflictError,
    StreamController,
)

from .sse_parser import iter_events

URIS = [f"res://r{i}" for i in range(6)]
LEVELS = ["debug", "info", "warning", "error"]


class StampedController(StreamController):
    """A real StreamController that remembers when its close() had returned."""

    def __init__(self, clock: itertools.count[int], session_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.session_id = session_id
        self.closed_at: int | None = None
        self.callbacks_run = 0
        self.add_close_callback(self._count_callback)

    def _count_callback(self) -> None:
        self.callbacks_run += 1

    def close(self, *, drain: bool = False) -> None:
        super().close(drain=drain)
        if self.closed_at is None:
            self.closed_at = next(self.clock)


@dataclass
class ReaderRecord:
    controller: StampedController
    handle: Any = None
    data: list[str] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


@dataclass
class Runtime:
    """How to run concurrent tasks: threads, or greenlets under gevent."""

    name: str
    spawn: Callable[..., Any]  # spawn(fn, *args) -> handle, already started
    join: Callable[[Any, float], None]
    alive: Callable[[Any], bool]
    pause: Callable[[], None] = lambda: None  # let others run (greenlets need it)


def thread_runtime() -> Runtime:
    import threading

    def spawn(fn: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        return thread

    return Runtime("threads", spawn, lambda t, timeout: t.join(timeout), lambda t: t.is_alive())


def gevent_runtime() -> Runtime:
    import gevent

    return Runtime(
        "gevent",
        gevent.spawn,
        lambda g, timeout: g.join(timeout),
        lambda g: not g.dead,
        lambda: gevent.sleep(0),
    )


def run_stress(
    runtime: Runtime,
    *,
    workers: int = 16,
    ops_per_worker: int = 3200,
    pool_size: int = 40,
    seed: int = 12345,
    time_limit: float = 90.0,
    keepalive: float = 0.2,
) -> dict[str, Any]:
    streams = InMemoryStreamSessionManager()
    info = InMemoryInfoSessionManager()
    clock = itertools.count(1)
    pool = [f"s{i}" for i in range(pool_size)]
    readers: list[ReaderRecord] = []  # list.append is atomic
    errors: list[str] = []
    finished = [0]
    counts: dict[str, int] = {}
    deadline = time.monotonic() + time_limit

    def note(kind: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1  # statistics only; races just undercount

    def read(record: ReaderRecord) -> None:
        try:
            for event in iter_events(record.controller):
                record.data.append(event.data)
        except BaseException as exc:  # noqa: BLE001 - the reader's end, whatever it is, is checked afterwards
            record.error = exc
        finally:
            record.done = True

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        seq = 0
        try:
            for op_number in range(ops_per_worker):
                if op_number % 64 == 0 and time.monotonic() > deadline:
                    errors.append(f"worker {index} ran out of time after {op_number} ops")
                    return
                if rng.random() < 0.25:
                    runtime.pause()
                sid = rng.choice(pool)
                r = rng.random()
                try:
                    if r < 0.10:  # open a stream
                        controller = StampedController(
                            clock, sid, maxsize=rng.choice((8, 1024)), keepalive=keepalive
                        )
                        try:
                            streams.create(sid, controller)
                        except StreamConflictError:
                            note("create_conflict")
                            controller.close()
                            continue
                        record = ReaderRecord(controller)
                        readers.append(record)
                        record.handle = runtime.spawn(read, record)
                        note("create")
                    elif r < 0.42:  # targeted send to 1..3 ids
                        targets = rng.sample(pool, rng.randint(1, 3))
                        seq += 1
                        tag = next(clock)
                        streams.send(targets, json.dumps([index, seq, tag, targets]))
                        note("send")
                    elif r < 0.44:  # broadcast
                        seq += 1
                        tag = next(clock)
                        streams.send(None, json.dumps([index, seq, tag, None]))
                        note("broadcast")
                    elif r < 0.46 and readers:  # straight to a controller, maybe a stale one
                        record = readers[-rng.randint(1, min(len(readers), 50))]
                        controller = record.controller
                        seq += 1
                        tag = next(clock)
                        controller.enqueue(json.dumps([index, seq, tag, [controller.session_id]]))
                        note("direct")
                    elif r < 0.50:
                        if not isinstance(streams.has(sid), bool):
                            errors.append("has() did not return a bool")
                        note("has")
                    elif r < 0.57:
                        streams.delete(sid)
                        note("delete")
                    elif r < 0.62:
                        try:
                            info.create(
                                sid,
                                protocol_version="2025-06-18",
                                client_info={"name": "c", "by": index},
                                client_capabilities={"roots": {}},
                            )
                            note("info_create")
                        except ValueError as exc:
                            if "already exists" not in str(exc):
                                raise
                    elif r < 0.72:
                        which = rng.randrange(4)
                        try:
                            if which == 0:
                                info.set_client_info(sid, {"name": "c", "by": index, "seq": op_number})
                            elif which == 1:
                                info.set_client_capabilities(sid, {"sampling": {}, "by": index})
                            elif which == 2:
                                info.set_log_level(sid, rng.choice(LEVELS))
                            else:
                                info.set_protocol_version(sid, "2025-03-26")
                            note("info_set")
                        except SessionNotFoundError:
                            note("info_missing")
                    elif r < 0.80:
                        got_info = info.get_client_info(sid)
                        caps = info.get_client_capabilities(sid)
                        level = info.get_log_level(sid)
                        version = info.get_protocol_version(sid)
                        info.exists(sid)
                        if got_info is not None and (not isinstance(got_info, dict) or got_info.get("name") != "c"):
                            errors.append(f"bad client info {got_info!r}")
                        if caps is not None and not isinstance(caps, dict):
                            errors.append(f"bad capabilities {caps!r}")
                        if level is not None and level not in LEVELS:
                            errors.append(f"bad log level {level!r}")
                        if version not in (None, "2025-06-18", "2025-03-26"):
                            errors.append(f"bad protocol version {version!r}")
                        if got_info is not None:
                            got_info["name"] = "mutated"  # must not reach the stored copy
                        note("info_get")
                    elif r < 0.88:
                        try:
                            info.add_subscription(sid, rng.choice(URIS))
                            note("subscribe")
                        except SessionNotFoundError:
                            note("info_missing")
                    elif r < 0.92:
                        info.remove_subscription(sid, rng.choice(URIS))
                        note("unsubscribe")
                    elif r < 0.96:
                        subscribers = info.get_subscriptions(rng.choice(URIS))
                        if not isinstance(subscribers, list) or not set(subscribers) <= set(pool):
                            errors.append(f"bad subscribers {subscribers!r}")
                        note("get_subscriptions")
                    else:
                        info.delete(sid)
                        note("info_delete")
                except Exception as exc:  # noqa: BLE001 - every unexpected error is a finding
                    errors.append(f"worker {index} op {op_number}: {type(exc).__name__}: {exc}")
            finished[0] += 1
        except BaseException as exc:  # noqa: BLE001 - a crashed worker is a finding
            errors.append(f"worker {index} crashed: {exc!r}")

    started = time.monotonic()
    handles = [runtime.spawn(worker, index) for index in range(workers)]
    for handle in handles:
        runtime.join(handle, max(0.1, deadline - time.monotonic()))
    stuck_workers = sum(runtime.alive(h) for h in handles)
    work_seconds = time.monotonic() - started

    # Quiescent: the info reverse index must match the sessions exactly.
    index_errors = []
    with info._lock:
        forward = {(sid, uri) for sid, s in info._sessions.items() for uri in s.subscriptions}
        backward = {(sid, uri) for uri, sids in info._subscribers.items() for sid in sids}
        if forward != backward:
            index_errors.append(f"reverse index mismatch: {sorted(forward ^ backward)[:10]}")
        if any(not sids for sids in info._subscribers.values()):
            index_errors.append("empty subscriber set left in the index")

    # Tear everything down, then let every reader finish.
    for sid in pool:
        streams.delete(sid)
        info.delete(sid)
    reader_deadline = time.monotonic() + 30.0
    for record in readers:
        runtime.join(record.handle, max(0.1, reader_deadline - time.monotonic()))
    stuck_readers = sum(not r.done for r in readers)

    # Check what every stream delivered.
    violations: list[str] = []
    deliveries = 0
    overflowed = 0
    for record in readers:
        controller = record.controller
        if record.error is not None:
            violations.append(f"reader of {controller.session_id} failed: {record.error!r}")
        if controller.closed_at is None or not controller.closed:
            violations.append(f"controller of {controller.session_id} never closed")
            continue
        if controller.callbacks_run != 1:
            violations.append(f"close callbacks of {controller.session_id} ran {controller.callbacks_run} times")
        overflowed += controller.overflowed
        last_seq: dict[int, int] = {}
        for data in record.data:
            deliveries += 1
            sender, seq, tag, targets = json.loads(data)
            if seq <= last_seq.get(sender, 0):
                violations.append(
                    f"{controller.session_id}: sender {sender} seq {seq} after {last_seq[sender]} (FIFO broken)"
                )
            last_seq[sender] = seq
            if tag > controller.closed_at:
                violations.append(
                    f"{controller.session_id}: message tagged {tag} delivered after close completed at "
                    f"{controller.closed_at}"
                )
            if targets is not None and controller.session_id not in targets:
                violations.append(f"{controller.session_id}: got a message addressed to {targets}")

    if streams.slow_consumers_dropped > overflowed:
        violations.append(f"slow_consumers_dropped {streams.slow_consumers_dropped} > {overflowed} overflowed")

    return {
        "runtime": runtime.name,
        "workers": workers,
        "workers_finished": finished[0],
        "stuck_workers": stuck_workers,
        "operations": workers * ops_per_worker,
        "work_seconds": round(work_seconds, 3),
        "counts": counts,
        "streams_opened": len(readers),
        "deliveries": deliveries,
        "overflowed": overflowed,
        "slow_consumers_dropped": streams.slow_consumers_dropped,
        "stuck_readers": stuck_readers,
        "errors": errors[:20],
        "error_count": len(errors),
        "index_errors": index_errors,
        "violations": violations[:20],
        "violation_count": len(violations),
        "left_streams": len(streams._streams),
        "left_sessions": len(info._sessions),
        "left_subscribers": len(info._subscribers),
    }


def assert_clean(summary: dict[str, Any]) -> None:
    """The invariants, for both runtimes; counts prove the run did real work."""
    assert summary["error_count"] == 0, summary["errors"]
    assert summary["violation_count"] == 0, summary["violations"]
    assert summary["index_errors"] == [], summary["index_errors"]
    assert summary["stuck_workers"] == 0 and summary["workers_finished"] == summary["workers"], summary
    assert summary["stuck_readers"] == 0, summary
    assert summary["left_streams"] == 0, summary
    assert summary["left_sessions"] == 0, summary
    assert summary["left_subscribers"] == 0, summary
    assert summary["workers"] >= 16 and summary["operations"] >= 50_000
    counts = summary["counts"]
    for kind in ("create", "send", "broadcast", "delete", "info_create", "info_set", "subscribe", "info_delete"):
        assert counts.get(kind, 0) > 0, f"no {kind} happened: {counts}"
    assert summary["deliveries"] > 0, summary
