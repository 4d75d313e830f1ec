"""Session management for MCP servers on WSGI: threads, gevent, many processes.

The Python counterpart of ``@tmcp/session-manager``: a stream manager that
fans messages out to open SSE streams, and an info manager that keeps each
session's metadata, with in-memory backends by default.
"""

from .base import LOG_LEVELS, InfoSessionManager, SessionInfo, SessionManagers, SessionQuota, StreamSessionManager
from .errors import (
    BackendUnavailableError,
    EventGoneError,
    EventStoreRequiredError,
    InvalidEventIdError,
    MessageTooLargeError,
    SessionLimitError,
    SessionManagerError,
    SessionNotFoundError,
    StreamConflictError,
)
from .events import EventStore, InMemoryEventStore, Replay
from .memory import InMemoryInfoSessionManager, InMemoryStreamSessionManager
from .notifier import Notifier
from .sse import encode_comment, encode_event
from .stream import StreamController
from .subscriptions import InMemorySubscriptionManager, ListenFilter, SubscriptionManager

__version__ = "0.1.0"

__all__ = [
    "LOG_LEVELS",
    "BackendUnavailableError",
    "EventGoneError",
    "EventStore",
    "EventStoreRequiredError",
    "InMemoryEventStore",
    "InMemoryInfoSessionManager",
    "InMemoryStreamSessionManager",
    "InMemorySubscriptionManager",
    "InfoSessionManager",
    "InvalidEventIdError",
    "ListenFilter",
    "MessageTooLargeError",
    "Notifier",
    "Replay",
    "SessionInfo",
    "SessionLimitError",
    "SessionManagerError",
    "SessionManagers",
    "SessionNotFoundError",
    "SessionQuota",
    "StreamConflictError",
    "StreamController",
    "StreamSessionManager",
    "SubscriptionManager",
    "encode_comment",
    "encode_event",
]
