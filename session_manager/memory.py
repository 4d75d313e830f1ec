"""In-process backends: plain dicts guarded by locks. The default."""

from __future__ import annotations

import logging
import threading
from typing import Dict, Iterable, List, Mapping, Optional, Set

from . import _validate
from ._fields import FieldStoreInfoManager
from .base import StreamSessionManager
from .errors import SessionNotFoundError, StreamConflictError
from .sse import encode_message
from .stream import StreamController

__all__ = ["InMemoryStreamSessionManager", "InMemoryInfoSessionManager"]

logger = logging.getLogger(__name__)


class InMemoryStreamSessionManager(StreamSessionManager):
    """Streams of this process, in a dict guarded by a lock.

    A message is framed once per :meth:`send` and the same bytes are queued
    on every target. Targeted sends look ids up without the lock (a dict
    read is atomic), so they cost O(number of targets); a broadcast copies
    the dict under the lock and enqueues outside it. Delivery is FIFO per
    stream and at most once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: Dict[str, StreamController] = {}
        #: Streams closed because their consumer fell behind.
        self.slow_consumers_dropped = 0

    def create(self, session_id: str, controller: StreamController) -> None:
        _validate.session_id(session_id)
        if not isinstance(controller, StreamController):
            raise TypeError(f"controller must be a StreamController, not {type(controller).__name__}")
        with self._lock:
            current = self._streams.get(session_id)
            if current is not None and not current.closed:
                raise StreamConflictError(session_id)
            self._streams[session_id] = controller
        controller.add_close_callback(lambda: self._forget(session_id, controller))

    def delete(self, session_id: str) -> None:
        _validate.session_id(session_id)
        with self._lock:
            controller = self._streams.pop(session_id, None)
        if controller is not None:
            controller.close()

    def has(self, session_id: str) -> bool:
        _validate.session_id(session_id)
        controller = self._streams.get(session_id)
        return controller is not None and not controller.closed

    def send(self, sessions: Optional[Iterable[str]], data: str) -> None:
        frame = encode_message(data)
        if sessions is None:
            with self._lock:
                targets = self._streams.copy()  # far cheaper than a list of item tuples
            for sid, controller in targets.items():
                if not controller.enqueue_frame(frame):
                    self._forget(sid, controller)
            return
        lookup = self._streams.get
        for sid in _validate.session_ids(sessions):
            controller = lookup(sid)
            if controller is not None and not controller.enqueue_frame(frame):
                self._forget(sid, controller)

    def close(self) -> None:
        with self._lock:
            controllers = list(self._streams.values())
            self._streams.clear()
        for controller in controllers:
            controller.close()

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


class _Session:
    """Stored metadata of one session: text fields and subscribed URIs."""

    __slots__ = ("fields", "subscriptions")

    def __init__(self, fields: Dict[str, str]) -> None:
        self.fields = fields
        self.subscriptions: Set[str] = set()


class InMemoryInfoSessionManager(FieldStoreInfoManager):
    """Session metadata of this process, guarded by one lock.

    Values are copied in and out (stored as JSON text), so callers can never
    mutate stored state. Subscriptions are indexed both ways, so
    :meth:`delete` and :meth:`get_subscriptions` never scan all sessions.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: Dict[str, _Session] = {}
        self._subscribers: Dict[str, Set[str]] = {}

    def _insert(self, session_id: str, fields: Dict[str, str]) -> bool:
        with self._lock:
            if session_id in self._sessions:
                return False
            self._sessions[session_id] = _Session(fields)
            return True

    def _read_all(self, session_id: str) -> Optional[Mapping[str, str]]:
        with self._lock:
            session = self._sessions.get(session_id)
            return None if session is None else dict(session.fields)

    def _read(self, session_id: str, name: str) -> Optional[str]:
        session = self._sessions.get(session_id)
        return None if session is None else session.fields.get(name)

    def _write(self, session_id: str, name: str, value: str) -> bool:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.fields[name] = value
            return session is not None

    def exists(self, session_id: str) -> bool:
        return _validate.session_id(session_id) in self._sessions

    def get_subscriptions(self, uri: str) -> List[str]:
        _validate.text(uri, "uri")
        with self._lock:
            return list(self._subscribers.get(uri, ()))

    def add_subscription(self, session_id: str, uri: str) -> None:
        _validate.session_id(session_id)
        _validate.text(uri, "uri")
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise SessionNotFoundError(session_id)
            session.subscriptions.add(uri)
            self._subscribers.setdefault(uri, set()).add(session_id)

    def remove_subscription(self, session_id: str, uri: str) -> None:
        _validate.session_id(session_id)
        _validate.text(uri, "uri")
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.subscriptions.discard(uri)
            self._unindex(session_id, uri)

    def delete(self, session_id: str) -> None:
        _validate.session_id(session_id)
        with self._lock:
            session = self._sessions.pop(session_id, None)
            for uri in session.subscriptions if session is not None else ():
                self._unindex(session_id, uri)

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
