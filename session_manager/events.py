"""Event stores: what makes a stream resumable.

With an event store every event on a session's streams carries an SSE
``id``; a client that lost its connection comes back with that id in
``Last-Event-ID`` and gets, in order, exactly the events of that stream it
missed. Without one, delivery is at most once.

Event ids are ``<stream>.<position>``:

- ``<stream>`` names the stream within its session: ``g`` for the session's
  GET stream (a session has one), ``p`` + 8 random hex digits for the
  stream of one POST.
- ``<position>`` orders the events of one stream; its form belongs to the
  store (an integer in memory, a Redis stream entry id in Redis).

An id is only ever looked up among the events of the session that presents
it: a replay is never another session's data. An id that is not an event
of the session's stream (one of another session, a made-up one) is
refused as unknown; the in-memory store gives a broadcast the same id in
every session it reached, which each of them may resume from.

Each stream's log is a bounded buffer: the oldest events go first, and a
client whose ``Last-Event-ID`` is older than what the buffer still holds
gets :class:`~session_manager.EventGoneError` (``reason="expired"``)
rather than a replay with a hole in it.
"""

from __future__ import annotations

import abc
import collections
import itertools
import re
import secrets
import threading
from collections.abc import Iterable
from typing import NamedTuple

from . import _validate
from .errors import EventGoneError, InvalidEventIdError
from .sse import encode_event, encode_message
from .stream import counted_above

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_MAX_LOG_BYTES",
    "DEFAULT_MAX_STREAMS",
    "EventStore",
    "InMemoryEventStore",
    "Replay",
    "event_frame",
    "get_stream_id",
    "is_get_stream",
    "new_post_stream_id",
    "parse_event_id",
    "replay_frames",
    "resume_frames",
]

#: Events kept per stream by default.
DEFAULT_MAX_EVENTS = 1000
#: Bytes of messages kept per log by default (about: see InMemoryEventStore).
DEFAULT_MAX_LOG_BYTES = 4 * 1024 * 1024
#: POST stream logs kept per session by default (the GET stream's log is always kept).
DEFAULT_MAX_STREAMS = 16

#: The id of every session's GET stream.
GET_STREAM = "g"
_STREAM_ID = r"g|p[0-9a-f]{8}"
_EVENT_ID = re.compile(rf"({_STREAM_ID})\.([0-9]{{1,20}}(?:-[0-9]{{1,20}})?)")
_MAX_EVENT_ID_LENGTH = 64


class Replay(NamedTuple):
    """What a resume sends: the stream the id belongs to and the events after it."""

    stream_id: str
    #: ``(event id, message)`` pairs, oldest first.
    events: list[tuple[str, str]]


def get_stream_id(session_id: str) -> str:
    """The id of the session's GET stream (every session has one: ``"g"``)."""
    return GET_STREAM


def new_post_stream_id() -> str:
    """A fresh id for the stream of one POST."""
    return "p" + secrets.token_hex(4)


def is_get_stream(stream_id: str) -> bool:
    """Whether *stream_id* names a session's GET stream (rather than a POST's)."""
    return stream_id == GET_STREAM


def parse_event_id(event_id: object) -> tuple[str, str]:
    """Split an event id into ``(stream id, position)``.

    Raises :class:`~session_manager.InvalidEventIdError` if it is not an id
    of the form this package issues (``<stream>.<position>``).
    """
    if type(event_id) is not str or len(event_id) > _MAX_EVENT_ID_LENGTH:
        raise InvalidEventIdError(event_id)
    match = _EVENT_ID.fullmatch(event_id)
    if match is None:
        raise InvalidEventIdError(event_id)
    return match.group(1), match.group(2)


class EventStore(abc.ABC):
    """Where the events of resumable streams are kept, per session and stream.

    A stream's log starts with :meth:`open`; :meth:`append` stores one
    message and returns its event id; :meth:`replay` returns the events of
    the stream an id belongs to that came after it. Logs are bounded, and
    go with :meth:`delete` (the session ended or expired). Every method is
    safe to call from any thread or greenlet. Callers that need an order
    across threads (appending and delivering as one step) serialize the
    appends of one stream themselves.

    Stream managers store what they send through :meth:`append_many` and
    :meth:`append_broadcast`. Both are built here from :meth:`append`; a
    store overrides them only to be faster (as ``cachelib`` builds bulk
    operations from single ones), e.g. one stored entry and one event id
    for many sessions.
    """

    @abc.abstractmethod
    def open(self, session_id: str, stream_id: str) -> str:
        """Start the log of a stream (or find it); return the id of its latest event.

        That id is what a stream opened now primes its client with: a
        resume from it replays what is stored afterwards.
        """

    @abc.abstractmethod
    def append(self, session_id: str, stream_id: str, message: str) -> str | None:
        """Store *message* on the stream's log; return its event id.

        Returns ``None`` (storing nothing) if the log was never opened or
        was deleted.
        """

    @abc.abstractmethod
    def replay(self, session_id: str, last_event_id: str) -> Replay:
        """Return the events stored after *last_event_id* on its stream, oldest first.

        Raises :class:`~session_manager.InvalidEventIdError` for an id this
        package never issues, and :class:`~session_manager.EventGoneError`
        if the session has no such stream (``reason="unknown"``: never
        opened, deleted, or an id of another session) or events after it
        have left the buffer (``reason="expired"``).
        """

    @abc.abstractmethod
    def delete(self, session_id: str) -> None:
        """Forget every log of the session; idempotent."""

    def append_many(self, session_ids: Iterable[str], message: str) -> list[tuple[str, list[str]]]:
        """Store *message* on the GET stream log of each session; return ``(event id, session ids)`` groups.

        Every session in a group got the message under that group's event
        id, so a caller frames the event once per group. Sessions without a
        GET stream log are in no group. This default stores per session (a
        group each); a store that stores the message once for many sessions
        returns them all in one group.
        """
        groups = []
        for session_id in session_ids:
            event_id = self.append(session_id, GET_STREAM, message)
            if event_id is not None:
                groups.append((event_id, [session_id]))
        return groups

    def append_broadcast(self, message: str) -> str | None:
        """Store a message sent to every session once, if this store can; return its event id.

        A store that keeps broadcasts in one log that every GET stream
        replays from returns the id the message has on every stream. This
        default stores nothing and returns ``None``: the caller then stores
        the message per session with :meth:`append_many`.
        """
        return None

    def close(self) -> None:
        """Release connections; the in-memory store has none."""


class _Log:
    """One stream's events, oldest first: short messages in a deque bounded by count, long ones by bytes.

    Short messages are appended without a lock (the deque's ``maxlen`` drops
    the oldest); long ones, counted byte by byte, are appended under the
    store's lock. Positions come from one counter, so the two merge back in
    order.
    """

    __slots__ = ("events", "large", "large_bytes", "opened", "trimmed")

    def __init__(self, max_events: int, opened: int) -> None:
        # One more than max_events: while the oldest kept event is one the client
        # got, everything after it is still here.
        self.events: collections.deque[tuple[int, str]] = collections.deque(maxlen=max_events + 1)
        # A deque once a long message came: most logs never see one (an empty deque is 760 bytes).
        self.large: collections.deque[tuple[int, str]] | tuple[()] = ()
        self.large_bytes = 0
        self.opened = opened  # the position a stream opened now is primed with
        self.trimmed = 0  # the newest long message dropped to keep the byte bound (0: none)

    def latest(self) -> int:
        newest = [log[-1][0] for log in (self.events, self.large) if log]
        return max(newest) if newest else self.opened

    def add_large(self, entry: tuple[int, str], budget: int) -> None:
        """Keep a long message; drop the oldest long ones beyond *budget* characters. Caller holds the lock."""
        large = self.large
        if not isinstance(large, collections.deque):
            large = self.large = collections.deque()
        large.append(entry)
        self.large_bytes += len(entry[1])
        while self.large_bytes > budget and len(large) > 1:
            position, message = large.popleft()
            self.trimmed = position
            self.large_bytes -= len(message)

    def snapshot(self, position: int) -> tuple[bool, list[tuple[int, str]]]:
        """``(complete, events after position)``; not complete if some of them were dropped."""
        events = list(self.events)  # one C call: a consistent snapshot even while others append
        floor = events[0][0] if len(events) == self.events.maxlen else self.opened
        start = len(events)
        while start and events[start - 1][0] > position:
            start -= 1
        after = events[start:]
        if self.large or self.trimmed:
            after = sorted(after + [event for event in list(self.large) if event[0] > position])
        return position >= max(floor, self.trimmed), after

    def holds(self, position: int) -> bool:
        """Whether *position* is an event of this log a client may resume after."""
        if position in (self.opened, self.trimmed):
            return True
        return any(pos == position for log in (self.events, self.large) for pos, _ in reversed(log))


class InMemoryEventStore(EventStore):
    """Logs of this process: bounded deques, positions from one counter.

    Each stream has a log of up to *max_events* messages, and a session
    keeps at most *max_streams* POST stream logs (opening one more forgets
    the oldest; the GET stream's log is kept until :meth:`delete`).
    Messages broadcast to every session by the in-memory stream manager are
    stored once, in a shared log of the same bound that every GET stream
    replays from (only what came after the stream's log was opened): a
    broadcast costs the store one append, whatever the number of sessions,
    and its event has the same id on every stream. A resume succeeds
    whenever the client missed at most *max_events* targeted messages and
    *max_events* broadcasts.

    Each log also keeps at most about *max_bytes* of message text (JSON
    text is ASCII: characters are bytes): messages over ``max_bytes / (4 *
    max_events)`` are counted one by one against *max_bytes* (the oldest go
    first; the newest is kept even if larger), shorter ones by the event
    count (a quarter of *max_bytes* at most). A client whose
    ``Last-Event-ID`` is older than what was dropped gets
    :class:`~session_manager.EventGoneError` (``"expired"``), as for the
    event count. A session's logs hold at most about ``(max_streams + 1) *
    max_bytes`` together.
    """

    def __init__(
        self,
        max_events: int = DEFAULT_MAX_EVENTS,
        *,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_bytes: int = DEFAULT_MAX_LOG_BYTES,
    ) -> None:
        for name, value in (("max_events", max_events), ("max_streams", max_streams), ("max_bytes", max_bytes)):
            _validate.positive_int(value, name)
        self.max_events = max_events
        self.max_streams = max_streams
        self.max_bytes = max_bytes
        self._small = counted_above(max_bytes, max_events)  # messages this long or shorter: the count bounds them
        self._lock = threading.Lock()
        self._positions = itertools.count(1)
        # session id -> stream id -> log, in the order the logs were opened
        self._sessions: dict[str, dict[str, _Log]] = {}
        #: Messages sent to every session (append_broadcast), replayed by every GET stream.
        self._broadcasts = _Log(max_events, 0)

    def _next_position(self) -> int:
        return next(self._positions)  # atomic: itertools.count is implemented in C

    def open(self, session_id: str, stream_id: str) -> str:
        _validate.session_id(session_id)
        _check_stream_id(stream_id)
        with self._lock:
            logs = self._sessions.setdefault(session_id, {})
            log = logs.get(stream_id)
            if log is None:
                log = logs[stream_id] = _Log(self.max_events, self._next_position())
                self._evict_posts(logs)
        latest = log.latest()
        if is_get_stream(stream_id):
            latest = max(latest, self._broadcasts.latest())
        return f"{stream_id}.{latest}"

    def _evict_posts(self, logs: dict[str, _Log]) -> None:
        """Forget the oldest POST stream logs beyond *max_streams*; caller holds the lock."""
        posts = [sid for sid in logs if not is_get_stream(sid)]
        for stream_id in posts[: max(0, len(posts) - self.max_streams)]:
            del logs[stream_id]

    def append(self, session_id: str, stream_id: str, message: str) -> str | None:
        _validate.message(message)
        with self._lock:
            logs = self._sessions.get(session_id)
            log = None if logs is None else logs.get(stream_id)
            if log is None:
                return None
            position = self._next_position()
            if len(message) > self._small:
                log.add_large((position, message), self.max_bytes)
            else:
                log.events.append((position, message))
        return f"{stream_id}.{position}"

    def append_many(self, session_ids: Iterable[str], message: str) -> list[tuple[str, list[str]]]:
        # One position and one stored tuple for every session: one group, one id on each stream.
        if type(message) is not str:
            _validate.message(message)
        if len(message) > self._small:
            return self._append_large_many(session_ids, message)
        position = next(self._positions)
        entry = (position, message)
        sessions = self._sessions  # dict reads and deque appends are atomic: no lock per session
        stored = []
        for session_id in session_ids:
            logs = sessions.get(session_id)
            if logs is not None:
                log = logs.get(GET_STREAM)
                if log is not None:
                    log.events.append(entry)
                    stored.append(session_id)
        return [(f"{GET_STREAM}.{position}", stored)] if stored else []

    def _append_large_many(self, session_ids: Iterable[str], message: str) -> list[tuple[str, list[str]]]:
        """:meth:`append_many` of a message counted byte by byte: under the lock, still one entry and one id."""
        with self._lock:
            sessions = self._sessions
            found = {sid: log for sid in session_ids if (log := sessions.get(sid, {}).get(GET_STREAM)) is not None}
            if not found:
                return []
            position = self._next_position()
            for log in found.values():
                log.add_large((position, message), self.max_bytes)
        return [(f"{GET_STREAM}.{position}", list(found))]

    def append_broadcast(self, message: str) -> str | None:
        # Stored once, in the log every GET stream replays from (what came after it opened).
        _validate.message(message)
        position = self._next_position()
        if len(message) > self._small:
            with self._lock:
                self._broadcasts.add_large((position, message), self.max_bytes)
        else:
            self._broadcasts.events.append((position, message))
        return f"{GET_STREAM}.{position}"

    def replay(self, session_id: str, last_event_id: str) -> Replay:
        stream_id, position = parse_event_id(last_event_id)
        if not position.isdigit():
            raise EventGoneError(last_event_id, "unknown")  # a position of another store
        after = int(position)
        with self._lock:
            logs = self._sessions.get(session_id)
            log = None if logs is None else logs.get(stream_id)
        if log is None or after < log.opened:
            raise EventGoneError(last_event_id, "unknown")
        complete, missed = log.snapshot(after)
        known = log.holds(after)
        if is_get_stream(stream_id):
            shared_complete, shared = self._broadcasts.snapshot(after)
            complete = complete and shared_complete
            known = known or self._broadcasts.holds(after)
            missed = sorted(missed + shared) if shared else missed
        if not complete:
            raise EventGoneError(last_event_id, "expired")
        if not known:
            raise EventGoneError(last_event_id, "unknown")
        return Replay(stream_id, [(f"{stream_id}.{pos}", message) for pos, message in missed])

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        """Number of sessions with at least one log."""
        return len(self._sessions)

    def __repr__(self) -> str:
        return (
            f"<InMemoryEventStore sessions={len(self._sessions)} max_events={self.max_events} "
            f"max_bytes={self.max_bytes}>"
        )


def replay_frames(
    store: EventStore, session_id: str, stream_id: str, last_event_id: str, retry: int | None
) -> list[bytes]:
    """The frames that resume *stream_id* after *last_event_id*: a priming event, then the replay.

    Raises :class:`~session_manager.EventGoneError` if the id belongs to
    another stream (or session), and what :meth:`EventStore.replay` raises.
    """
    replay = store.replay(session_id, last_event_id)
    if replay.stream_id != stream_id:
        raise EventGoneError(last_event_id, "unknown")
    return resume_frames(last_event_id, replay.events, retry)


def resume_frames(last_event_id: str, events: Iterable[tuple[str, str]], retry: int | None) -> list[bytes]:
    """A resumed stream's first frames: a priming event with the client's id, then the missed events."""
    return [encode_event("", id=last_event_id, retry=retry), *(event_frame(e, message) for e, message in events)]


def event_frame(event_id: str, message: str) -> bytes:
    """The SSE frame of one stored event (replayed, or caught up)."""
    return encode_message(message, id=event_id)


def _check_stream_id(stream_id: object) -> str:
    if type(stream_id) is not str or not re.fullmatch(_STREAM_ID, stream_id):
        raise ValueError(
            f"stream id must come from get_stream_id() or new_post_stream_id(), got {stream_id!r:.80}"
        )
    return stream_id
