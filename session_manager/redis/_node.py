"""The per-process node of a RedisStreamSessionManager: local streams, listener, heartbeat, fork handling.

An SSE stream lives in the process that holds its HTTP connection. Each
process is a *node* (random id) of the manager: it registers its streams in
Redis (a ``stream:<sid>`` key holding the token ``<node>:<n>`` of
registration ``<n>``, see :mod:`._keys`) and listens on its own channel; the
node's listener queues what is published there on its local streams (the
messages are in :mod:`._codec`).

Threads: two per manager and process (greenlets under gevent), started by
the first ``create`` (:meth:`NodeSlot.started`):

- the *listener*, the node's one pub/sub subscription (its node channel and
  the broadcast channel): it frames each message once per node and queues
  it on the local streams it names. Delivery is FIFO per stream: every
  message, local or not, goes through it. It works in batches, as an
  in-memory burst does: it reads every message already received (up to
  :data:`_BATCH_MESSAGES`, counting those a batch of :mod:`._codec`
  carries, or :data:`_BATCH_BYTES`), decides in order which
  stream gets which frame, then queues each stream's frames back to back
  (:class:`Outbox`), so a reader wakes once per batch and writes its frames
  to its socket at once, not once per message.
- the *heartbeat*, which refreshes the stream keys in batches every
  ``heartbeat_interval`` seconds (and, through them, the session's info keys
  and event logs: an open stream keeps its session alive), deletes the keys
  of ended streams promptly, and closes local streams deleted or taken over
  elsewhere. A process that dies without cleanup stops counting when its
  keys expire, within ``liveness_ttl`` seconds.

Fork: everything here (lock, events, threads, node id) must belong to the
process (and to gevent if it patched this process), so none of it is
created at import or inherited across ``fork`` (``gunicorn --preload``):
:class:`NodeSlot` makes a fresh :class:`Node` on first use in each process;
the parent's streams stay with the parent.

Failures: the listener reconnects with exponential backoff, resubscribes
and re-registers this node's streams (Redis may have lost them), logging
each outage and recovery; open streams stay open. Without an event store,
messages published while a listener is disconnected are lost (delivery is
at most once). With one, a stream whose GET log (or the broadcast log its
replay merges) Redis lost, in a restart without persistence, is closed
instead, by the catch-up or the heartbeat,
whichever sees it first (one warning with the count): messages sent to it
since were dropped, as there was no log to store them in, and its client,
resuming with its last id, gets 410 (the id is unknown), which tells it so;
re-opening a log under the open stream would hide the gap. Configure Redis
with ``maxmemory-policy noeviction`` (or no memory limit): an evicted stream
key reads as a closed stream.

Catch-up bookkeeping (with an event store): messages are addressed to a
registration, not a session, so what was routed to a stream before it was
replaced is never delivered to the new one (its replay has it). A
registration is live from the ``f`` message that the script claiming or
resuming its stream publishes: broadcasts published before that are in its
replay (or older than its priming id, or not the session's), those after it
are newer than anything it was primed with. Each registration remembers the
position of the last event queued on it, so an event delivered twice (by
the subscription and by a catch-up) is queued once. After a listener outage
every stream is caught up from its logs before the listener reads on; a
stream made live during the outage asks for its own catch-up (``c``).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import redis as redis_py

from ..events import GET_STREAM, event_frame, get_stream_id
from ..replies import PendingReplies
from ..sse import encode_id, encode_message
from ..stream import StreamController
from . import _codec as wire
from . import _scripts as lua
from ._common import REDIS_DOWN, check_gevent
from ._events import position, replay_events
from ._keys import Keys
from ._listener import POLL, keep_listening, messages

__all__ = ["BATCH", "Node", "NodeConfig", "NodeSlot", "Outbox", "Registration", "chunks"]

logger = logging.getLogger(__name__)

#: Most keys handled by one script call (bounds the time Redis spends in it).
BATCH = 1000
#: What ``STREAM_REFRESH`` says of a stream besides "refreshed": deleted or taken over elsewhere, or its log is lost.
_GONE, _LOG_LOST, _KEY_LOST = 0, 2, 3
_LOGS_GONE = (
    "the event logs of %d open streams are gone (Redis lost its data?): closing them, so their clients "
    "resume and learn that messages were lost (410)"
)
_KEY_EXPIRED = (
    "the stream keys of %d open resumable streams expired (a heartbeat later than liveness_ttl, a stalled "
    "Redis?): closing them, so their clients resume from their logs and miss nothing"
)
#: Most messages, and about the most bytes, the listener reads before it queues what they carry.
_BATCH_MESSAGES = 1000
_BATCH_BYTES = 4 * 1024 * 1024

_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int = BATCH) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class NodeConfig:
    """What every node of one manager runs with: Redis, names, timings, and the node's own scripts."""

    def __init__(
        self,
        client: redis_py.Redis,
        keys: Keys,
        *,
        store_args: tuple[str | int, ...],
        logged: bool,
        ttl_ms: int,
        interval: float,
        timeout: float,
    ) -> None:
        self.client = client
        self.keys = keys
        #: ARGV[1..4] of the scripts that touch event logs ('' prefix: no store).
        self.store_args = store_args
        #: With an event store: stored messages, live registrations, catch-ups.
        self.logged = logged
        self.ttl_ms = ttl_ms
        self.interval = interval
        self.timeout = timeout
        register = client.register_script
        self.refresh = register(lua.STREAM_REFRESH)
        self.forget_keys = register(lua.STREAM_FORGET)
        self.catch_up = register(lua.STREAM_CATCH_UP)


class Registration:
    """One registered stream: its controller and the token ``<node>:<number>`` its key holds."""

    __slots__ = ("controller", "floor", "forgotten", "last", "number", "session_id", "token")

    def __init__(self, controller: StreamController, node: str, number: int, session_id: str) -> None:
        self.controller = controller
        self.number = str(number)
        self.token = f"{node}:{number}"
        self.session_id = session_id
        self.forgotten = False  # its key is queued for deletion (or was deleted)
        #: With an event store: position of the last event primed by create (set by the creating thread)
        self.floor: tuple[int, int] | None = None
        #: Position of the last event queued by the listener, or at least its floor (listener thread only);
        #: ``None`` until the registration is live (its ``f`` message or a catch-up): nothing is queued before.
        self.last: tuple[int, int] | None = None


class NodeSlot:
    """Holds the node of the current process: made on first use, anew in a forked child."""

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._lock = threading.Lock()  # guards _node and _closed only
        self._node: Node | None = None
        self._closed = False

    def current(self) -> Node:
        """This process's node, created on first use (and anew in a forked child)."""
        node = self._node
        if node is not None and node.pid == os.getpid():
            return node
        with self._lock:
            node = self._node
            if node is None or node.pid != os.getpid():
                if node is not None:
                    logger.debug("process forked: starting afresh (streams of the parent stay there)")
                check_gevent()  # the child may have been patched after the parent built us
                node = self._node = Node(self._config)
            return node

    def local(self) -> Node | None:
        """This process's node if it has one (never creates it)."""
        node = self._node
        return node if node is not None and node.pid == os.getpid() else None

    def started(self) -> Node:
        """This process's node with its listener and heartbeat running."""
        if self._closed:
            raise RuntimeError("this RedisStreamSessionManager is closed")
        node = self.current()
        if node.threads:
            return node
        with self._lock:
            if self._closed:
                raise RuntimeError("this RedisStreamSessionManager is closed")
            if node.threads:
                return node
            node.threads = [
                threading.Thread(target=target, name=f"session_manager-redis-{name}", daemon=True)
                for target, name in ((node.listen, "listener"), (node.heartbeat, "heartbeat"))
            ]
        for thread in node.threads:  # outside the lock: under gevent, start() may switch greenlets
            thread.start()
        return node

    def close(self) -> tuple[bool, Node | None]:
        """Mark the slot closed: ``(False, None)`` if it was already, else ``(True, this process's node)``."""
        with self._lock:
            if self._closed:
                return False, None
            self._closed = True
            return True, self.local()


class Outbox:
    """The frames of one listener batch, queued on the streams when the batch ends (listener thread only).

    Why: a stream's reader then wakes once per batch and joins its frames
    into one chunk (one socket write), as after an in-memory burst, instead
    of once per message. What each stream gets is decided as the messages
    are read, in order (positions, liveness, closes); only the queuing
    waits for :meth:`flush`. Consecutive messages to the same streams (a
    run of broadcasts, of messages to one session) are queued stream by
    stream, back to back. Each frame is still queued on its own
    (``enqueue_frame``), so a stream's ``maxsize`` counts frames and a slow
    consumer is cut exactly as before.
    """

    __slots__ = ("_fans", "_node")

    def __init__(self, node: Node) -> None:
        self._node = node
        #: In arrival order: frames, and the streams they go to (``None``: every local stream).
        self._fans: list[tuple[list[bytes], list[Registration] | None]] = []

    def add(self, frame: bytes, entries: list[Registration] | None) -> None:
        """Queue *frame* on the streams of *entries* (``None``: those registered when the batch ends)."""
        fans = self._fans
        if fans:
            frames, last = fans[-1]
            if last is entries or (last is not None and entries is not None and last == entries):
                frames.append(frame)  # the same streams as the message before: one run
                return
        fans.append(([frame], entries))

    def flush(self) -> None:
        """Queue everything gathered, run by run, in arrival order."""
        fans, self._fans = self._fans, []
        node = self._node
        for frames, entries in fans:
            if entries is None:
                with node.lock:
                    entries = list(node.streams.values())
            node.deliver(frames, entries)


class Node:
    """The manager's state in one process: its streams, threads and node id (see the module documentation)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.pid = os.getpid()
        #: Frames up to this many bytes fit every stream registered here so far (see :meth:`deliver`).
        self.fits_all = sys.maxsize
        #: Frames up to this many bytes are short on every stream registered here so far: queued unmeasured.
        self.short_all = sys.maxsize
        self.node = secrets.token_hex(8)
        self.channel = config.keys.node_channel(self.node)
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.streams: dict[str, Registration] = {}
        #: With an event store: registration number -> stream, the address of ``e`` messages.
        self.registrations: dict[str, Registration] = {}
        self.creating: set[str] = set()
        self.pending: collections.deque[tuple[str, str]] = collections.deque()  # (sid, token) keys to delete
        self.stop = threading.Event()
        self.wake = threading.Event()  # heartbeat: pending deletions or a resync
        self.resync = threading.Event()  # heartbeat: beat now (the listener reconnected)
        self.ready = threading.Event()  # the listener is subscribed
        self.threads: list[threading.Thread] = []
        self.failures = 0  # failed listener connections in a row
        self.catch_ups = 0  # catch-ups of every stream the listener started (see request_catch_up)
        self.node_channels = {self.channel, self.channel.encode()}
        self.confirmed = 0  # subscriptions confirmed on the listener's connection (listener thread only)
        #: Streams closed because their consumer fell behind.
        self.slow_consumers_dropped = 0
        self.outbox = Outbox(self)  # the listener's
        #: Handlers of this process waiting for a client's reply (``r`` messages resolve them).
        self.replies = PendingReplies()

    # -- bookkeeping -------------------------------------------------------

    def forget(self, session_id: str, entry: Registration) -> None:
        """Unregister an ended stream (never a newer one) and queue its key for deletion."""
        with self.lock:
            if self.streams.get(session_id) is entry:
                del self.streams[session_id]
                self.slow_consumers_dropped += entry.controller.overflowed
            if self.registrations.get(entry.number) is entry:
                del self.registrations[entry.number]
            if entry.forgotten:
                return
            entry.forgotten = True
        self.delete_key_later(session_id, entry.token)

    def delete_key_later(self, session_id: str, token: str) -> None:
        """Have the heartbeat delete the stream key if it still holds *token*."""
        self.pending.append((session_id, token))
        self.wake.set()

    def end(self, entry: Registration) -> None:
        """Close a local stream the server ends (deleted, taken over, messages lost) and unregister it."""
        self.forget(entry.session_id, entry)
        entry.controller.close()

    @staticmethod
    def takes(entry: Registration, at: tuple[int, int]) -> bool:
        """Listener: whether a stored event is new to a live stream (then it is its last), else it has it already.

        A stream has an event if it was replayed, primed or caught up with it
        (``last`` is at or after it), and takes nothing before it is live.
        """
        last = entry.last
        if last is None or at <= last:
            return False
        entry.last = at
        return True

    def queue(self, entry: Registration, at: tuple[int, int], chunk: bytes) -> None:
        """Listener: queue a stored event on a live stream, unless it has it."""
        if self.takes(entry, at):
            self.outbox.add(chunk, [entry])

    def deliver(self, frames: list[bytes], entries: list[Registration]) -> None:
        """Queue *frames* on each stream of *entries*, back to back; a stream closed or overflowing is forgotten."""
        longest = max(map(len, frames))
        if longest > self.fits_all:  # some stream here may never hold one of them
            self.deliver_fitting(frames, entries)
        else:
            self._queue(frames, entries, short=longest <= self.short_all)

    def _queue(self, frames: list[bytes], entries: list[Registration], *, short: bool = False) -> None:
        """Queue *frames* on each stream of *entries*; *short*: every frame is short on every one of them."""
        forget = self.forget
        if len(frames) == 1:  # the most common run: one message
            frame = frames[0]
            for entry in entries:
                controller = entry.controller
                if not (controller._enqueue_short(frame) if short else controller.enqueue_frame(frame)):
                    forget(entry.session_id, entry)
            return
        for entry in entries:
            enqueue = entry.controller._enqueue_short if short else entry.controller.enqueue_frame
            for frame in frames:
                if not enqueue(frame):
                    forget(entry.session_id, entry)
                    break

    def deliver_fitting(self, frames: list[bytes], entries: list[Registration]) -> None:
        """:meth:`deliver`, leaving out (logged) the frames a stream's ``max_bytes`` could never hold.

        The sender is another process (its own ``max_message_bytes`` check
        passed): all this process can do is say so.
        """
        for entry in entries:
            controller = entry.controller
            room = controller.max_bytes - controller.frame_overhead  # frames come with their id already
            fitting = [frame for frame in frames if len(frame) <= room]
            if len(fitting) < len(frames):
                logger.warning(
                    "a message larger than the %d bytes the stream of session %r holds was not delivered to it%s; "
                    "keep the stream managers' max_message_bytes at most the transports' stream_max_bytes",
                    controller.max_bytes, entry.session_id,
                    " (closed: its client resumes from the log)" if entry.floor is not None else "",
                )
                if entry.floor is not None:  # resumable: never a stream that goes on with a hole in it
                    self.end(entry)
                    continue
            if fitting:
                self._queue(fitting, [entry])

    def request_catch_up(self, entry: Registration) -> None:
        """Have the listener catch *entry* up from its floor (``c <n>``; a no-op if it is live).

        For a stream made live while the listener reconnected: the listener
        may have lost the ``f`` message that makes it live, and caught up
        every stream but this one (``catch_ups`` changed meanwhile).
        """
        try:
            self.config.client.publish(self.channel, wire.encode_catch_up(entry.number))
        except REDIS_DOWN:  # the listener's next reconnection catches every stream up
            logger.debug("could not ask the listener to catch up stream %r", entry.session_id, exc_info=True)

    def catch_up(self, entries: list[Registration] | None = None) -> None:
        """Listener, after an outage: queue what each resumable stream (or *entries*) missed, from its logs.

        Runs before the listener reads any further message, so events come in
        order; those the subscription delivers again are dropped by position.
        Every stream caught up is live from then on. A stream that missed
        more than its logs hold is closed (its client resumes and learns it),
        and so is one whose log is gone (:meth:`end_lost`).
        """
        if entries is None:
            self.catch_ups += 1  # before collecting the streams: see request_catch_up
            with self.lock:
                entries = list(self.registrations.values())
        entries = [e for e in entries if e.floor is not None and not e.controller.closed]
        lost: list[Registration] = []
        for chunk in chunks(entries, 100):
            args: list[str | int] = [*self.config.store_args]
            for entry in chunk:
                floor = entry.floor or (0, 0)
                entry.last = ms, seq = max(entry.last or floor, floor)  # live from here on
                args += [entry.session_id, get_stream_id(entry.session_id), f"{ms}-{seq}"]
            for entry, reply in zip(chunk, self.config.catch_up(args=args)):
                events = replay_events(reply)
                if isinstance(events, list):
                    for event_id, message in events:
                        self.queue(entry, position(event_id), event_frame(event_id, message))
                elif events == "expired":
                    logger.warning("stream of session %r missed more events than its log holds: closing it", entry.session_id)
                    self.end(entry)
                else:
                    lost.append(entry)
        self.end_lost(lost)

    def end_lost(self, entries: list[Registration], why: str = _LOGS_GONE) -> None:
        """Close resumable streams that cannot go on as if nothing happened, with one warning (*why*) for all.

        By default their log is gone (Redis lost its data?): messages sent to
        them since were dropped (no log to store them in), so each client
        resumes with its last id and gets 410 (unknown id), which tells it
        messages were lost; a new stream then works as any other.
        """
        with self.lock:  # the catch-up and the heartbeat may both see a stream: the first one ends it
            ending = [entry for entry in entries if self.registrations.get(entry.number) is entry]
            for entry in ending:
                del self.registrations[entry.number]
        if not ending:
            return
        logger.warning(why, len(ending))
        for entry in ending:
            self.end(entry)

    def shutdown(self) -> None:
        """Close this process's streams, stop its threads, delete its keys."""
        with self.lock:
            entries = list(self.streams.items())
            self.streams.clear()
            self.registrations.clear()
            for _, entry in entries:
                entry.forgotten = True
        for _, entry in entries:
            entry.controller.close()
        self.stop.set()
        self.wake.set()
        if self.threads:
            try:  # wake the listener now rather than at its next poll
                self.config.client.publish(self.channel, wire.WAKE)
            except REDIS_DOWN:
                pass
        current = threading.current_thread()
        for thread in self.threads:
            if thread is not current and thread.ident is not None:
                thread.join(self.config.timeout + POLL)
                if thread.is_alive():
                    logger.warning("%s did not stop in time", thread.name)
        self.pending.extend((sid, entry.token) for sid, entry in entries)
        try:
            self.flush()
        except REDIS_DOWN as exc:
            logger.warning("Redis unavailable at close: %d stream keys expire by themselves (%s)", len(self.pending), exc)

    # -- heartbeat ---------------------------------------------------------

    def flush(self) -> None:
        """Delete the keys of ended streams (if they still name them); raises REDIS_DOWN."""
        items: list[tuple[str, str]] = []
        while self.pending:
            try:
                items.append(self.pending.popleft())
            except IndexError:
                break
        keys = self.config.keys
        try:
            for chunk in chunks(items):
                self.config.forget_keys(keys=[keys.stream(sid) for sid, _ in chunk], args=[token for _, token in chunk])
        except BaseException:
            self.pending.extend(items)  # deleting twice is harmless
            raise

    def beat(self) -> None:
        """Refresh every local stream key; close local streams deleted or taken elsewhere."""
        config = self.config
        with self.lock:
            items = list(self.streams.items())
        lost: list[Registration] = []
        expired: list[Registration] = []
        for chunk in chunks(items):
            sids = [sid for sid, _ in chunk]
            streams = [get_stream_id(sid) for sid in sids] if config.logged else []
            results = config.refresh(
                keys=[config.keys.stream(sid) for sid in sids],
                args=[
                    *config.store_args, config.ttl_ms, config.keys.prefix,
                    *(e.token for _, e in chunk), *sids, *streams,
                ],
            )
            for (sid, entry), state in zip(chunk, results):
                if state != _GONE and (entry.controller.closed or self.streams.get(sid) is not entry):
                    # Ended meanwhile (a DELETE deletes its key and logs): nothing was lost, and the beat may
                    # have re-created its key.
                    self.pending.append((sid, entry.token))
                elif state == _GONE:
                    if not entry.controller.closed:
                        logger.info("stream of session %r was deleted or taken over elsewhere: closing it", sid)
                    self.end(entry)
                elif state == _LOG_LOST:
                    lost.append(entry)
                elif state == _KEY_LOST:
                    expired.append(entry)
        self.end_lost(lost)
        # Messages sent while its key was gone were stored but routed nowhere: its client resumes from its log.
        self.end_lost(expired, _KEY_EXPIRED)

    def heartbeat(self) -> None:
        """Thread: refresh stream keys every interval, delete ended streams' keys promptly."""
        interval = self.config.interval
        next_beat = time.monotonic() + interval
        failing = False
        while not self.stop.is_set():
            self.wake.wait(max(0.0, next_beat - time.monotonic()))
            self.wake.clear()
            if self.stop.is_set():
                break
            try:
                if self.resync.is_set() or time.monotonic() >= next_beat:
                    self.resync.clear()
                    self.beat()
                    next_beat = time.monotonic() + interval
                self.flush()
                if failing:
                    logger.info("Redis heartbeat recovered")
                    failing = False
            except REDIS_DOWN as exc:
                if not failing:
                    logger.warning("Redis heartbeat failed, retrying (%s: %s)", type(exc).__name__, exc)
                    failing = True
                self.stop.wait(min(interval, 1.0))
            except Exception:
                logger.exception("Redis heartbeat failed unexpectedly, retrying")
                self.stop.wait(min(interval, 1.0))

    # -- listener ----------------------------------------------------------

    def listen(self) -> None:
        """Thread: the node's one subscription (its channel and the broadcast channel); reconnects until stopped."""
        keep_listening(
            self, self.config.client, (self.channel, self.config.keys.broadcast_channel), self.serve,
            lambda: "Redis listener",
        )

    def serve(self, pubsub: redis_py.client.PubSub) -> None:
        """Dispatch messages until stopped; raises REDIS_DOWN when the connection is lost.

        Each message that arrives starts a batch: the messages already
        received follow it (``get_message(timeout=0)``, bounded), then the
        frames they carry are queued (:class:`Outbox`), also when the
        connection fails part way.
        """
        self.confirmed = 0
        for message in messages(pubsub, self.stop, self.config.interval, self.config.timeout):
            try:
                count = size = 0
                while True:
                    carried, length = self.dispatch(message)
                    count += carried
                    size += length
                    if count >= _BATCH_MESSAGES or size >= _BATCH_BYTES:
                        break
                    message = pubsub.get_message(timeout=0)  # only what is already there
                    if message is None:
                        break
            finally:
                self.outbox.flush()

    def dispatch(self, message: dict[str, Any]) -> tuple[int, int]:
        """Handle one pub/sub message (its frames go to the outbox); return the messages it carried and its bytes."""
        kind = message["type"]
        if kind == "message":
            data = message["data"]
            if message["channel"] in self.node_channels:
                carried = wire.messages(data, wire.NODE_BATCH)
                for payload in carried:
                    self.on_node_message(payload)
            else:
                carried = wire.messages(data, wire.BROADCASTS)
                for payload in carried:
                    self.on_broadcast(payload)
            return len(carried), len(data)
        if kind == "subscribe":
            self.confirmed += 1
            if self.confirmed % 2 == 0:
                self.on_subscribed()
        return 0, 0

    def on_subscribed(self) -> None:
        """Both channels confirmed: the first time, or redis-py reconnected by itself."""
        if (self.confirmed > 2 or self.failures) and self.config.logged:
            self.catch_up()
        if self.confirmed > 2:
            logger.warning(
                "Redis listener lost its connection; redis-py reconnected and resubscribed it "
                "(messages sent meanwhile are lost); re-registering this node's streams"
            )
        elif self.failures:
            logger.info(
                "Redis listener resubscribed after %d failed attempts; re-registering this node's streams",
                self.failures,
            )
        self.failures = 0
        if self.streams:  # Redis may have lost their keys: beat now
            self.resync.set()
            self.wake.set()
        self.ready.set()

    def on_node_message(self, payload: str) -> None:
        kind = payload[:1]
        if kind == wire.TARGETED:
            sids, data = wire.decode_batch(payload)
            targets = [entry for entry in map(self.streams.get, sids) if entry is not None]
            if targets:
                self.outbox.add(encode_message(data), targets)
        elif kind == wire.STORED:
            items, data = wire.decode_batch(payload)
            frame = encode_message(data)
            registrations, takes = self.registrations, self.takes
            # A message sent to many has one id: framed once, queued on those it is new to.
            events: dict[str, tuple[tuple[int, int], bytes, list[Registration]]] = {}
            for i in range(0, len(items) - 1, 2):
                entry = registrations.get(items[i])
                if entry is None:
                    continue
                event_id = items[i + 1]
                event = events.get(event_id)
                if event is None:
                    event = events[event_id] = (position(event_id), encode_id(event_id) + frame, [])
                if takes(entry, event[0]):
                    event[2].append(entry)
            for _, chunk, takers in events.values():
                if takers:
                    self.outbox.add(chunk, takers)
        elif kind == wire.LIVE:
            number, entry_id = wire.decode_live(payload)
            entry = self.registrations.get(number)
            if entry is not None:
                floor = position(entry_id)
                entry.last = max(entry.last or floor, floor)
        elif kind == wire.CATCH_UP:
            entry = self.registrations.get(wire.decode_catch_up(payload))
            if entry is not None and entry.last is None:  # its "f" was lost
                self.catch_up([entry])
        elif kind == wire.CLOSE:
            sid, token = wire.decode_close(payload)
            entry = self.streams.get(sid)
            if entry is not None and entry.token == token:
                self.end(entry)
        elif kind == wire.REPLY:
            request_id, sid, reply = wire.decode_reply(payload)
            self.replies.resolve(sid, request_id, reply)  # False: its handler gave up meanwhile
        elif payload != wire.WAKE:
            logger.warning("ignoring an unknown message on the node channel: %.80r", payload)

    def on_broadcast(self, payload: str) -> None:
        """A broadcast: with an event store, a stored one is framed once and queued on every live registration.

        A broadcast without an entry id comes from a manager without an event
        store (which sends only while no store keeps logs on the prefix) or
        from another publisher: delivered as such, unstored.
        """
        entry_id, data = wire.decode_broadcast(payload) if self.config.logged else (None, payload)
        if entry_id is None:
            self.outbox.add(encode_message(data), None)
            return
        event_id = f"{GET_STREAM}.{entry_id}"
        at, takes = position(event_id), self.takes
        with self.lock:
            stored_targets = list(self.registrations.values())
        takers = [entry for entry in stored_targets if takes(entry, at)]
        if takers:
            self.outbox.add(event_frame(event_id, data), takers)
