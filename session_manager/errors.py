"""Exceptions raised by session managers and transports."""

from __future__ import annotations

import math

__all__ = [
    "BackendUnavailableError",
    "EventGoneError",
    "EventStoreRequiredError",
    "InvalidEventIdError",
    "MessageTooLargeError",
    "SessionLimitError",
    "SessionManagerError",
    "SessionNotFoundError",
    "StreamConflictError",
]


class SessionManagerError(Exception):
    """Base class of every error this package raises on purpose."""


class StreamConflictError(SessionManagerError):
    """A stream is already open for this session.

    Raised by :meth:`StreamSessionManager.create`; the open stream is left
    untouched. The Streamable HTTP transport answers it with 409 Conflict.
    """

    def __init__(self, session_id: str) -> None:
        super().__init__(f"a stream is already open for session {session_id!r}")
        self.session_id = session_id


class SessionNotFoundError(SessionManagerError, LookupError):
    """The session does not exist (never created, expired or deleted)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id!r} does not exist: create it with "
            "info.create(session_id) first (or it was deleted or expired)"
        )
        self.session_id = session_id


class BackendUnavailableError(SessionManagerError):
    """The shared backend (e.g. Redis) cannot be reached right now."""


class InvalidEventIdError(SessionManagerError, ValueError):
    """A ``Last-Event-ID`` that is not an event id this package issues.

    The Streamable HTTP transport answers it with 400 Bad Request.
    """

    def __init__(self, event_id: object) -> None:
        super().__init__(
            f"{event_id!r:.80} is not an event id of this server: expected <stream>.<position> "
            "as sent in an SSE id field"
        )
        self.event_id = event_id


class EventGoneError(SessionManagerError, LookupError):
    """The events after a ``Last-Event-ID`` cannot be replayed.

    ``reason`` is ``"unknown"`` (the session has no such stream: never
    opened, deleted, or an id of another session) or ``"expired"`` (events
    after it have left the bounded buffer). The Streamable HTTP transport
    answers it with 410 Gone: the client should open a new stream without
    ``Last-Event-ID``, knowing that messages in between are lost.
    """

    def __init__(self, event_id: str, reason: str) -> None:
        what = {
            "unknown": "this session has no stream with that event id",
            "expired": "events after it are no longer stored",
        }[reason]
        super().__init__(f"cannot resume after event {event_id!r:.80}: {what}")
        self.event_id = event_id
        self.reason = reason


class MessageTooLargeError(SessionManagerError, ValueError):
    """One message is larger than a stream may ever hold (its ``max_bytes``).

    Raised to the sender; the stream is left as it was. Send it in parts,
    or raise the bound (``max_bytes``, the transport's ``stream_max_bytes``).
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"a message of {size} bytes (as an SSE frame) exceeds the {limit} bytes a stream may hold; "
            "send less at once or raise max_bytes (stream_max_bytes on the transport)"
        )
        self.size = size
        self.limit = limit


#: Longest ``Retry-After`` a full session cap suggests (seconds): a slot may free at any time (a DELETE).
MAX_RETRY_AFTER = 60


class SessionLimitError(SessionManagerError):
    """A new session would exceed a session cap (:class:`~session_manager.SessionQuota`); nothing was created.

    ``scope`` is ``"server"`` (every session the manager holds) or
    ``"principal"`` (the sessions of the principal that asked), ``limit`` that
    cap, and ``retry_after`` whole seconds worth waiting: until the oldest
    counted session would expire if unused, within 1 and
    :data:`MAX_RETRY_AFTER` (a DELETE can free a slot sooner). The Streamable
    HTTP transport answers it with 503 (server) or 429 (principal) and a
    ``Retry-After`` header.
    """

    def __init__(self, scope: str, limit: int, seconds_until_free: float | None = None) -> None:
        if scope not in ("server", "principal"):
            raise ValueError(f"scope must be 'server' or 'principal', got {scope!r}")
        whose = "this server holds" if scope == "server" else "this principal holds"
        super().__init__(f"session limit reached: {whose} {limit} sessions, its cap")
        self.scope = scope
        self.limit = limit
        wait = MAX_RETRY_AFTER if seconds_until_free is None else seconds_until_free
        self.retry_after = min(MAX_RETRY_AFTER, max(1, math.ceil(wait)))


class EventStoreRequiredError(SessionManagerError):
    """A send by a stream manager without an event store, where the deployment stores events: refused.

    Such a message would carry no id and never be stored: a client resuming
    across it would get a replay with a hole it cannot see. So a Redis
    stream manager without a store refuses to send on a prefix where a
    ``RedisEventStore`` keeps logs; give it one, as the servers have.
    ``sent`` of the ``total`` messages were sent (0 of 1 for a ``send``).
    """

    def __init__(self, prefix: str, total: int = 1, sent: int = 0) -> None:
        outcome = (
            "nothing was sent" if not sent else f"{sent} of the batch's {total} messages were sent, the others were not"
        )
        super().__init__(
            f"this deployment stores events on prefix {prefix!r}: give this manager a "
            f"RedisEventStore(url, prefix={prefix!r}) (event_store=...), as its servers have; {outcome}"
        )
        self.prefix = prefix
        self.total = total
        self.sent = sent
