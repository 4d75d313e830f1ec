"""In-process backends: plain dicts guarded by locks. The default."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Dict, Iterable, List, Optional, Set

from . import _validate
from .base import InfoSessionManager, SessionInfo, StreamSessionManager
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
                targets = list(self._streams.items())
            for sid, controller in targets:
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
    """Stored metadata of one session; JSON values are kept as encoded text."""

    __slots__ = ("protocol_version", "client_info", "client_capabilities", "log_level", "subscriptions")

    def __init__(self) -> None:
        self.protocol_version: Optional[str] = None
        self.client_info: Optional[str] = None
        self.client_capabilities: Optional[str] = None
        self.log_level: Optional[str] = None
        self.subscriptions: Set[str] = set()


def _load(value: Optional[str]) -> Optional[Dict[str, Any]]:
    return None if value is None else json.loads(value)


class InMemoryInfoSessionManager(InfoSessionManager):
    """Session metadata of this process, guarded by one lock.

    Values are copied in and out (stored as JSON text), so callers can never
    mutate stored state. Subscriptions are indexed both ways, so
    :meth:`delete` and :meth:`get_subscriptions` never scan all sessions.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: Dict[str, _Session] = {}
        self._subscribers: Dict[str, Set[str]] = {}

    def create(
        self,
        session_id: str,
        *,
        protocol_version: Optional[str] = None,
        client_info: Optional[Dict[str, Any]] = None,
        client_capabilities: Optional[Dict[str, Any]] = None,
    ) -> None:
        _validate.session_id(session_id)
        session = _Session()
        if protocol_version is not None:
            session.protocol_version = _validate.text(protocol_version, "protocol version")
        if client_info is not None:
            session.client_info = _validate.json_object(client_info, "client info")
        if client_capabilities is not None:
            session.client_capabilities = _validate.json_object(client_capabilities, "client capabilities")
        with self._lock:
            if session_id in self._sessions:
                raise ValueError(f"session {session_id!r} already exists")
            self._sessions[session_id] = session

    def exists(self, session_id: str) -> bool:
        return _validate.session_id(session_id) in self._sessions

    def get(self, session_id: str) -> Optional[SessionInfo]:
        session = self._sessions.get(_validate.session_id(session_id))
        if session is None:
            return None
        return SessionInfo(
            protocol_version=session.protocol_version,
            client_info=_load(session.client_info),
            client_capabilities=_load(session.client_capabilities),
            log_level=session.log_level,
        )

    def _field(self, session_id: str, name: str) -> Optional[str]:
        session = self._sessions.get(_validate.session_id(session_id))
        return None if session is None else getattr(session, name)

    def _set(self, session_id: str, name: str, value: str) -> None:
        _validate.session_id(session_id)
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise SessionNotFoundError(session_id)
            setattr(session, name, value)

    def get_protocol_version(self, session_id: str) -> Optional[str]:
        return self._field(session_id, "protocol_version")

    def set_protocol_version(self, session_id: str, version: str) -> None:
        self._set(session_id, "protocol_version", _validate.text(version, "protocol version"))

    def get_client_info(self, session_id: str) -> Optional[Dict[str, Any]]:
        return _load(self._field(session_id, "client_info"))

    def set_client_info(self, session_id: str, info: Dict[str, Any]) -> None:
        self._set(session_id, "client_info", _validate.json_object(info, "client info"))

    def get_client_capabilities(self, session_id: str) -> Optional[Dict[str, Any]]:
        return _load(self._field(session_id, "client_capabilities"))

    def set_client_capabilities(self, session_id: str, capabilities: Dict[str, Any]) -> None:
        self._set(session_id, "client_capabilities", _validate.json_object(capabilities, "client capabilities"))

    def get_log_level(self, session_id: str) -> Optional[str]:
        return self._field(session_id, "log_level")

    def set_log_level(self, session_id: str, level: str) -> None:
        self._set(session_id, "log_level", _validate.log_level(level))

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
