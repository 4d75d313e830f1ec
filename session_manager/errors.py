"""Exceptions raised by session managers and transports."""

from __future__ import annotations

__all__ = [
    "SessionManagerError",
    "StreamConflictError",
    "SessionNotFoundError",
    "BackendUnavailableError",
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
