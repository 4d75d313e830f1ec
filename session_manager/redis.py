"""Redis backends: any number of processes on any number of hosts act as one server.

Streams (:class:`RedisStreamSessionManager`)
    An SSE stream lives in the process that holds its HTTP connection. Each
    process (a *node*, with a random id) registers its streams in Redis and
    listens on its own channel; ``send`` from any process publishes to the
    nodes that hold the targets, and the node's listener queues the frame on
    its local streams.

    Keys and channels (all under ``prefix``):

    - ``stream:<sid>`` (string, TTL ``liveness_ttl``): ``<node>:<n>``, the
      node and registration holding the stream; ``-<node>:<n>`` is a
      tombstone left by a ``delete`` from another node until the owner has
      closed the stream.
    - channel ``node:<node>``: ``m <sid> <sid>...\\n<data>`` (targeted
      message), ``e <n> <event id> <n> <event id>...\\n<data>`` (a stored
      message, addressed to registrations ``<node>:<n>``), ``f <n> <entry id>``
      (registration ``<node>:<n>`` is live: it takes the broadcasts stored
      after that entry), ``c <n>`` (catch registration ``<n>`` up: its ``f``
      may have been lost), ``d <sid> <token>`` (close a stream), ``x`` (wake
      the listener).
    - channel ``broadcast``: ``send(None, data)``: the data, or with an event
      store ``<entry id>\\n<data>`` (the broadcast's entry in the store's
      broadcast log; a node with a store delivers bare data, from a manager
      without one, unstored).

    With an event store (:class:`RedisEventStore`, ``event_store=``) streams
    are resumable. One script stores a message on each target's GET-stream
    log and publishes it with its event id to the owning node, so event ids
    are in delivery order and a resume (one script that replays the log and
    takes the stream key over, from any process) sees every event exactly
    once. Messages are addressed to a registration, not a session: what was
    routed to a stream before it was replaced is never delivered to the new
    one (the replay has it). A broadcast is stored once, on the store's
    broadcast log that every GET-stream replay merges (so it reaches every
    session with a GET-stream log, open stream or not), and published once
    with its entry id; each node frames it once and queues it on its live
    registrations. A registration is live from the ``f`` message that the
    script claiming or resuming its stream publishes: broadcasts published
    before that are in its replay (or older than its priming id, or not the
    session's), those after it are newer than anything it was primed with.

    Expiry: an open stream keeps its session alive. The heartbeat refreshes,
    for every local stream, the session's info keys (when a
    :class:`RedisInfoSessionManager` with the same prefix created it) and its
    event logs. A session with no open stream expires by TTL, every key of it.

    Costs: broadcast is one PUBLISH (with an event store, one script doing
    one XADD and one PUBLISH, whatever the number of sessions); a targeted
    send is one script call (per 1,000 targets) that looks the owners up and
    PUBLISHes once per owning node. The frame is SSE-encoded once per message per node.

    Connections per process and manager: one pub/sub listener plus a bounded
    command pool (``max_connections`` for a client built from a URL), for
    any number of sessions. Two background threads (greenlets under gevent)
    per manager and process, started by the first ``create``: the listener,
    and the heartbeat, which refreshes the stream keys in batches every
    ``heartbeat_interval`` seconds. A process that dies without cleanup
    stops counting when its keys expire, within ``liveness_ttl`` seconds.

    Failures: the listener reconnects with exponential backoff, resubscribes
    and re-registers this node's streams (Redis may have lost them), logging
    each outage and recovery; open streams stay open. Messages published
    while a listener is disconnected are lost (delivery is at most once, as
    always). Calls that need Redis during an outage raise
    :class:`~session_manager.BackendUnavailableError` within the socket
    timeouts. Configure Redis with ``maxmemory-policy noeviction`` (or no
    memory limit): an evicted stream key reads as a closed stream.

Info (:class:`RedisInfoSessionManager`)
    ``session:<sid>`` (hash: ``created``, ``ttl`` (ms), ``protocol_version``,
    ``client_info`` and ``client_capabilities`` as JSON, ``log_level``),
    ``subs:<sid>`` (set of its subscribed URIs) and ``uri:<uri>`` (set of
    subscribed session ids). Every call on a session (getters included)
    refreshes its expiry to ``session_ttl`` in the same script; the
    subscriber set of each URI lives as long as its longest-lived
    subscriber. An open stream of the session (a
    :class:`RedisStreamSessionManager` with the same prefix) keeps it alive.

Both classes take a ``redis://`` URL or a :class:`redis.Redis` client (a
client passed in is used as configured and left open by ``close``; give it
socket timeouts, a bounded pool and few retries, since redis-py's default
retry policy can hold a call for seconds while Redis is down). All scripts run on one Redis
(standalone or Sentinel), not on Redis Cluster.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import (
    Any,
    TypeVar,
)

try:
    import redis as redis_py
except ImportError as exc:
    from ._extras import missing_extra

    raise missing_extra("session_manager.redis", "redis", exc) from exc

from . import _redis_scripts as lua
from . import _validate
from ._fields import FieldStoreInfoManager
from ._redis_common import REDIS_DOWN, RedisBacked, check_gevent, describe, milliseconds, text
from ._redis_events import RedisEventStore, check_resume, replay_reply
from ._validate import positive_seconds
from .base import StreamSessionManager
from .errors import BackendUnavailableError, SessionNotFoundError, StreamConflictError
from .events import GET_STREAM, EventStore, Replay, get_stream_id, replay_frames
from .sse import encode_event, encode_id, encode_message
from .stream import StreamController

__all__ = ["RedisEventStore", "RedisInfoSessionManager", "RedisStreamSessionManager"]

logger = logging.getLogger(__name__)

#: Most keys handled by one script call (bounds the time Redis spends in it).
_BATCH = 1000
#: Reconnection backoff of the listener, in seconds.
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 5.0
#: Longest the listener waits for a message before checking whether to stop.
_POLL = 1.0

_T = TypeVar("_T")

#: The head of a broadcast stored by the event store: its entry id (a message never starts with a digit).
_STORED_BROADCAST = re.compile(r"([0-9]{1,20}-[0-9]{1,20})\n")


def _chunks(items: Sequence[_T], size: int = _BATCH) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _valid_ids(sessions: Iterable[str]) -> list[str]:
    """The ids of a send that can name a stream; others are unknown ids, ignored."""
    ids = []
    for sid in _validate.session_ids(sessions):
        try:
            ids.append(_validate.session_id(sid))
        except ValueError:
            pass
    return ids


class _Stream:
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


def _position(event_id: str) -> tuple[int, int]:
    """The Redis entry id of an event id of a RedisEventStore, as a comparable pair."""
    ms, _, seq = event_id.rpartition(".")[2].partition("-")
    return int(ms), int(seq)


class _Replayer:
    """Stands in for an event store in :func:`replay_frames`, whose only call is ``replay()``."""

    __slots__ = ("replay",)

    def __init__(self, replay: Callable[[str, str], Replay]) -> None:
        self.replay = replay


class _Node:
    """The manager's state in one process: created on first use, again after a fork.

    Everything here (lock, events, threads, node id) must belong to the
    process (and to gevent if it patched this process), so none of it is
    created at import or inherited across ``fork`` (``gunicorn --preload``).
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.node = secrets.token_hex(8)
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.streams: dict[str, _Stream] = {}
        #: With an event store: registration number -> stream, the address of ``e`` messages.
        self.registrations: dict[str, _Stream] = {}
        self.creating: set[str] = set()
        self.pending: collections.deque[tuple[str, str]] = collections.deque()  # (sid, token) keys to delete
        self.stop = threading.Event()
        self.wake = threading.Event()  # heartbeat: pending deletions or a resync
        self.resync = threading.Event()  # heartbeat: beat now (the listener reconnected)
        self.ready = threading.Event()  # the listener is subscribed
        self.threads: list[threading.Thread] = []
        self.failures = 0  # failed listener connections in a row
        self.catch_ups = 0  # catch-ups of every stream the listener started (see _open_logged)


class RedisStreamSessionManager(RedisBacked, StreamSessionManager):
    """Streams of every process, reachable from any process through Redis.

    See the module documentation for keys, channels, costs and failure
    behaviour. Delivery is FIFO per stream (every message, local or not,
    goes through the holder's one subscription); at most once without an
    event store, exactly once across resumes with one.

    :param url_or_client: a ``redis://`` URL, or a :class:`redis.Redis` client.
    :param prefix: namespace of every key and channel.
    :param liveness_ttl: seconds after which the streams of a process that
        died without cleanup stop counting.
    :param heartbeat_interval: seconds between refreshes of this process's
        stream keys; default ``liveness_ttl / 3``, at most ``liveness_ttl / 2``.
    :param socket_timeout: seconds before a Redis call gives up (clients
        built from a URL), and longest ``create`` waits for the listener.
    :param max_connections: size of the command pool of a client built from
        a URL (the listener takes one of them).
    :param event_store: a :class:`RedisEventStore` on the same Redis, to make
        streams resumable; :meth:`close` closes it. No other store will do:
        storing a message must be atomic with routing it (one script does
        both), or a resume could miss or repeat events.
    """

    def __init__(
        self,
        url_or_client: str | redis_py.Redis,
        *,
        prefix: str = "mcp:",
        liveness_ttl: float = 30.0,
        heartbeat_interval: float | None = None,
        socket_timeout: float = 5.0,
        max_connections: int = 8,
        event_store: RedisEventStore | None = None,
    ) -> None:
        if event_store is not None and not isinstance(event_store, RedisEventStore):
            raise TypeError(
                f"event_store must be a RedisEventStore, not {type(event_store).__name__}: the Redis stream "
                "manager stores each message and routes it in one Redis script (so event ids follow delivery "
                "order and resumes lose and repeat nothing), which needs the store's logs in the same Redis"
            )
        ttl = positive_seconds(liveness_ttl, "liveness_ttl")
        interval = ttl / 3 if heartbeat_interval is None else positive_seconds(heartbeat_interval, "heartbeat_interval")
        if interval > ttl / 2:
            raise ValueError(
                f"heartbeat_interval ({interval:g} s) must be at most half of liveness_ttl ({ttl:g} s), "
                "so one late heartbeat does not expire live streams"
            )
        if event_store is not None and event_store.session_ttl <= 2 * interval:
            raise ValueError(
                f"the event store's session_ttl ({event_store.session_ttl:g} s) must exceed twice "
                f"heartbeat_interval ({interval:g} s): the heartbeat keeps the logs of open streams alive"
            )
        self._ttl_ms = milliseconds(ttl, "liveness_ttl")
        self._interval = interval
        self._timeout = self._connect(
            url_or_client,
            prefix=prefix,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            role="streams",
        )
        self._key_prefix = prefix + "stream:"
        self._channel_prefix = prefix + "node:"
        self._broadcast = prefix + "broadcast"
        register = self._client.register_script
        self._claim = register(lua.STREAM_CLAIM)
        self._refresh = register(lua.STREAM_REFRESH)
        self._forget_keys = register(lua.STREAM_FORGET)
        self._delete = register(lua.STREAM_DELETE)
        self._send = register(lua.STREAM_SEND)
        self._store = event_store
        #: ARGV[1..4] of the scripts that touch event logs ('' prefix: no store).
        self._store_args: tuple[str | int, ...] = ("", 0, 0, 0)
        if event_store is not None:
            self._store_args = event_store.script_args
            if describe(event_store._client) != describe(self._client):
                logger.warning(
                    "the event store connects to %s and the stream manager to %s: both must be the same Redis",
                    describe(event_store._client), describe(self._client),
                )
            self._claim_logged = register(lua.STREAM_CLAIM_LOGGED)
            self._resume = register(lua.STREAM_RESUME)
            self._send_logged = register(lua.STREAM_SEND_LOGGED)
            self._broadcast_logged = register(lua.STREAM_BROADCAST_LOGGED)
            self._catch_up_script = register(lua.STREAM_CATCH_UP)
        self._state_lock = threading.Lock()  # guards _state and _closed only
        self._state: _Node | None = None
        self._closed = False
        #: Streams closed because their consumer fell behind (this process).
        self.slow_consumers_dropped = 0

    # -- per-process state -------------------------------------------------

    def _node(self) -> _Node:
        """This process's state, created on first use (and anew in a forked child)."""
        state = self._state
        if state is not None and state.pid == os.getpid():
            return state
        with self._state_lock:
            state = self._state
            if state is None or state.pid != os.getpid():
                if state is not None:
                    logger.debug("process forked: starting afresh (streams of the parent stay there)")
                check_gevent()  # the child may have been patched after the parent built us
                state = self._state = _Node()
            return state

    @property
    def node_id(self) -> str:
        """Id of this process's node: its channel is ``<prefix>node:<node_id>``."""
        return self._node().node

    def _started(self) -> _Node:
        """The state of this process with its listener and heartbeat running."""
        if self._closed:
            raise RuntimeError("this RedisStreamSessionManager is closed")
        state = self._node()
        if state.threads:
            return state
        with self._state_lock:
            if self._closed:
                raise RuntimeError("this RedisStreamSessionManager is closed")
            if state.threads:
                return state
            state.threads = [
                threading.Thread(target=target, args=(state,), name=f"session_manager-redis-{name}", daemon=True)
                for target, name in ((self._listen, "listener"), (self._heartbeat, "heartbeat"))
            ]
        for thread in state.threads:  # outside the lock: under gevent, start() may switch greenlets
            thread.start()
        return state

    def _key(self, session_id: str) -> str:
        return self._key_prefix + session_id

    # -- public API --------------------------------------------------------

    @property
    def event_store(self) -> EventStore | None:
        return self._store

    def create(self, session_id: str, controller: StreamController, *, last_event_id: str | None = None) -> None:
        self._check_create(session_id, controller, last_event_id)
        resume_from = None
        if last_event_id is not None:
            resume_from = check_resume(session_id, last_event_id)  # a bad id touches nothing
        state = self._started()
        with state.lock:
            current = state.streams.get(session_id)
            if session_id in state.creating or (
                resume_from is None and current is not None and not current.controller.closed
            ):
                raise StreamConflictError(session_id)
            state.creating.add(session_id)
        entry = _Stream(controller, state.node, next(state.counter), session_id)
        try:
            if not state.ready.wait(0 if state.failures else self._timeout):
                raise self._errors.unavailable(
                    "the listener of this process is not connected, so the stream could not receive "
                    "messages; see the session_manager.redis log"
                )
            if self._store is None:
                with self._errors:
                    claimed = self._claim(keys=[self._key(session_id)], args=[entry.token, state.node, self._ttl_ms])
                if not claimed:
                    raise StreamConflictError(session_id)
            else:
                self._open_logged(state, entry, last_event_id, resume_from)
            with state.lock:
                replaced = state.streams.get(session_id)
                state.streams[session_id] = entry
        except BaseException:
            with state.lock:
                if state.registrations.get(entry.number) is entry:
                    del state.registrations[entry.number]
            raise
        finally:
            with state.lock:
                state.creating.discard(session_id)
        if replaced is not None:
            replaced.controller.close()  # taken over by the resume (or already closed)
        controller.add_close_callback(lambda: self._forget(state, session_id, entry))

    def _open_logged(self, state: _Node, entry: _Stream, last_event_id: str | None, resume_from: str | None) -> None:
        """Claim the stream key and prime the stream: priming id, or the replay of a resume.

        The registration is addressable before the script runs, so every
        message routed to it once the key names it is queued (after the
        primed frames); messages routed to earlier registrations never are.
        """
        with state.lock:
            state.registrations[entry.number] = entry
        catch_ups = state.catch_ups
        try:
            self._prime_logged(state, entry, last_event_id, resume_from)
        finally:
            if entry.floor is not None and state.catch_ups != catch_ups:
                # The listener reconnected meanwhile: it may have lost the "f" message that makes
                # this registration live, and caught up every stream but this one: ask it to.
                self._request_catch_up(state, entry)

    def _request_catch_up(self, state: _Node, entry: _Stream) -> None:
        """Have the listener catch *entry* up from its floor (``c <n>``; a no-op if it is live)."""
        try:
            self._client.publish(self._channel_prefix + state.node, f"c {entry.number}")
        except REDIS_DOWN:  # the listener's next reconnection catches every stream up
            logger.debug("could not ask the listener to catch up stream %r", entry.session_id, exc_info=True)

    def _prime_logged(self, state: _Node, entry: _Stream, last_event_id: str | None, resume_from: str | None) -> None:
        """Run the claim or resume script; set the stream's floor and prime it."""
        sid, controller = entry.session_id, entry.controller
        if last_event_id is None:
            with self._errors:
                primer = self._claim_logged(
                    keys=[self._key(sid)],
                    args=[
                        *self._store_args, entry.token, state.node, self._ttl_ms, sid, get_stream_id(sid),
                        self._channel_prefix,
                    ],
                )
            if primer is None:
                raise StreamConflictError(sid)
            entry.floor = _position(text(primer))
            controller.prime([encode_event("", id=text(primer), retry=controller.retry)])
            return
        assert resume_from is not None  # create() checks last_event_id into it
        stream_id = get_stream_id(sid)

        def take_over(session_id: str, event_id: str) -> Replay:
            with self._errors:
                reply = self._resume(
                    keys=[self._key(sid)],
                    args=[
                        *self._store_args, entry.token, state.node, self._ttl_ms, sid, stream_id, resume_from,
                        self._channel_prefix,
                    ],
                )
            replay = replay_reply(event_id, stream_id, reply)
            entry.floor = _position(replay.events[-1][0] if replay.events else event_id)
            return replay

        # replay_frames needs only the store's replay(): here, the script that also takes the stream over.
        controller.prime(replay_frames(_Replayer(take_over), sid, stream_id, last_event_id, controller.retry))  # type: ignore[arg-type]

    def delete(self, session_id: str) -> None:
        _validate.session_id(session_id)
        state = self._node()
        with state.lock:
            entry = state.streams.pop(session_id, None)
            if entry is not None:
                entry.forgotten = True  # its key is deleted right below
        if entry is not None:
            entry.controller.close()
        try:
            with self._errors:
                self._delete(
                    keys=[self._key(session_id)],
                    args=[state.node, self._channel_prefix, session_id, self._ttl_ms],
                )
            if self._store is not None:
                self._store.delete(session_id)
        except BackendUnavailableError:
            if entry is None:
                raise
            # The stream is closed; its key goes when Redis is back (or expires).
            logger.warning("Redis unavailable: the key of deleted stream %r is removed later", session_id)
            state.pending.append((session_id, entry.token))
            state.wake.set()

    def has(self, session_id: str) -> bool:
        _validate.session_id(session_id)
        state = self._node()
        entry = state.streams.get(session_id)
        if entry is not None and not entry.controller.closed:
            return True
        with self._errors:
            value = self._client.get(self._key(session_id))
        if value is None:
            return False
        token = text(value)
        # A tombstone, or a stream of this process that is not open any more.
        return not token.startswith("-") and token.partition(":")[0] != state.node

    def send(self, sessions: Iterable[str] | None, data: str) -> None:
        _validate.message(data)
        logged = self._store is not None
        if sessions is None:
            with self._errors:
                if logged:
                    self._broadcast_logged(args=[*self._store_args, self._broadcast, data])
                else:
                    self._client.publish(self._broadcast, data)
            return
        ids = _valid_ids(sessions)
        if not ids:
            return
        if logged:
            script, head = self._send_logged, [*self._store_args, self._channel_prefix, data]
        else:
            script, head = self._send, [self._channel_prefix, data]

        def call(chunk: Sequence[str], client: Any = None) -> None:
            streams = [get_stream_id(sid) for sid in chunk] if logged else []
            script(keys=[self._key(sid) for sid in chunk], args=[*head, *chunk, *streams], client=client)

        with self._errors:
            if len(ids) <= _BATCH:
                call(ids)
                return
            with self._client.pipeline(transaction=False) as pipe:
                for chunk in _chunks(ids):
                    call(chunk, pipe)
                pipe.execute()

    def close(self) -> None:
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            state = self._state if self._state is not None and self._state.pid == os.getpid() else None
        try:
            if state is not None:
                self._shutdown(state)
        finally:
            try:
                self._disconnect()
            finally:
                if self._store is not None:
                    self._store.close()

    def _shutdown(self, state: _Node) -> None:
        """Close this process's streams, stop its threads, delete its keys."""
        with state.lock:
            entries = list(state.streams.items())
            state.streams.clear()
            state.registrations.clear()
            for _, entry in entries:
                entry.forgotten = True
        for _, entry in entries:
            entry.controller.close()
        state.stop.set()
        state.wake.set()
        if state.threads:
            try:  # wake the listener now rather than at its next poll
                self._client.publish(self._channel_prefix + state.node, "x")
            except REDIS_DOWN:
                pass
        current = threading.current_thread()
        for thread in state.threads:
            if thread is not current and thread.ident is not None:
                thread.join(self._timeout + _POLL)
                if thread.is_alive():
                    logger.warning("%s did not stop in time", thread.name)
        state.pending.extend((sid, entry.token) for sid, entry in entries)
        try:
            self._flush(state)
        except REDIS_DOWN as exc:
            logger.warning("Redis unavailable at close: %d stream keys expire by themselves (%s)", len(state.pending), exc)

    def __len__(self) -> int:
        """Number of streams this process holds."""
        state = self._state
        return len(state.streams) if state is not None and state.pid == os.getpid() else 0

    def __repr__(self) -> str:
        return f"<RedisStreamSessionManager prefix={self._prefix!r} local_streams={len(self)}>"

    # -- bookkeeping -------------------------------------------------------

    def _forget(self, state: _Node, session_id: str, entry: _Stream) -> None:
        """Unregister an ended stream (never a newer one) and queue its key for deletion."""
        with state.lock:
            if state.streams.get(session_id) is entry:
                del state.streams[session_id]
                self.slow_consumers_dropped += entry.controller.overflowed
            if state.registrations.get(entry.number) is entry:
                del state.registrations[entry.number]
            if entry.forgotten:
                return
            entry.forgotten = True
        state.pending.append((session_id, entry.token))
        state.wake.set()

    def _end(self, state: _Node, entry: _Stream) -> None:
        """Close a local stream the server ends (deleted, taken over, messages lost) and unregister it."""
        self._forget(state, entry.session_id, entry)
        entry.controller.close()

    def _queue(self, state: _Node, entry: _Stream, position: tuple[int, int], chunk: bytes) -> None:
        """Listener: queue a stored event on a live stream, unless it has it (replayed, primed or caught up)."""
        last = entry.last
        if last is None or position <= last:
            return
        entry.last = position
        if not entry.controller.enqueue_frame(chunk):
            self._forget(state, entry.session_id, entry)

    def _catch_up(self, state: _Node, entries: list[_Stream] | None = None) -> None:
        """Listener, after an outage: queue what each resumable stream (or *entries*) missed, from its logs.

        Runs before the listener reads any further message, so events come in
        order; those the subscription delivers again are dropped by position.
        Every stream caught up is live from then on. A stream that missed
        more than its logs hold is closed (its client resumes and learns it);
        one whose log Redis lost stays open (the heartbeat opens a new log).
        """
        if entries is None:
            state.catch_ups += 1  # before collecting the streams: see _open_logged
            with state.lock:
                entries = list(state.registrations.values())
        entries = [e for e in entries if e.floor is not None and not e.controller.closed]
        lost = 0
        for chunk in _chunks(entries, 100):
            args: list[str | int] = [*self._store_args]
            for entry in chunk:
                floor = entry.floor or (0, 0)
                entry.last = ms, seq = max(entry.last or floor, floor)  # live from here on
                args += [entry.session_id, get_stream_id(entry.session_id), f"{ms}-{seq}"]
            for entry, reply in zip(chunk, self._catch_up_script(args=args)):
                if isinstance(reply, list):
                    for i in range(0, len(reply), 2):
                        event_id = text(reply[i])
                        self._queue(state, entry, _position(event_id), encode_id(event_id) + encode_message(text(reply[i + 1])))
                elif text(reply) == "expired":
                    logger.warning("stream of session %r missed more events than its log holds: closing it", entry.session_id)
                    self._end(state, entry)
                else:
                    lost += 1
        if lost:
            logger.warning("the event logs of %d open streams are gone (Redis lost its data?): new logs are opened", lost)

    def _flush(self, state: _Node) -> None:
        """Delete the keys of ended streams (if they still name them); raises REDIS_DOWN."""
        items: list[tuple[str, str]] = []
        while state.pending:
            try:
                items.append(state.pending.popleft())
            except IndexError:
                break
        try:
            for chunk in _chunks(items):
                self._forget_keys(keys=[self._key(sid) for sid, _ in chunk], args=[token for _, token in chunk])
        except BaseException:
            state.pending.extend(items)  # deleting twice is harmless
            raise

    def _beat(self, state: _Node) -> None:
        """Refresh every local stream key; close local streams deleted or taken elsewhere."""
        with state.lock:
            items = list(state.streams.items())
        for chunk in _chunks(items):
            streams = [get_stream_id(sid) for sid, _ in chunk] if self._store is not None else []
            results = self._refresh(
                keys=[self._key(sid) for sid, _ in chunk],
                args=[
                    *self._store_args, self._ttl_ms, len(self._key_prefix), self._prefix,
                    *(e.token for _, e in chunk), *streams,
                ],
            )
            for (sid, entry), alive in zip(chunk, results):
                if not alive:
                    if not entry.controller.closed:
                        logger.info("stream of session %r was deleted or taken over elsewhere: closing it", sid)
                    self._end(state, entry)
                elif entry.controller.closed or state.streams.get(sid) is not entry:
                    state.pending.append((sid, entry.token))  # ended meanwhile: the beat may have re-created its key

    def _heartbeat(self, state: _Node) -> None:
        """Thread: refresh stream keys every interval, delete ended streams' keys promptly."""
        next_beat = time.monotonic() + self._interval
        failing = False
        while not state.stop.is_set():
            state.wake.wait(max(0.0, next_beat - time.monotonic()))
            state.wake.clear()
            if state.stop.is_set():
                break
            try:
                if state.resync.is_set() or time.monotonic() >= next_beat:
                    state.resync.clear()
                    self._beat(state)
                    next_beat = time.monotonic() + self._interval
                self._flush(state)
                if failing:
                    logger.info("Redis heartbeat recovered")
                    failing = False
            except REDIS_DOWN as exc:
                if not failing:
                    logger.warning("Redis heartbeat failed, retrying (%s: %s)", type(exc).__name__, exc)
                    failing = True
                state.stop.wait(min(self._interval, 1.0))
            except Exception:
                logger.exception("Redis heartbeat failed unexpectedly, retrying")
                state.stop.wait(min(self._interval, 1.0))

    # -- listener ----------------------------------------------------------

    def _listen(self, state: _Node) -> None:
        """Thread: the node's one subscription; reconnects with backoff until stopped."""
        backoff = _BACKOFF_MIN
        last_log = 0.0
        while not state.stop.is_set():
            pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            try:
                pubsub.subscribe(self._channel_prefix + state.node, self._broadcast)
                self._serve(state, pubsub)
            except REDIS_DOWN as exc:
                if state.ready.is_set():  # it was working: a new outage starts
                    state.failures, backoff = 0, _BACKOFF_MIN
                state.failures += 1
                now = time.monotonic()
                if state.failures == 1 or now - last_log > 60:
                    last_log = now
                    logger.warning(
                        "Redis listener disconnected (%s: %s); reconnecting with backoff (attempt %d)",
                        type(exc).__name__, exc, state.failures,
                    )
            except Exception:
                state.failures += 1
                logger.exception("Redis listener failed unexpectedly; restarting it")
            finally:
                state.ready.clear()
                try:
                    pubsub.close()
                except Exception:  # closing a broken connection may fail too
                    logger.debug("closing the listener's connection failed", exc_info=True)
            if not state.stop.is_set():
                state.stop.wait(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, _BACKOFF_MAX)
        logger.debug("Redis listener stopped")

    def _serve(self, state: _Node, pubsub: redis_py.client.PubSub) -> None:
        """Dispatch messages until stopped; raises REDIS_DOWN when the connection is lost."""
        node_channel = self._channel_prefix + state.node
        node_channels = {node_channel, node_channel.encode()}
        confirmed = 0
        last_seen = time.monotonic()
        ping_sent: float | None = None
        while not state.stop.is_set():
            message = pubsub.get_message(timeout=min(_POLL, self._interval))
            now = time.monotonic()
            if message is None:
                if ping_sent is None:
                    if now - last_seen >= self._interval:
                        pubsub.ping()  # a reply proves the connection is alive
                        ping_sent = now
                elif now - ping_sent > max(self._timeout, self._interval):
                    raise redis_py.exceptions.ConnectionError("no reply to PING on the pub/sub connection")
                continue
            last_seen, ping_sent = now, None
            kind = message["type"]
            if kind == "message":
                if message["channel"] in node_channels:
                    self._on_node_message(state, text(message["data"]))
                elif self._store is not None:
                    self._deliver_stored_broadcast(state, text(message["data"]))
                else:
                    self._deliver_all(state, text(message["data"]))
            elif kind == "subscribe":
                confirmed += 1
                if confirmed % 2 == 0:
                    # Both channels confirmed: the first time, or redis-py reconnected by itself.
                    if (confirmed > 2 or state.failures) and self._store is not None:
                        self._catch_up(state)
                    if confirmed > 2:
                        logger.warning(
                            "Redis listener lost its connection; redis-py reconnected and resubscribed it "
                            "(messages sent meanwhile are lost); re-registering this node's streams"
                        )
                    elif state.failures:
                        logger.info(
                            "Redis listener resubscribed after %d failed attempts; re-registering this node's streams",
                            state.failures,
                        )
                    state.failures = 0
                    if state.streams:  # Redis may have lost their keys: beat now
                        state.resync.set()
                        state.wake.set()
                    state.ready.set()

    def _on_node_message(self, state: _Node, payload: str) -> None:
        kind = payload[:1]
        if kind == "m":
            head, _, data = payload.partition("\n")
            frame = encode_message(data)
            streams = state.streams
            for sid in head[2:].split(" "):
                entry = streams.get(sid)
                if entry is not None and not entry.controller.enqueue_frame(frame):
                    self._forget(state, sid, entry)
        elif kind == "e":
            head, _, data = payload.partition("\n")
            frame = encode_message(data)
            items = head[2:].split(" ")
            registrations = state.registrations
            framed: dict[str, tuple[tuple[int, int], bytes]] = {}  # a message sent to many has one id
            for i in range(0, len(items) - 1, 2):
                entry = registrations.get(items[i])
                if entry is None:
                    continue
                event_id = items[i + 1]
                event = framed.get(event_id)
                if event is None:
                    event = framed[event_id] = (_position(event_id), encode_id(event_id) + frame)
                self._queue(state, entry, *event)
        elif kind == "f":
            _, number, position = payload.split(" ", 2)
            entry = state.registrations.get(number)
            if entry is not None:
                floor = _position(position)
                entry.last = max(entry.last or floor, floor)
        elif kind == "c":
            entry = state.registrations.get(payload[2:])
            if entry is not None and entry.last is None:  # its "f" was lost
                self._catch_up(state, [entry])
        elif kind == "d":
            _, sid, token = payload.split(" ", 2)
            entry = state.streams.get(sid)
            if entry is not None and entry.token == token:
                self._end(state, entry)
        elif kind != "x":
            logger.warning("ignoring an unknown message on the node channel: %.80r", payload)

    def _deliver_stored_broadcast(self, state: _Node, payload: str) -> None:
        """A stored broadcast (``<entry id>\\n<data>``): framed once, queued on every live registration.

        A payload without an entry id comes from a manager without an event
        store (e.g. a notification script): delivered as such, unstored.
        """
        header = _STORED_BROADCAST.match(payload)
        if header is None:
            self._deliver_all(state, payload)
            return
        event_id = f"{GET_STREAM}.{header.group(1)}"
        chunk = encode_id(event_id) + encode_message(payload[header.end() :])
        position = _position(event_id)
        with state.lock:
            targets = list(state.registrations.values())
        for entry in targets:
            self._queue(state, entry, position, chunk)

    def _deliver_all(self, state: _Node, data: str) -> None:
        frame = encode_message(data)
        with state.lock:
            targets = state.streams.copy()  # far cheaper than a list of item tuples
        for sid, entry in targets.items():
            if not entry.controller.enqueue_frame(frame):
                self._forget(state, sid, entry)


class RedisInfoSessionManager(RedisBacked, FieldStoreInfoManager):
    """Session metadata shared by every process, in Redis.

    Same semantics as :class:`~session_manager.InMemoryInfoSessionManager`,
    plus expiry: a session not used for ``session_ttl`` seconds is gone.
    Every method that names a session (getters included) refreshes its
    expiry in the same script that does the work; ``get_subscriptions``
    does not (it is not activity of those sessions). Each call is one
    round trip; every write checks that the session exists atomically, so
    a setter racing a ``delete`` can never resurrect the session.

    :param url_or_client: a ``redis://`` URL, or a :class:`redis.Redis` client.
    :param prefix: namespace of every key.
    :param session_ttl: seconds of inactivity after which a session expires.
    :param socket_timeout: seconds before a Redis call gives up (clients built from a URL).
    :param max_connections: size of the command pool of a client built from a URL.
    """

    def __init__(
        self,
        url_or_client: str | redis_py.Redis,
        *,
        prefix: str = "mcp:",
        session_ttl: float = 3600.0,
        socket_timeout: float = 5.0,
        max_connections: int = 8,
    ) -> None:
        self._ttl_ms = milliseconds(session_ttl, "session_ttl")
        self._connect(
            url_or_client,
            prefix=prefix,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            role="info",
        )
        self._session_prefix = prefix + "session:"
        self._index_prefix = prefix + "subs:"
        self._uri_prefix = prefix + "uri:"
        register = self._client.register_script
        self._create = register(lua.INFO_CREATE)
        self._exists = register(lua.INFO_EXISTS)
        self._get_all = register(lua.INFO_GET_ALL)
        self._get_field = register(lua.INFO_GET_FIELD)
        self._set_field = register(lua.INFO_SET_FIELD)
        self._subscribe = register(lua.INFO_SUBSCRIBE)
        self._unsubscribe = register(lua.INFO_UNSUBSCRIBE)
        self._delete = register(lua.INFO_DELETE)
        self._subscribers = register(lua.INFO_SUBSCRIBERS)

    def _run(self, script: Callable[..., Any], session_id: str, *args: Any, extra_key: str | None = None) -> Any:
        """Run an info script on the keys of *session_id* (already validated)."""
        keys = [self._session_prefix + session_id, self._index_prefix + session_id]
        if extra_key is not None:
            keys.append(extra_key)
        with self._errors:
            return script(keys=keys, args=[self._uri_prefix, self._ttl_ms, *args])

    def _insert(self, session_id: str, fields: dict[str, str]) -> bool:
        # ttl: how long an open stream of the session keeps it alive (the stream heartbeat reads it).
        flat = ["created", repr(time.time()), "ttl", str(self._ttl_ms)]
        for name, value in fields.items():
            flat += [name, value]
        return bool(self._run(self._create, session_id, *flat))

    def _read_all(self, session_id: str) -> Mapping[str, str] | None:
        flat = self._run(self._get_all, session_id)
        return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)} if flat else None

    def _read(self, session_id: str, name: str) -> str | None:
        value = self._run(self._get_field, session_id, name)
        return None if value is None else text(value)

    def _write(self, session_id: str, name: str, value: str) -> bool:
        return bool(self._run(self._set_field, session_id, name, value))

    def exists(self, session_id: str) -> bool:
        return bool(self._run(self._exists, _validate.session_id(session_id)))

    def get_subscriptions(self, uri: str) -> list[str]:
        _validate.text(uri, "uri")
        with self._errors:
            members = self._subscribers(
                keys=[self._uri_prefix + uri], args=[self._session_prefix, self._index_prefix, uri]
            )
        return [text(sid) for sid in members]

    def add_subscription(self, session_id: str, uri: str) -> None:
        _validate.session_id(session_id)
        _validate.text(uri, "uri")
        if not self._run(self._subscribe, session_id, uri, session_id, extra_key=self._uri_prefix + uri):
            raise SessionNotFoundError(session_id)

    def remove_subscription(self, session_id: str, uri: str) -> None:
        _validate.session_id(session_id)
        _validate.text(uri, "uri")
        self._run(self._unsubscribe, session_id, uri, session_id, extra_key=self._uri_prefix + uri)

    def delete(self, session_id: str) -> None:
        self._run(self._delete, _validate.session_id(session_id), session_id)

    def close(self) -> None:
        """Disconnect the pool this manager created (a client passed in stays open)."""
        self._disconnect()

    def __repr__(self) -> str:
        return f"<RedisInfoSessionManager prefix={self._prefix!r}>"
