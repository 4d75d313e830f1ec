"""Exceptions raised by session managers and transports."""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "EventGoneError",
    "InvalidEventIdError",
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
