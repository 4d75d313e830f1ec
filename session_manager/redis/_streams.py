"""RedisStreamSessionManager: the streams of every process, reachable from any process.

The public API and routing live here; the rest of the design is one module
a job:

- :mod:`._node`: the per-process node (local streams, listener and
  heartbeat threads, fork handling, catch-up bookkeeping) and failures;
- :mod:`._codec`: the pub/sub messages, encoded and decoded in one place;
- :mod:`._keys`: the key and channel names; :mod:`._scripts`: the Lua.

Routing: ``create`` claims the session's stream key for this node's new
registration (one script); ``send`` from any process publishes to the nodes
that hold the targets (one script looks the owners up and PUBLISHes once per
owning node), and the owner's listener queues the frame on its local
streams; ``delete`` works from any process (the owner is told to close).

Sends: ``send_many`` sends a whole batch with one script call (per 1,000
targets or messages), the calls pipelined in one round trip, so a burst of
K messages costs one round trip instead of K; ``send`` is a batch of one.
The script publishes each run of consecutive broadcasts as one pub/sub
message, and each run of targeted messages as one per node holding targets
(:mod:`._codec` batches): a listener decodes K messages at once, and queues
them on its streams as one batch (:mod:`._node`). A send is never retried:
after a timeout Redis may have run it already, and a retry could deliver it
twice (:func:`~._common.run_once`); the error says which messages of a batch
were sent, which may have been, which were not. A caller that must know
retries with an idempotency key: the script marks the key (``SET NX PX
dedupe_ttl``, :mod:`._keys`) before it routes or stores the message, in the
same atomic call, and skips a message whose key is marked, so a retry of a
send that did run does nothing (exactly once, stored once). A message
without a key costs nothing more.

Event store: with a :class:`~session_manager.redis.RedisEventStore`
(``event_store=``) streams are resumable. One script stores a message on
each target's GET-stream log and publishes it with its event id to the
owning node, so event ids are in delivery order and a resume (one script
that replays the log and takes the stream key over, from any process) sees
every event exactly once. A broadcast is stored once, on the store's
broadcast log that every GET-stream replay merges (so it reaches every
session with a GET-stream log, open stream or not), and published once with
its entry id; each node frames it once and queues it on its live
registrations.

The deployment decides whether events are stored, not each process: a
manager without a store refuses every send (one ``EXISTS`` per call, in the
send script) while a ``RedisEventStore`` keeps logs on its prefix (the
store's broadcast log lives as long as any GET-stream log), raising
:class:`~session_manager.EventStoreRequiredError` with nothing sent. Its
messages would carry no id and miss the logs: a client resuming across one
would get a replay with a hole it cannot see.

Why the manager takes a ``RedisEventStore`` and nothing else (a
``TypeError`` says so): storing a message and routing it are one Lua script,
and so are replaying a log and taking the stream over; any other store would
need a second step in between, in which a resume could miss or repeat
events. The manager therefore does not go through the generic
:class:`~session_manager.events.EventStore` API for these: it runs its own
scripts on the store's keys with the store's ``script_args``, and frames the
replay its resume script returns itself (``check_resume`` has already
refused an id of another stream before anything is touched). The store's
methods serve everyone else (the transport's POST streams, ``delete``).

Expiry: an open stream keeps its session alive. The heartbeat refreshes,
for every local stream, the session's info keys (when a
:class:`~session_manager.redis.RedisInfoSessionManager` with the same prefix
created it) and its event logs. A session with no open stream expires by
TTL, every key of it.

Costs: a broadcast is one PUBLISH (with an event store, one XADD and one
PUBLISH, whatever the number of sessions), a targeted send one PUBLISH per
node holding targets (with a store, one XADD per target), and a batch of
consecutive ones shares them: one PUBLISH per run and node. Each ``send`` or
``send_many`` is one script call per 1,000 targets or messages, all in one
round trip. The frame is SSE-encoded once per message per node.

Connections per process and manager: one pub/sub listener plus a bounded
command pool (``max_connections`` for a client built from a URL), for any
number of sessions. Calls that need Redis during an outage raise
:class:`~session_manager.BackendUnavailableError` within the socket timeouts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import redis as redis_py

from .. import _validate
from .._validate import positive_seconds
from ..base import DEFAULT_DEDUPE_TTL, CheckedMessage, Message, StreamSessionManager, batch_error, checked_batch
from ..base import idempotency_key as checked_key
from ..errors import BackendUnavailableError, EventStoreRequiredError, MessageTooLargeError, StreamConflictError
from ..events import EventStore, get_stream_id, resume_frames
from ..replies import PendingReply
from ..sse import encode_event, encode_message
from ..stream import DEFAULT_MAX_BYTES, FRAME_ROOM, StreamController
from . import _scripts as lua
from ._common import Call, CallsFailed, RedisBacked, milliseconds, run_once, text
from ._events import RedisEventStore, check_resume, position, replay_reply
from ._keys import Keys
from ._node import BATCH, Node, NodeConfig, NodeSlot, Registration

__all__ = ["RedisStreamSessionManager"]

logger = logging.getLogger(__name__)

#: Most bytes of message data in one script call (a call is one command: Redis reads it whole).
_CALL_BYTES = 4 * 1024 * 1024
#: In a ``STREAM_SEND_MANY`` call: the argument before a message with a mark key (an idempotency key's).
_MARKED = "k"
#: The reply of a ``STREAM_SEND_MANY`` call that refused to send (a store-less manager where logs live).
_REFUSED = -1

def _valid_ids(sessions: Iterable[str]) -> list[str]:
    """The ids of a send that can name a stream; others are unknown ids, ignored."""
    ids = []
    for sid in _validate.session_ids(sessions):
        try:
            ids.append(_validate.session_id(sid))
        except ValueError:
            pass
    return ids


class _SendCalls:
    """The ``STREAM_SEND_MANY`` calls of one batch, and which calls hold each message.

    A call holds at most :data:`BATCH` targets, :data:`BATCH` messages and
    about :data:`_CALL_BYTES` of data (bounding the time Redis spends in
    one script); a message with more targets is split over several calls.
    A message with an idempotency key is split at fixed points of its own
    targets (every :data:`BATCH`), each part marked with its own key
    (``Keys.sent(key, part)``): a retry splits it the same way, whatever
    else its batch holds, so each part runs once.
    """

    def __init__(self, head: list[str | int], keys: Keys, logged: bool) -> None:
        self.calls: list[Call] = []
        #: Per message: the first and the last call holding a part of it (a message with nothing to send:
        #: the call that was open when it came).
        self.spans: list[tuple[int, int]] = []
        self._head, self._stream_key, self._sent_key, self._logged = head, keys.stream, keys.sent, logged
        self._keys: list[str] = []
        self._args: list[str | int] = list(head)
        self._parts = self._bytes = 0

    def add(self, sessions: Sequence[str] | None, data: str, key: str | None = None) -> None:
        if sessions is None:
            call = self._part(data, None, None if key is None else self._sent_key(key))
            self.spans.append((call, call))
            return
        rest = _valid_ids(sessions)
        holders: list[int] = []
        if key is not None:  # marked parts, even with no target: the key is used all the same
            for part, start in enumerate(range(0, max(len(rest), 1), BATCH)):
                ids = rest[start : start + BATCH]
                if self._keys and len(self._keys) + len(ids) >= BATCH:
                    self._close()
                holders.append(self._part(data, ids, self._sent_key(key, part)))
        while rest and key is None:  # usually one part; else fill the open call, then the next ones
            if len(self._keys) >= BATCH:
                self._close()
            room = BATCH - len(self._keys)
            holders.append(self._part(data, rest[:room]))
            rest = rest[room:]
        self.spans.append((holders[0], holders[-1]) if holders else (len(self.calls), len(self.calls)))

    def _part(self, data: str, ids: Sequence[str] | None, mark: str | None = None) -> int:
        """Add one message (to *ids*, or to every stream; *mark*: its mark key) to the open call; return its index."""
        if self._parts == BATCH or (self._parts and self._bytes + len(data) > _CALL_BYTES):
            self._close()
        args = self._args
        if mark is not None:
            args.append(_MARKED)
            self._keys.append(mark)
        if ids is None:
            args += (-1, data)
        else:
            args += (len(ids), data)
            args += ids
            if self._logged:
                args += [get_stream_id(sid) for sid in ids]
            self._keys += [self._stream_key(sid) for sid in ids]
        self._parts += 1
        self._bytes += len(data)
        return len(self.calls)

    def _close(self) -> None:
        if self._parts:
            self.calls.append((self._keys, self._args))
            self._keys, self._args, self._parts, self._bytes = [], list(self._head), 0, 0

    def finish(self) -> list[Call]:
        self._close()
        return self.calls

    def outcome(self, done: int, unsure: bool) -> tuple[int, int]:
        """``(sent, unknown)``: messages wholly in the first *done* calls, and those that may have been sent.

        *unsure*: the calls from *done* on may have run (else none did, and
        only a message split across the boundary is in doubt).
        """
        sent = 0
        while sent < len(self.spans) and self.spans[sent][1] < done:
            sent += 1
        if unsure:
            return sent, len(self.spans) - sent
        return sent, int(sent < len(self.spans) and self.spans[sent][0] < done)

    def whole(self, ran: Sequence[bool]) -> int:
        """The messages wholly in calls that ran (``ran[i]``: call *i* did), when some calls refused."""
        return sum(all(ran[first : last + 1]) for first, last in self.spans)


class RedisStreamSessionManager(RedisBacked, StreamSessionManager):
    """Streams of every process, reachable from any process through Redis.

    See the documentation of the modules of :mod:`session_manager.redis`:
    ``_streams`` (routing, event store, costs), ``_node`` (threads, failure
    behaviour), ``_keys`` (keys) and ``_codec`` (channels and messages).
    Delivery is FIFO per stream (every message, local or not, goes through
    the holder's one subscription); at most once without an event store,
    exactly once across resumes with one.

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
        both), or a resume could miss or repeat events. Without one, sends
        raise :class:`~session_manager.EventStoreRequiredError` (nothing
        sent) while a store keeps logs on *prefix*: the deployment decides.
    :param dedupe_ttl: seconds a send's ``idempotency_key`` is remembered
        (a ``sent:<key>`` key in Redis with that TTL, shared by every process).
    :param max_message_bytes: the largest frame (the message in UTF-8 as SSE,
        with room for its id) a send accepts;
        a larger one raises :class:`~session_manager.MessageTooLargeError`,
        nothing sent. The streams of other processes cannot tell this one
        that a message exceeds their bound, so it is checked here: keep it
        at most the transports' ``stream_max_bytes`` (both 16 MiB by
        default, half of Redis's default pub/sub output buffer limit).
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
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        max_message_bytes: int = DEFAULT_MAX_BYTES,
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
        self._max_message_bytes = _validate.positive_int(max_message_bytes, "max_message_bytes")
        self._ttl_ms = milliseconds(ttl, "liveness_ttl")
        dedupe_ms = milliseconds(dedupe_ttl, "dedupe_ttl")
        self._timeout = self._connect(
            url_or_client,
            prefix=prefix,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            role="streams",
        )
        self._keys = keys = Keys(self._prefix)
        self._channel_head = keys.node_channel_head
        self._broadcast = keys.broadcast_channel
        register = self._client.register_script
        self._claim = register(lua.STREAM_CLAIM)
        self._delete = register(lua.STREAM_DELETE)
        self._send = register(lua.STREAM_SEND_MANY)
        self._deliver = register(lua.REPLY_DELIVER)
        self._store = event_store
        #: ARGV[1..4] of the scripts that touch event logs ('' prefix: no store).
        self._store_args: tuple[str | int, ...] = ("", 0, 0, 0)
        if event_store is not None:
            self._store_args = event_store.script_args
            if event_store._redis_location() != self._redis_location():
                logger.warning(
                    "the event store connects to %s and the stream manager to %s: both must be the same Redis",
                    event_store._redis_location(), self._redis_location(),
                )
            self._claim_logged = register(lua.STREAM_CLAIM_LOGGED)
            self._resume = register(lua.STREAM_RESUME)
        #: ARGV[1..8] of every STREAM_SEND_MANY call; without a store the script checks no store logs on our prefix.
        guarded = "" if event_store is not None else self._prefix
        self._send_head: list[str | int] = [*self._store_args, self._channel_head, self._broadcast, guarded, dedupe_ms]
        self._slot = NodeSlot(
            NodeConfig(
                self._client,
                keys,
                store_args=self._store_args,
                logged=event_store is not None,
                ttl_ms=self._ttl_ms,
                interval=interval,
                timeout=self._timeout,
            )
        )

    def _node(self) -> Node:
        """This process's node, created on first use (and anew in a forked child)."""
        return self._slot.current()

    @property
    def node_id(self) -> str:
        """Id of this process's node: its channel is ``<prefix>node:<node_id>``."""
        return self._node().node

    @property
    def slow_consumers_dropped(self) -> int:
        """Streams of this process closed because their consumer fell behind."""
        node = self._slot.local()
        return 0 if node is None else node.slow_consumers_dropped

    # -- public API --------------------------------------------------------

    @property
    def event_store(self) -> EventStore | None:
        return self._store

    def create(self, session_id: str, controller: StreamController, *, last_event_id: str | None = None) -> None:
        self._check_create(session_id, controller, last_event_id)
        resume_from = None
        if last_event_id is not None:
            resume_from = check_resume(session_id, last_event_id)  # a bad id touches nothing
        node = self._slot.started()
        with node.lock:
            current = node.streams.get(session_id)
            if session_id in node.creating or (
                resume_from is None and current is not None and not current.controller.closed
            ):
                raise StreamConflictError(session_id)
            node.creating.add(session_id)
        entry = Registration(controller, node.node, next(node.counter), session_id)
        with node.lock:
            node.fits_all = min(node.fits_all, controller.max_bytes - controller.frame_overhead)
            node.short_all = min(node.short_all, controller.short_frame)
        try:
            if not node.ready.wait(0 if node.failures else self._timeout):
                raise self._errors.unavailable(
                    "the listener of this process is not connected, so the stream could not receive "
                    "messages; see the session_manager.redis log"
                )
            if self._store is None:
                with self._errors:
                    claimed = self._claim(
                        keys=[self._keys.stream(session_id)], args=[entry.token, node.node, self._ttl_ms]
                    )
                if not claimed:
                    raise StreamConflictError(session_id)
            else:
                self._open_logged(node, entry, last_event_id, resume_from)
            with node.lock:
                replaced = node.streams.get(session_id)
                node.streams[session_id] = entry
        except BaseException:
            with node.lock:
                if node.registrations.get(entry.number) is entry:
                    del node.registrations[entry.number]
            raise
        finally:
            with node.lock:
                node.creating.discard(session_id)
        if replaced is not None:
            replaced.controller.close()  # taken over by the resume (or already closed)
        controller.add_close_callback(lambda: node.forget(session_id, entry))

    def _open_logged(
        self, node: Node, entry: Registration, last_event_id: str | None, resume_from: str | None
    ) -> None:
        """Claim the stream key and prime the stream: priming id, or the replay of a resume.

        The registration is addressable before the script runs, so every
        message routed to it once the key names it is queued (after the
        primed frames); messages routed to earlier registrations never are.
        """
        with node.lock:
            node.registrations[entry.number] = entry
        catch_ups = node.catch_ups
        try:
            if last_event_id is None:
                self._claim_and_prime(node, entry)
            else:
                assert resume_from is not None  # create() checks last_event_id into it
                self._resume_and_prime(node, entry, last_event_id, resume_from)
        finally:
            if entry.floor is not None and node.catch_ups != catch_ups:
                node.request_catch_up(entry)  # the listener reconnected meanwhile: see request_catch_up

    def _claim_and_prime(self, node: Node, entry: Registration) -> None:
        """A new stream: claim its key, open the session's GET log, prime the stream with the latest id."""
        sid, controller = entry.session_id, entry.controller
        with self._errors:
            primer = self._claim_logged(
                keys=[self._keys.stream(sid)],
                args=[
                    *self._store_args, entry.token, node.node, self._ttl_ms, sid, get_stream_id(sid),
                    self._channel_head,
                ],
            )
        if primer is None:
            raise StreamConflictError(sid)
        entry.floor = position(text(primer))
        controller.prime([encode_event("", id=text(primer), retry=controller.retry)])

    def _resume_and_prime(self, node: Node, entry: Registration, last_event_id: str, resume_from: str) -> None:
        """A resume: replay the GET log after *resume_from* and take the stream key over, in one script.

        The script's replay is the stream's replay (the store's ``replay()``
        would be a second, separate step): it primes the stream with the
        client's id, then the events it missed.
        """
        sid, controller = entry.session_id, entry.controller
        stream_id = get_stream_id(sid)
        with self._errors:
            reply = self._resume(
                keys=[self._keys.stream(sid)],
                args=[
                    *self._store_args, entry.token, node.node, self._ttl_ms, sid, stream_id, resume_from,
                    self._channel_head,
                ],
            )
        events = replay_reply(last_event_id, stream_id, reply).events
        entry.floor = position(events[-1][0] if events else last_event_id)
        controller.prime(resume_frames(last_event_id, events, controller.retry))

    def delete(self, session_id: str) -> None:
        _validate.session_id(session_id)
        node = self._node()
        with node.lock:
            entry = node.streams.pop(session_id, None)
            if entry is not None:
                entry.forgotten = True  # its key is deleted right below
        if entry is not None:
            entry.controller.close()
        try:
            with self._errors:
                self._delete(
                    keys=[self._keys.stream(session_id)],
                    args=[node.node, self._channel_head, session_id, self._ttl_ms],
                )
            if self._store is not None:
                self._store.delete(session_id)
        except BackendUnavailableError:
            if entry is None:
                raise
            # The stream is closed; its key goes when Redis is back (or expires).
            logger.warning("Redis unavailable: the key of deleted stream %r is removed later", session_id)
            node.delete_key_later(session_id, entry.token)

    def has(self, session_id: str) -> bool:
        _validate.session_id(session_id)
        node = self._node()
        entry = node.streams.get(session_id)
        if entry is not None and not entry.controller.closed:
            return True
        with self._errors:
            value = self._client.get(self._keys.stream(session_id))
        if value is None:
            return False
        token = text(value)
        # A tombstone, or a stream of this process that is not open any more.
        return not token.startswith("-") and token.partition(":")[0] != node.node

    def send(self, sessions: Iterable[str] | None, data: str, idempotency_key: str | None = None) -> None:
        """See :meth:`StreamSessionManager.send`: a batch of one (one script call per 1,000 targets).

        Raises :class:`~session_manager.BackendUnavailableError` if Redis
        cannot be used; the message may or may not have been sent then (it
        is never sent twice: sends are not retried). Retry it with the same
        *idempotency_key* to have it sent exactly once: the script that
        routes and stores it first marks the key (``SET NX``), and skips a
        message whose key is marked. Without an event store, raises
        :class:`~session_manager.EventStoreRequiredError` (nothing sent)
        where a store keeps logs on this prefix.
        """
        key = None if idempotency_key is None else checked_key(idempotency_key)
        sessions = None if sessions is None else _validate.session_ids(sessions)
        self._send_batch([(sessions, _validate.message(data), key)])

    def send_many(self, messages: Iterable[Message]) -> None:
        """See :meth:`StreamSessionManager.send_many`: the whole batch in one round trip.

        One ``STREAM_SEND_MANY`` call per 1,000 targets or messages (each
        atomic: with an event store, storing and routing each message stay
        one step), the calls pipelined and run in order, never retried.
        Redis refusing a call (a ``ResponseError``: a full Redis, a bug) is
        raised as is. Each message may carry its own idempotency key, as
        with :meth:`send`.
        """
        self._send_batch(checked_batch(messages))

    def _send_batch(self, batch: Sequence[CheckedMessage]) -> None:
        plan = _SendCalls(self._send_head, self._keys, self._store is not None)
        limit = self._max_message_bytes
        for sessions, data, key in batch:  # planned, not sent yet: a message too large stops everything
            if len(data) * 10 + FRAME_ROOM > limit:  # a frame takes 10 bytes a character at most: measure the rest
                size = len(encode_message(data)) + FRAME_ROOM  # the frame a stream is offered, with its id
                if size > limit:
                    raise MessageTooLargeError(size, limit)
            plan.add(sessions, data, key)
        calls = plan.finish()
        if not calls:
            return  # no target can have a stream
        try:
            replies = run_once(self._client, self._send, calls)
        except CallsFailed as failed:
            error = failed.error(self._errors)  # Redis refused a call (a bug, a full Redis): its own error
            if isinstance(error, BackendUnavailableError) and len(batch) > 1:
                sent, unknown = plan.outcome(failed.done, failed.unsure)
                error = batch_error(str(error), len(batch), sent, unknown)
            raise error from failed.cause
        if _REFUSED in replies:  # every call refuses alike, unless a store's logs came or went in between
            raise EventStoreRequiredError(self._prefix, len(batch), plan.whole([r != _REFUSED for r in replies]))

    def expect_reply(self, session_id: str, request_id: str, timeout: float) -> PendingReply:
        """See :meth:`StreamSessionManager.expect_reply`: a reply POSTed to any process finds this one.

        The reply key ``reply:<request id>:<sid>`` names this node for
        *timeout* seconds (then Redis drops it: nothing outlives the wait);
        this node's listener takes the reply off its channel.
        """
        _validate.session_id(session_id)
        ttl_ms = milliseconds(timeout, "timeout")
        node = self._slot.started()
        if not node.ready.wait(0 if node.failures else self._timeout):
            raise self._errors.unavailable(
                "the listener of this process is not connected, so no reply could reach it; "
                "see the session_manager.redis log"
            )
        pending = node.replies.add(session_id, request_id)
        try:
            with self._errors:
                self._client.set(self._keys.reply(request_id, session_id), node.node, px=ttl_ms)
        except BaseException:
            pending.cancel()
            raise
        return pending

    def deliver_reply(self, session_id: str, request_id: str, reply: str) -> bool:
        """See :meth:`StreamSessionManager.deliver_reply`: one script takes the reply key, so a reply is handed over once."""
        _validate.session_id(session_id)
        _validate.message(reply)
        node = self._node()
        outcome = self._run_once(
            self._deliver,
            [self._keys.reply(request_id, session_id)],
            [self._channel_head, request_id, session_id, reply, node.node],
        )
        if outcome == 2:  # it waits in this process
            return node.replies.resolve(session_id, request_id, reply)
        return bool(outcome)

    def close(self) -> None:
        first, node = self._slot.close()
        if not first:
            return
        try:
            if node is not None:
                node.shutdown()
        finally:
            try:
                self._disconnect()
            finally:
                if self._store is not None:
                    self._store.close()

    def __len__(self) -> int:
        """Number of streams this process holds."""
        node = self._slot.local()
        return 0 if node is None else len(node.streams)

    def __repr__(self) -> str:
        return f"<RedisStreamSessionManager prefix={self._prefix!r} local_streams={len(self)}>"
