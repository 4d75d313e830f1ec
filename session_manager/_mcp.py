"""MCP notifications built in one place for the request context and the notifier."""

from __future__ import annotations

from typing import Any

from . import _validate
from ._jsonrpc import notification
from ._validate import LOG_LEVELS

__all__ = ["log_enabled", "log_notification", "progress_notification", "resource_updated_notification"]

_SEVERITY = {level: rank for rank, level in enumerate(LOG_LEVELS)}


def log_enabled(level: str, threshold: str | None) -> bool:
    """Whether a message at *level* passes a session's *threshold* (none set: everything passes).

    ``ValueError`` if *level* is not an MCP log level.
    """
    rank = _SEVERITY[_validate.log_level(level)]
    return threshold is None or rank >= _SEVERITY.get(threshold, 0)


def log_notification(level: str, data: Any, logger: str | None = None) -> str:
    """A serialized ``notifications/message``."""
    params: dict[str, Any] = {"level": _validate.log_level(level), "data": data}
    if logger is not None:
        params["logger"] = _validate.text(logger, "logger")
    return notification("notifications/message", params)


def progress_notification(
    token: str | int, progress: float, total: float | None = None, message: str | None = None
) -> str:
    """A serialized ``notifications/progress`` for a request's progress token."""
    if isinstance(progress, bool) or not isinstance(progress, (int, float)):
        raise TypeError(f"progress must be a number, not {type(progress).__name__}")
    params: dict[str, Any] = {"progressToken": token, "progress": progress}
    if total is not None:
        if isinstance(total, bool) or not isinstance(total, (int, float)):
            raise TypeError(f"total must be a number, not {type(total).__name__}")
        params["total"] = total
    if message is not None:
        params["message"] = _validate.text(message, "progress message")
    return notification("notifications/progress", params)


def resource_updated_notification(uri: str) -> str:
    """A serialized ``notifications/resources/updated`` for *uri*."""
    return notification("notifications/resources/updated", {"uri": _validate.text(uri, "uri")})
