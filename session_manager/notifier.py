"""Notifier: server-initiated notifications from application code.

Everything goes through ``managers.streams.send`` and reaches the sessions'
streams (Streamable HTTP GET streams and legacy HTTP+SSE streams alike),
and, for what a 2026-07-28 client can listen to (list changes, resource
updates), through ``managers.subscriptions`` to its listen streams, in this
process or (with a shared backend) in any other.
Safe from any thread, greenlet or background job.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

from ._jsonrpc import notification
from ._mcp import log_enabled, log_notification, resource_updated_notification
from .base import SessionManagers
from .subscriptions import SubscriptionManager

#: The broadcasts a listen stream can ask for, and the subscription manager's method that sends each.
_LISTENED: dict[str, Callable[[SubscriptionManager], None]] = {
    f"notifications/{kind}/list_changed": operator.methodcaller(f"{kind}_list_changed")
    for kind in ("tools", "prompts", "resources")
}

__all__ = ["Notifier"]


class Notifier:
    """Fan-out API over a :class:`~session_manager.SessionManagers` pair.

    Session ids here are the keys the managers know sessions by, as given
    to handlers in ``ctx.session_id``. Messages to sessions without an
    open stream are dropped (at-most-once delivery). Backend failures
    raise :class:`~session_manager.BackendUnavailableError`.
    """

    def __init__(self, managers: SessionManagers) -> None:
        if not isinstance(managers, SessionManagers):
            raise TypeError(f"managers must be a SessionManagers, not {type(managers).__name__}")
        self.managers = managers

    def send(self, session_ids: Iterable[str] | None, data: str) -> None:
        """Send one serialized JSON-RPC message to *session_ids* (``None``: every session)."""
        self.managers.streams.send(session_ids, data)

    def notify(self, session_id: str, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification to one session."""
        self.send([session_id], notification(method, params))

    def broadcast(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification to every session with an open stream.

        A list change (``notifications/{tools,prompts,resources}/list_changed``)
        also reaches the listen streams that asked for it: the one kind of
        broadcast a 2026-07-28 client can subscribe to.
        """
        self.send(None, notification(method, params))
        listen = _LISTENED.get(method)
        if listen is not None:
            listen(self.managers.subscriptions)

    def resource_updated(self, uri: str) -> None:
        """Tell those watching *uri* (and only them) that it changed: subscribed sessions and listen streams."""
        data = resource_updated_notification(uri)
        subscribers = self.managers.info.get_subscriptions(uri)
        if subscribers:
            self.send(subscribers, data)
        self.managers.subscriptions.resource_updated(uri)

    def tools_list_changed(self) -> None:
        """Broadcast ``notifications/tools/list_changed`` (sessions and listen streams)."""
        self.broadcast("notifications/tools/list_changed")

    def resources_list_changed(self) -> None:
        """Broadcast ``notifications/resources/list_changed`` (sessions and listen streams)."""
        self.broadcast("notifications/resources/list_changed")

    def prompts_list_changed(self) -> None:
        """Broadcast ``notifications/prompts/list_changed`` (sessions and listen streams)."""
        self.broadcast("notifications/prompts/list_changed")

    def log(self, session_id: str, level: str, data: Any, logger: str | None = None) -> bool:
        """Send a ``notifications/message`` unless it is below the session's log level.

        Returns whether it was sent.
        """
        message = log_notification(level, data, logger)
        if not log_enabled(level, self.managers.info.get_log_level(session_id)):
            return False
        self.send([session_id], message)
        return True
