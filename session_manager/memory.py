"""In-process backends: plain dicts guarded by locks. The default."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

from . import _validate
from ._fields import FieldStoreInfoManager
from .base import DEFAULT_DEDUPE_TTL, SessionQuota, StreamSessionManager, idempotency_key
from .errors import SessionLimitError, SessionNotFoundError, StreamConflictError
from .events import EventStore, get_stream_id, replay_frames
from .sse import encode_event, encode_message
from .stream import FRAME_ROOM, StreamController

__all__ = ["InMemoryInfoSessionManager", "InMemoryStreamSessionManager"]

logger = logging.getLogger(__name__)

#: Seconds of inactivity after which a session expires by default (both backends).
DEFAULT_SESSION_TTL = 3600.0



#: Most expired sessions one call of the in-memory info manager removes on its way.
SWEEP_STEP = 64

#: Most idempotency keys an in-memory stream manager remembers by default (see ``dedupe_max_keys``).
DEFAULT_DEDUPE_MAX_KEYS = 100_000


class _RecentKeys:
    """The idempotency keys of recent sends: each for *ttl* seconds, at most *limit* of them (the oldest go first).

    Keys are kept in the order they were recorded, which is their order of
    expiry (one ttl for all), so forgetting the expired ones costs O(1) per
    call, amortized. Guarded by its own lock, never held across a send.
    """

    __slots__ = ("_keys", "_limit", "_lock", "_ttl")

    def __init__(self, ttl: float, limit: int) -> None:
        self._ttl = ttl
        self._limit = limit
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, float] = OrderedDict()  # key -> when it expires (monotonic)

    def record(self, key: str) -> float | None:
        """Record *key*; return its mark, or ``None`` if a send recorded it in the last *ttl* seconds."""
        now = time.monotonic()
        keys = self._keys
        with self._lock:
            until = keys.get(key)
            if until is not None and until > now:
                return None
            while keys and (len(keys) >= self._limit or next(iter(keys.values())) <= now):
                keys.popitem(last=False)  # expired, or the oldest beyond the bound
            keys.pop(key, None)
            mark = keys[key] = now + self._ttl
            return mark

    def forget(self, key: str, mark: float) -> None:
        """Forget *key* if it still holds *mark*: its send failed, so a retry must run."""
        with self._lock:
            if self._keys.get(key) == mark:
                del self._keys[key]


class InMemoryStreamSessionManager(StreamSessionManager):
    """Streams of this process, in a dict guarded by a lock.

    A message is framed once per :meth:`send` and the same bytes are queued
    on every target. Targeted sends look ids up without the lock (a dict
    read is atomic), so they cost O(number of targets); a broadcast copies
    the dict under the lock and enqueues outside it. Delivery is FIFO per
    stream and at most once.

    With an *event_store* (e.g. :class:`~session_manager.InMemoryEventStore`)
    streams are resumable: a session's messages are stored from its first
    stream on, each event carries its id, and :meth:`create` with
    ``last_event_id`` replays what the client missed. A message is stored
    and queued as one step, under one lock of the manager (held for a send
    or a resume's replay; give it a store local to the process, as no I/O
    should happen under it), so ids reach each stream in order and a resume
    sees every event exactly once. Broadcasts then reach every session with
    a log, open stream or not. Sends store through the store's bulk calls
    (:meth:`~session_manager.EventStore.append_many`,
    :meth:`~session_manager.EventStore.append_broadcast`): with an
    :class:`~session_manager.InMemoryEventStore` a message is stored once and
    framed once for all its streams. Closing the manager closes its store.

    Idempotent sends (``send(..., idempotency_key=...)``): the manager
    remembers each key for *dedupe_ttl* seconds, and at most
    *dedupe_max_keys* keys (past that bound the oldest is forgotten early,
    so a retry of it would run again). A key costs about 170 bytes plus its
    length: 100,000 UUIDs (the default bound) about 20 MB.
    """

    def __init__(
        self,
        *,
        event_store: EventStore | None = None,
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        dedupe_max_keys: int = DEFAULT_DEDUPE_MAX_KEYS,
    ) -> None:
        if event_store is not None and not isinstance(event_store, EventStore):
            raise TypeError(f"event_store must be an EventStore, not {type(event_store).__name__}")
        _validate.positive_int(dedupe_max_keys, "dedupe_max_keys")
        self._recent = _RecentKeys(_validate.positive_seconds(dedupe_ttl, "dedupe_ttl"), dedupe_max_keys)
        self._lock = threading.Lock()
        self._streams: dict[str, StreamController] = {}
        self._store = event_store
        #: With a store, the sessions whose GET stream log this manager opened (what a broadcast stores for).
        self._logged: set[str] = set()
        #: Orders storing and queuing: ids reach each stream in the order they were stored.
        self._send_lock = threading.Lock()
        #: Streams closed because their consumer fell behind.
        self.slow_consumers_dropped = 0
        self._keyed_lock = threading.Lock()  # see _send_once
        #: Messages up to this many characters fit every stream registered so far (see :meth:`_check_fits`).
        self._fits_all = sys.maxsize
        #: Frames up to this long are short on every stream registered so far: queued unmeasured.
        #: (A stream registered while a send is under way may take that one frame unmeasured.)
        self._short = sys.maxsize

    @property
    def event_store(self) -> EventStore | None:
        return self._store

    def create(self, session_id: str, controller: StreamController, *, last_event_id: str | None = None) -> None:
        self._check_create(session_id, controller, last_event_id)
        # A frame takes at most 10 bytes a character (4 of UTF-8, 6 for a "data: " per line), plus its id.
        fits = (controller.max_bytes - controller.frame_overhead - FRAME_ROOM) // 10
        with self._lock:
            self._fits_all = min(self._fits_all, fits)
            self._short = min(self._short, controller.short_frame)
        store = self._store
        if store is None:
            self._register(session_id, controller, replace=False)
        else:
            stream_id = get_stream_id(session_id)
            with self._send_lock:  # no message to this session meanwhile: nothing lost or sent twice
                if last_event_id is None:
                    self._check_free(session_id)
                    frames = [encode_event("", id=store.open(session_id, stream_id), retry=controller.retry)]
                else:
                    frames = replay_frames(store, session_id, stream_id, last_event_id, controller.retry)
                controller.prime(frames)
                replaced = self._register(session_id, controller, replace=last_event_id is not None)
                self._logged.add(session_id)
            if replaced is not None:
                replaced.close()
        controller.add_close_callback(lambda: self._forget(session_id, controller))

    def _check_free(self, session_id: str) -> None:
        current = self._streams.get(session_id)
        if current is not None and not current.closed:
            raise StreamConflictError(session_id)

    def _register(self, session_id: str, controller: StreamController, *, replace: bool) -> StreamController | None:
        """Make *controller* the session's stream; return the open stream it replaced."""
        with self._lock:
            if not replace:
                self._check_free(session_id)
            current = self._streams.get(session_id)
            self._streams[session_id] = controller
        return current if current is not None and current is not controller and not current.closed else None

    def delete(self, session_id: str) -> None:
        _validate.session_id(session_id)
        with self._lock:
            controller = self._streams.pop(session_id, None)
            self._logged.discard(session_id)
        if self._store is not None:
            self._store.delete(session_id)
        if controller is not None:
            controller.close()

    def has(self, session_id: str) -> bool:
        _validate.session_id(session_id)
        controller = self._streams.get(session_id)
        return controller is not None and not controller.closed

    def send(self, sessions: Iterable[str] | None, data: str, idempotency_key: str | None = None) -> None:
        if idempotency_key is not None:
            self._send_once(sessions, data, idempotency_key)
            return
        store = self._store
        if store is None:
            frame = encode_message(data)  # a TypeError says what was expected
            if len(frame) > self._short:  # measured once for every stream
                self._send_long(sessions, data, frame)
            elif sessions is None:
                self._broadcast(frame)
            else:
                # A list's ids (the common case) are checked as they are served: one that is
                # not a str raises TypeError, after the ids before it were served.
                lookup = self._streams.get
                for sid in sessions if type(sessions) is list else _validate.session_ids(sessions):
                    if type(sid) is not str:
                        _validate.session_ids([sid])  # raises, saying what was expected
                    target = lookup(sid)
                    if target is not None and not target._enqueue_short(frame):
                        self._forget(sid, target)
            return
        try:
            if len(data) > self._fits_all:  # O(1): only a long message is measured
                sessions = self._check_fits(sessions, data)
        except TypeError:
            _validate.message(data)  # says what was expected
            raise
        # Store and queue as one step, so ids reach each stream in the order they were stored.
        # The store's bulk calls are its fast path: one that stores one entry for many sessions
        # (the in-memory one) returns them in one group under one id, framed here once.
        with self._send_lock:
            if sessions is None:
                event_id = store.append_broadcast(data)
                if event_id is not None:  # stored once, replayed by every GET stream
                    self._broadcast(encode_message(data, event_id))
                    return
                with self._lock:
                    sessions = list(self._logged)
            streams = self._streams
            for event_id, stored in store.append_many(_validate.session_ids(sessions), data):
                framed = encode_message(data, event_id)
                short = len(framed) <= self._short
                for sid in stored:
                    target = streams.get(sid)
                    if target is not None and not (target._enqueue_short(framed) if short else target.enqueue_frame(framed)):
                        self._forget(sid, target)

    def _send_long(self, sessions: Iterable[str] | None, data: str, frame: bytes) -> None:
        """Send a frame too long to queue unmeasured: whole, or refused if some target could never hold it."""
        ids = self._check_fits(sessions, data)
        if ids is None:
            self._broadcast(frame)
            return
        lookup = self._streams.get
        for sid in ids:
            target = lookup(sid)
            if target is not None and not target.enqueue_frame(frame):
                self._forget(sid, target)

    def _check_fits(self, sessions: Iterable[str] | None, data: str) -> Sequence[str] | None:
        """Refuse, before anything is sent, a message some target stream could never hold; return *sessions*, read once.

        Raises :class:`~session_manager.MessageTooLargeError` naming the
        smallest bound it exceeds: a message is sent whole or not at all.
        """
        ids = None if sessions is None else _validate.session_ids(sessions)
        need = len(encode_message(data)) + FRAME_ROOM
        with self._lock:
            targets = list(self._streams.values()) if ids is None else [self._streams.get(sid) for sid in ids]
        for controller in targets:
            if controller is not None:
                controller.check_size(need)
        return ids

    def _send_once(self, sessions: Iterable[str] | None, data: str, key: str) -> None:
        """A send with an idempotency key: checked, then sent unless the key was used (forgotten if it fails).

        Keyed sends run one at a time: a retry racing the send it retries
        waits for its outcome (sent: it does nothing; failed: it runs),
        never returns as if sent while that send may still fail.
        """
        idempotency_key(key)
        ids = None if sessions is None else _validate.session_ids(sessions)
        _validate.message(data)
        with self._keyed_lock:
            mark = self._recent.record(key)
            if mark is None:
                return  # sent already
            try:
                self.send(ids, data)
            except BaseException:
                self._recent.forget(key, mark)
                raise

    def _broadcast(self, frame: bytes) -> None:
        """Queue *frame* on every registered stream, measured once for all of them."""
        with self._lock:
            targets = self._streams.copy()  # far cheaper than a list of item tuples
        short = len(frame) <= self._short
        for sid, target in targets.items():
            if not (target._enqueue_short(frame) if short else target.enqueue_frame(frame)):
                self._forget(sid, target)

    def close(self) -> None:
        with self._lock:
            controllers = list(self._streams.values())
            self._streams.clear()
            self._logged.clear()
        for controller in controllers:
            controller.close()
        if self._store is not None:
            self._store.close()

    def __len__(self) -> int:
        """Number of registered streams."""
        return len(self._streams)

    def _forget(self, session_id: str, controller: StreamController) -> None:
        """Unregister *controller*, but never a newer stream of the same session."""
        with self._lock:
            if self._streams.get(session_id) is controller:
                del self._streams[session_id]
                self.slow_consumers_dropped += controller.overflowed

    def __repr__(self) -> str:
        return f"<InMemoryStreamSessionManager streams={len(self._streams)}>"


#: The id line of a GET-stream event, formatted with its position.


#: Longest pause of the in-memory info manager's background sweep, in seconds (a quarter of a shorter session_ttl).
SWEEP_INTERVAL = 5.0
#: Most steps (of SWEEP_STEP sessions each) one background pass takes; what is left waits for the next pass.
_PASS_STEPS = 1024
#: Seconds ``close()`` waits for the background sweep to end its step.
_SWEEPER_JOIN_TIMEOUT = 5.0


class _Session:
    """Stored metadata of one session: text fields, subscribed URIs, last use, the principal it counts for."""

    __slots__ = ("fields", "principal", "subscriptions", "used")

    def __init__(self, fields: dict[str, str], used: float, principal: str | None) -> None:
        self.fields = fields
        self.subscriptions: set[str] = set()
        self.used = used
        self.principal = principal


def _sweep_in_background(
    manager: weakref.ref[InMemoryInfoSessionManager], stop: threading.Event, interval: float
) -> None:
    """The background sweep: a bounded pass every *interval* seconds, until *stop* is set or the manager is gone.

    Only a weak reference is held between passes, so a manager dropped
    without ``close()`` is collected and its sweep ends at the next pass.
    """
    while not stop.wait(interval):
        current = manager()
        if current is None:
            return
        try:
            current._sweep_pass(stop)
        except Exception:
            logger.exception("background session sweep failed; the next pass tries again")
        del current


class InMemoryInfoSessionManager(FieldStoreInfoManager):
    """Session metadata of this process, guarded by one lock.

    Values are copied in and out (stored as JSON text), so callers can never
    mutate stored state. Subscriptions are indexed both ways, so
    :meth:`delete` and :meth:`get_subscriptions` never scan all sessions.

    Expiry: a session with no call naming it (getters included), no open
    stream and no running request (:meth:`keep_alive_while`) for
    *session_ttl* seconds is deleted, with its stream and stored
    events (once :meth:`track_streams` was called, as
    :class:`~session_manager.SessionManagers` does). Sessions are kept in
    order of last use, so expiry works in bounded steps at the old end:
    each call that looks a session up first removes up to
    :data:`SWEEP_STEP` expired ones (O(1) when none is due: a backlog of
    60,000 due at once is spread over many calls, never paid by one), and
    a background sweep does the same steps every few seconds
    (:data:`SWEEP_INTERVAL`, or a quarter of a shorter *session_ttl*), so
    memory comes back with no request arriving. It is a daemon thread (a
    greenlet under gevent's monkey-patching) started with the manager (a
    child started by fork starts its own with its first session),
    never holding the lock across steps; :meth:`close` stops it. With a
    custom *clock* (a test's) there is no background sweep: only calls and
    :meth:`expire` move expiry on. ``None`` keeps sessions until deleted.

    Session caps (:class:`~session_manager.SessionQuota`): the server count
    is the number of sessions held, the count of a principal the sessions
    created with a quota naming it; both are checked and updated under the
    lock, so concurrent creates never exceed a cap.
    """

    def __init__(self, *, session_ttl: float | None = DEFAULT_SESSION_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = None if session_ttl is None else _validate.positive_seconds(session_ttl, "session_ttl")
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently used first
        self._subscribers: dict[str, set[str]] = {}
        self._streams: StreamSessionManager | None = None
        self._keep_alive: list[Callable[[str], bool]] = []
        #: principal -> its sessions, least recently used first (what counts against max_per_principal).
        self._principals: dict[str, OrderedDict[str, None]] = {}
        self._background = self._ttl is not None and clock is time.monotonic
        self._sweeper: threading.Thread | None = None
        self._sweeper_pid = 0  # the process that runs it: a forked child starts its own
        self._sweeper_lock = threading.Lock()
        self._stop = threading.Event()
        # Started here, not by the first session's request: a thread started inside a request costs gevent
        # workers about 1.5 KB of resident memory per later session (measured with benchmarks/http_fanout.py).
        self._start_sweeper()

    @property
    def session_ttl(self) -> float | None:
        """Seconds of inactivity after which a session expires (``None``: never)."""
        return self._ttl

    def track_streams(self, streams: StreamSessionManager) -> None:
        if not isinstance(streams, StreamSessionManager):
            raise TypeError(f"streams must be a StreamSessionManager, not {type(streams).__name__}")
        self._streams = streams

    def keep_alive_while(self, predicate: Callable[[str], bool]) -> None:
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, not {type(predicate).__name__}")
        self._keep_alive.append(predicate)

    def _in_use(self, session_id: str) -> bool:
        """An open stream or a running request keeps the session."""
        streams = self._streams
        if streams is not None and streams.has(session_id):
            return True
        return any(predicate(session_id) for predicate in self._keep_alive)

    # -- expiry ------------------------------------------------------------

    def _use(self, session_id: str) -> _Session | None:
        """The session, marked as used now; caller holds the lock."""
        session = self._sessions.get(session_id)
        if session is not None and self._ttl is not None:
            session.used = self._clock()
            self._sessions.move_to_end(session_id)
            if session.principal is not None:
                self._principals[session.principal].move_to_end(session_id)
        return session

    def expire(self, limit: int | None = None) -> list[str]:
        """Delete sessions idle for *session_ttl* with no open stream (at most *limit* of them); return their ids."""
        ttl = self._ttl
        if ttl is None:
            return []
        deadline = self._clock() - ttl
        with self._lock:
            due: list[str] = []
            for sid, session in self._sessions.items():  # oldest first: stop at the first one in use
                if session.used > deadline or len(due) == limit:
                    break
                due.append(sid)
        if not due:
            return []
        streams = self._streams
        alive = {sid for sid in due if self._in_use(sid)}  # outside the lock: may do I/O
        expired = []
        with self._lock:
            for sid in due:
                current = self._sessions.get(sid)
                if current is None or current.used > deadline:
                    continue  # deleted or used meanwhile
                if sid in alive:
                    self._use(sid)  # an open stream keeps it
                else:
                    self._remove(sid)
                    expired.append(sid)
        for sid in expired:
            logger.debug("session %r expired after %g s idle", sid, ttl)
            if streams is not None:
                streams.delete(sid)
        return expired

    def _due(self) -> bool:
        """Whether the least recently used session is past its expiry (O(1))."""
        if self._ttl is None or not self._sessions:
            return False
        try:
            oldest = next(iter(self._sessions.values()))
        except (StopIteration, RuntimeError):  # emptied or resized by another thread
            return False
        return oldest.used <= self._clock() - self._ttl

    def _sweep(self) -> None:
        """Expire what is due, a bounded step at a time: no call pays for a whole backlog at once."""
        if self._due():
            self.expire(SWEEP_STEP)

    def _sweep_pass(self, stop: threading.Event) -> None:
        """One pass of the background sweep: what is due, a step at a time, yielding between steps."""
        for _ in range(_PASS_STEPS):
            if stop.is_set() or not self._due():
                return
            self.expire(SWEEP_STEP)
            time.sleep(0)  # let requests (threads, greenlets) run between steps

    def _start_sweeper(self) -> None:
        """Start the background sweep unless this process runs it already (or the manager is closed)."""
        sweeper = self._sweeper
        if sweeper is not None and self._sweeper_pid == os.getpid():
            return  # one per process (a sweep ends only with close() or the manager): no Thread call per session
        if not self._background or self._stop.is_set():
            return
        assert self._ttl is not None
        with self._sweeper_lock:
            if self._sweeper is not sweeper or self._stop.is_set():
                return  # another caller started it, or close() came first
            thread = threading.Thread(
                target=_sweep_in_background,
                args=(weakref.ref(self), self._stop, min(SWEEP_INTERVAL, max(0.01, self._ttl / 4))),
                name="session_manager-info-sweep",
                daemon=True,
            )
            thread.start()
            self._sweeper = thread
            self._sweeper_pid = os.getpid()

    def close(self) -> None:
        """Stop the background sweep (bounded wait); sessions are kept, and expire on the way of later calls."""
        with self._sweeper_lock:
            self._stop.set()
            sweeper = self._sweeper
        if sweeper is not None and sweeper is not threading.current_thread():
            sweeper.join(_SWEEPER_JOIN_TIMEOUT)

    # -- caps --------------------------------------------------------------

    def _check_quota(self, quota: SessionQuota) -> None:
        """SessionLimitError if one more session would exceed *quota*; caller holds the lock."""
        if quota.max_sessions is not None and len(self._sessions) >= quota.max_sessions:
            raise SessionLimitError("server", quota.max_sessions, self._until_free(self._sessions))
        group = None if quota.principal is None else self._principals.get(quota.principal)
        if group is not None and quota.max_per_principal is not None and len(group) >= quota.max_per_principal:
            raise SessionLimitError("principal", quota.max_per_principal, self._until_free(group))

    def _until_free(self, ordered: Mapping[str, object]) -> float | None:
        """Seconds until the least recently used of *ordered* (session ids) would expire; caller holds the lock."""
        if self._ttl is None or not ordered:
            return None
        return self._sessions[next(iter(ordered))].used + self._ttl - self._clock()

    # -- storage primitives ------------------------------------------------

    def _insert(self, session_id: str, fields: dict[str, str], quota: SessionQuota | None) -> bool:
        self._sweep()
        self._start_sweeper()
        with self._lock:
            if session_id in self._sessions:
                return False
            principal = None
            if quota is not None:
                self._check_quota(quota)
                principal = quota.principal
            self._sessions[session_id] = _Session(fields, self._clock(), principal)
            if principal is not None:
                self._principals.setdefault(principal, OrderedDict())[session_id] = None
            return True

    def _read_all(self, session_id: str) -> Mapping[str, str] | None:
        self._sweep()
        with self._lock:
            session = self._use(session_id)
            return None if session is None else dict(session.fields)

    def _read(self, session_id: str, name: str) -> str | None:
        with self._lock:
            session = self._use(session_id)
            return None if session is None else session.fields.get(name)

    def _write(self, session_id: str, name: str, value: str) -> bool:
        with self._lock:
            session = self._use(session_id)
            if session is not None:
                session.fields[name] = value
            return session is not None

    def exists(self, session_id: str) -> bool:
        _validate.session_id(session_id)
        self._sweep()
        with self._lock:
            return self._use(session_id) is not None

    def get_subscriptions(self, uri: str) -> list[str]:
        _validate.text(uri, "uri")
        with self._lock:
            return list(self._subscribers.get(uri, ()))

    def add_subscription(self, session_id: str, uri: str) -> None:
        _validate.session_id(session_id)
        _validate.text(uri, "uri")
        with self._lock:
            session = self._use(session_id)
            if session is None:
                raise SessionNotFoundError(session_id)
            session.subscriptions.add(uri)
            self._subscribers.setdefault(uri, set()).add(session_id)

    def remove_subscription(self, session_id: str, uri: str) -> None:
        _validate.session_id(session_id)
        _validate.text(uri, "uri")
        with self._lock:
            session = self._use(session_id)
            if session is not None:
                session.subscriptions.discard(uri)
            self._unindex(session_id, uri)

    def delete(self, session_id: str) -> None:
        _validate.session_id(session_id)
        with self._lock:
            self._remove(session_id)

    def _remove(self, session_id: str) -> None:
        """Drop the session, its subscriptions and its place in its principal's count; caller holds the lock."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        for uri in session.subscriptions:
            self._unindex(session_id, uri)
        if session.principal is not None:
            group = self._principals[session.principal]
            del group[session_id]
            if not group:
                del self._principals[session.principal]

    def _unindex(self, session_id: str, uri: str) -> None:
        """Drop *session_id* from the subscribers of *uri*; caller holds the lock."""
        subscribers = self._subscribers.get(uri)
        if subscribers is not None:
            subscribers.discard(session_id)
            if not subscribers:
                del self._subscribers[uri]

    def __len__(self) -> int:
        """Number of live sessions."""
        return len(self._sessions)

    def __repr__(self) -> str:
        return f"<InMemoryInfoSessionManager sessions={len(self._sessions)}>"
