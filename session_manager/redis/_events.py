"""RedisEventStore: the logs of resumable streams in Redis Streams, shared by every process.

Keys (under ``prefix``; the layout is defined in :mod:`._keys`):

- ``events:<sid>``: the session's index of its logs (hash: stream id -> opening entry id), for
  :meth:`~RedisEventStore.delete` and for forgetting the oldest POST-stream
  logs beyond ``max_streams`` (the GET-stream log is never forgotten).
- ``event-log:<stream>:<sid>``: one Redis stream per log. It starts with an
  opening marker entry (the priming id of a stream opened on an empty log,
  skipped by replays), then one entry per message. Positions are Redis
  entry ids (``<ms>-<seq>``), so event ids look like ``g1a2b3c4d.1700000000000-0``.
- ``event-log:broadcast``: the broadcasts of a
  :class:`~session_manager.redis.RedisStreamSessionManager` (``send(None, data)``),
  stored once whatever the number of sessions (one ``XADD``): an opening marker,
  then one entry per broadcast. A GET stream's replay merges it with the
  session's own log, in entry-id order, from the later of ``Last-Event-ID``
  and the log's opening (older broadcasts were never the session's); a GET
  log's priming id is the latest entry of either log.
- ``event-sizes:<stream>:<sid>``, ``event-sizes:broadcast``: the byte count
  of a log that holds long messages (see below), refreshed and deleted with it.
- ``events-clock``: the latest entry id issued.

Logs are trimmed with ``XADD ... MAXLEN ~ max_events``: Redis drops whole
nodes of old entries, so a log holds at least ``max_events`` events (up to
one node, 100 entries by default, more). They are bounded in bytes too, as
in memory: a message of more than ``max_bytes // (4 * max_events)`` bytes is
*long*, and a log's long messages are counted byte by byte (in its size
key, in the script that stores them); past ``max_bytes`` the oldest go,
with every entry before them (``XTRIM MINID``), never the newest. Short
messages are bounded by the count, so a log holds at most ``max_bytes``
of long messages plus about ``max_events`` short ones (a quarter of
``max_bytes``), or one long message larger than ``max_bytes`` alone. A
resume is possible while no log it reads (with a GET stream, the broadcast
log too) has dropped an entry after its ``Last-Event-ID``: a GET-stream
client may miss ``max_events`` targeted messages and ``max_events``
broadcasts (fewer if they are long). A resume from the newest entry dropped
for the byte bound replays what followed it. Entry ids come from one
clock per store, so an id is never an entry of another session's log (a
message sent to many sessions at once has one id in all of them). An id is
``expired`` if events after it may have been trimmed, else ``unknown``
unless it is the log's opening, an entry of the log, or (GET stream) a
broadcast stored after the opening, and ``unknown`` too once a log it reads
is gone (the broadcast log lives as long as any GET log, so a GET log
without it means Redis lost data: broadcasts reached nobody meanwhile);
either way it gives access to nothing.
Every key of a session expires ``session_ttl`` seconds after the last
activity of its logs (open, append, replay, or the heartbeat of an open
stream of a stream manager using this store); the broadcast log is
refreshed with every GET log (never by a broadcast), so it goes with the
last of them.

Costs (each call one script): a broadcast is one ``XADD`` (trimming drops
whole nodes); a short message on a log without long ones costs no command
more than without the byte bound, a long one a few commands on its log's
size key (and an ``XTRIM`` when it drops entries); a replay is O(events
replayed), over at most two logs.
"""

from __future__ import annotations

import logging
from typing import Any

import redis as redis_py

from .. import _validate
from ..errors import EventGoneError
from ..events import (
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_LOG_BYTES,
    DEFAULT_MAX_STREAMS,
    EventStore,
    Replay,
    _check_stream_id,
    get_stream_id,
    parse_event_id,
)
from ..stream import counted_above
from . import _scripts as lua
from ._common import RedisBacked, milliseconds, text

__all__ = ["RedisEventStore"]

logger = logging.getLogger(__name__)

_MAX_ID_PART = 2**64 - 1  # a Redis stream id is two unsigned 64-bit integers


def redis_position(last_event_id: object) -> tuple[str, str]:
    """Split an event id into ``(stream id, Redis entry id)``, normalized for XRANGE.

    Raises :class:`~session_manager.InvalidEventIdError` for a malformed id
    and :class:`~session_manager.EventGoneError` (``unknown``) for a position
    no Redis store issues (e.g. one of the in-memory store).
    """
    stream_id, position = parse_event_id(last_event_id)
    ms, _, seq = position.partition("-")
    if not seq or int(ms) > _MAX_ID_PART or int(seq) > _MAX_ID_PART:
        raise EventGoneError(str(last_event_id), "unknown")
    return stream_id, f"{int(ms)}-{int(seq)}"


def replay_events(reply: Any) -> list[tuple[str, str]] | str:
    """A replay script's reply (``ev_replay``): the ``(event id, message)`` pairs, or the word ``unknown`` or ``expired``."""
    if not isinstance(reply, list):
        return text(reply)
    return [(text(reply[i]), text(reply[i + 1])) for i in range(0, len(reply), 2)]


def replay_reply(last_event_id: str, stream_id: str, reply: Any) -> Replay:
    """Turn a replay script's reply into a :class:`Replay`, or raise its EventGoneError."""
    events = replay_events(reply)
    if isinstance(events, str):
        raise EventGoneError(last_event_id, events)
    return Replay(stream_id, events)


def position(event_id: str) -> tuple[int, int]:
    """The Redis entry id of an event id of this store (or an entry id itself), as a comparable pair."""
    ms, _, seq = event_id.rpartition(".")[2].partition("-")
    return int(ms), int(seq)


class RedisEventStore(RedisBacked, EventStore):
    """Event logs in Redis: every process resumes any stream. Each call is one script (one round trip).

    Same semantics as :class:`~session_manager.InMemoryEventStore`, with
    approximate trimming (see the module documentation) and expiry: a
    session's logs go ``session_ttl`` seconds after their last use. Give it
    to :class:`~session_manager.redis.RedisStreamSessionManager`
    (``event_store=``), which stores and routes each message in one script.

    That manager runs the log half of its scripts on this store's keys, so
    it uses, besides :meth:`delete` and :meth:`close`, exactly:
    :attr:`script_args` (the store's ARGV of every script on the logs),
    :attr:`session_ttl`, the client's location, and the module functions
    :func:`check_resume`, :func:`replay_reply` / :func:`replay_events` (the
    replies of its resume and catch-up scripts) and :func:`~session_manager.events.event_frame`.

    :param url_or_client: a ``redis://`` URL, or a :class:`redis.Redis` client (left open by :meth:`close`).
    :param prefix: namespace of every key.
    :param max_events: events kept per log (at least; trimming is approximate).
    :param max_streams: POST-stream logs kept per session (the GET-stream log is always kept).
    :param max_bytes: bytes of long messages (over ``max_bytes // (4 * max_events)``
        bytes each) kept per log, exactly: past it the oldest go, never the newest. With
        the short ones (bounded by ``max_events``), a log holds at most ``max_bytes`` plus
        about ``max_events`` short messages (a quarter of ``max_bytes``), or one message
        larger than ``max_bytes`` alone.
    :param session_ttl: seconds after the last use of a session's logs before they expire.
    :param socket_timeout: seconds before a Redis call gives up (clients built from a URL).
    :param max_connections: size of the command pool of a client built from a URL.
    """

    def __init__(
        self,
        url_or_client: str | redis_py.Redis,
        *,
        prefix: str = "mcp:",
        max_events: int = DEFAULT_MAX_EVENTS,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_bytes: int = DEFAULT_MAX_LOG_BYTES,
        session_ttl: float = 3600.0,
        socket_timeout: float = 5.0,
        max_connections: int = 8,
    ) -> None:
        for name, value in (("max_events", max_events), ("max_streams", max_streams), ("max_bytes", max_bytes)):
            _validate.positive_int(value, name)
        self.max_events = max_events
        self.max_streams = max_streams
        self.max_bytes = max_bytes
        self.session_ttl = _validate.positive_seconds(session_ttl, "session_ttl")
        self._connect(
            url_or_client,
            prefix=prefix,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            role="events",
        )
        short = counted_above(max_bytes, max_events)  # messages up to this long are bounded by the count (as in memory)
        #: ARGV[1..4] of every script using the logs (see _scripts): ARGV[2] holds the log bounds.
        self.script_args: tuple[str | int, ...] = (
            prefix,
            f"{max_events} {max_bytes} {short}",
            milliseconds(self.session_ttl, "session_ttl"),
            max_streams,
        )
        register = self._client.register_script
        self._open = register(lua.EVENTS_OPEN)
        self._append = register(lua.EVENTS_APPEND)
        self._replay = register(lua.EVENTS_REPLAY)
        self._delete = register(lua.EVENTS_DELETE)

    def _call(self, script: Any, *args: Any) -> Any:
        with self._errors:
            return script(args=[*self.script_args, *args])

    def open(self, session_id: str, stream_id: str) -> str:
        _validate.session_id(session_id)
        _check_stream_id(stream_id)
        return text(self._call(self._open, session_id, stream_id))

    def append(self, session_id: str, stream_id: str, message: str) -> str | None:
        _validate.message(message)
        # Not retried after a timeout (it may have been stored already): never stored twice.
        reply = self._run_once(self._append, [], [*self.script_args, session_id, stream_id, message])
        return None if reply is None else text(reply)

    def replay(self, session_id: str, last_event_id: str) -> Replay:
        stream_id, position = redis_position(last_event_id)
        return replay_reply(last_event_id, stream_id, self._call(self._replay, session_id, stream_id, position))

    def delete(self, session_id: str) -> None:
        self._call(self._delete, _validate.session_id(session_id))

    def close(self) -> None:
        """Disconnect the pool this store created (a client passed in stays open)."""
        self._disconnect()

    def __repr__(self) -> str:
        return f"<RedisEventStore prefix={self._prefix!r} max_events={self.max_events} max_bytes={self.max_bytes}>"


def check_resume(session_id: str, last_event_id: object) -> str:
    """The Redis position to resume the session's GET stream from; raises as replay does.

    An id of another stream (a POST's, another session's) is ``unknown``
    before anything is taken over.
    """
    stream_id, position = redis_position(last_event_id)
    if stream_id != get_stream_id(session_id):
        raise EventGoneError(str(last_event_id), "unknown")
    return position
