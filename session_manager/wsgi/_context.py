"""RequestContext: what a handler knows of its session, and how it talks back."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._jsonrpc import notification
from .._mcp import log_enabled, log_notification, progress_notification
from ..errors import BackendUnavailableError

__all__ = ["RequestContext"]

logger = logging.getLogger(__name__)

Emit = Callable[[str], object]


class RequestContext:
    """Handed to the handler with every message.

    Session data is read once per HTTP request (one ``info.get``). Messages
    emitted here travel on the current request's SSE stream, live, before
    its response; when the request has no stream of its own (a notification,
    or a plain JSON response) they go to the session's GET stream instead.
    On the legacy HTTP+SSE transport everything goes to the session's one
    stream.
    Emitting never blocks and never raises for a gone client: it returns
    whether the message was handed over.

    Attributes: ``session_id`` (the key the managers know the session by:
    the ``Mcp-Session-Id``, prefixed by the principal when one is
    configured; pass it to the transport's ``notify``/``log``),
    ``protocol_version``, ``client_info``, ``client_capabilities``,
    ``log_level``, ``request_id`` (``None`` for notifications),
    ``method`` and ``progress_token``.
    """

    __slots__ = (
        "_emit",
        "client_capabilities",
        "client_info",
        "log_level",
        "method",
        "progress_token",
        "protocol_version",
        "request_id",
        "session_id",
    )

    def __init__(
        self,
        *,
        session_id: str,
        protocol_version: str | None,
        client_info: dict[str, Any] | None,
        client_capabilities: dict[str, Any] | None,
        log_level: str | None,
        request_id: str | int | None,
        method: str | None,
        progress_token: str | int | None,
        emit: Emit,
    ) -> None:
        self.session_id = session_id
        self.protocol_version = protocol_version
        self.client_info = client_info
        self.client_capabilities = client_capabilities
        self.log_level = log_level
        self.request_id = request_id
        self.method = method
        self.progress_token = progress_token
        self._emit = emit

    def send(self, data: str) -> bool:
        """Emit one serialized JSON-RPC message; False if it could not be handed over."""
        try:
            return self._emit(data) is not False
        except BackendUnavailableError:
            logger.warning("session backend unavailable: message to session dropped")
            return False

    def notify(self, method: str, params: dict[str, Any] | None = None) -> bool:
        """Emit a notification related to the current request."""
        return self.send(notification(method, params))

    def progress(self, progress: float, total: float | None = None, message: str | None = None) -> bool:
        """Report progress on the request's ``_meta.progressToken``; a no-op without one."""
        if self.progress_token is None:
            return False
        return self.send(progress_notification(self.progress_token, progress, total, message))

    def log(self, level: str, data: Any, logger: str | None = None) -> bool:
        """Emit a ``notifications/message``, dropped below the session's log level."""
        if not log_enabled(level, self.log_level):
            return False
        return self.send(log_notification(level, data, logger))

    def __repr__(self) -> str:
        return f"<RequestContext session={self.session_id!r} method={self.method!r} id={self.request_id!r}>"
