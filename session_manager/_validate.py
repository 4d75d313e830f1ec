"""Argument checks shared by every manager, so all backends reject the same input."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, overload

#: Longest session id accepted; minted ids are far shorter.
MAX_SESSION_ID_LENGTH = 256

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def session_id(value: Any) -> str:
    """Return *value* if it is a valid session id, else raise TypeError/ValueError."""
    if type(value) is not str:
        raise TypeError(f"session id must be a str, not {type(value).__name__}")
    if not 0 < len(value) <= MAX_SESSION_ID_LENGTH or not _VISIBLE_ASCII.fullmatch(value):
        raise ValueError(
            "session id must be 1 to "
            f"{MAX_SESSION_ID_LENGTH} visible ASCII characters (0x21-0x7E), got {value!r:.80}"
        )
    return value


def session_ids(sessions: Iterable[str]) -> Sequence[str]:
    """Return the ids of a ``send`` as a sequence, checking every one is a str."""
    kind = type(sessions)
    ids: Sequence[str]
    if kind is list or kind is tuple:  # the common case first: this runs on every send
        ids = sessions  # type: ignore[assignment]  # a list or tuple, by the check above
    elif isinstance(sessions, (str, bytes)):
        raise TypeError(
            "sessions must be an iterable of session ids or None, not a single "
            f"{kind.__name__}; wrap one id in a list"
        )
    else:
        ids = sessions if isinstance(sessions, (list, tuple)) else list(sessions)
    for sid in ids:
        if type(sid) is not str:
            raise TypeError(f"session ids must be str, not {type(sid).__name__}")
    return ids


def message(data: Any) -> str:
    """Return *data* if it is a serialized message (``str``), else raise TypeError."""
    if type(data) is not str:
        raise TypeError(
            f"data must be one serialized JSON-RPC message (str), not {type(data).__name__}; "
            "use json.dumps(message)"
        )
    return data


#: The MCP log levels, least to most severe (RFC 5424 order).
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def json_object(value: Any, what: str) -> str:
    """Encode a dict as compact JSON text: how every backend copies metadata in."""
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a dict, not {type(value).__name__}")
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serializable: {exc}") from None


def log_level(value: Any) -> str:
    """Return *value* if it is an MCP log level, else raise naming the valid ones."""
    if type(value) is not str or value not in LOG_LEVELS:
        raise ValueError(f"invalid log level {value!r}: expected one of {', '.join(LOG_LEVELS)}")
    return value


def text(value: Any, what: str) -> str:
    """Return *value* if it is a non-empty str, else raise TypeError/ValueError."""
    if type(value) is not str:
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    return value


def positive_seconds(value: Any, what: str) -> float:
    """Return *value* as float seconds if it is a positive, finite number, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


@overload
def positive_int(value: Any, what: str) -> int: ...
@overload
def positive_int(value: Any, what: str, *, optional: bool) -> int | None: ...
def positive_int(value: Any, what: str, *, optional: bool = False) -> int | None:
    """Return *value* if it is a positive int (or ``None`` when *optional*), else raise ValueError naming *what*."""
    if optional and value is None:
        return None
    if type(value) is not int or value < 1:
        raise ValueError(f"{what} must be a positive int{' or None' if optional else ''}, got {value!r}")
    return value
