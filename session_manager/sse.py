"""Server-sent events (SSE) frame encoding.

Follows the WHATWG HTML "server-sent events" wire format: a frame is
``field: value`` lines ended by a blank line. CR, LF and CRLF all end a
line, so every payload is split on all three before framing; a newline in a
payload can therefore never start a new field or a new event.
"""

from __future__ import annotations

import re

from . import _validate

__all__ = ["PING", "encode_comment", "encode_event", "encode_id", "encode_message"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")

#: The keep-alive comment sent on idle streams.
PING = b": ping\n\n"


def _field(name: str, value: str) -> str:
    if type(value) is not str:
        raise TypeError(f"SSE {name} must be a str, not {type(value).__name__}")
    if _FORBIDDEN_IN_FIELD.search(value):
        raise ValueError(f"SSE {name} must not contain CR, LF or NUL: {value!r:.80}")
    return f"{name}: {value}\n"


def encode_event(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one SSE event as UTF-8 bytes.

    A spec-conformant parser reads it back as exactly one event whose data is
    *data* (an empty event when *data* is ``""``), except that CR and CRLF
    come back as LF: SSE has no way to carry a CR. For JSON text that is the
    same message, since a raw line break can only be whitespace there. With ``data=None`` no
    ``data`` line is written: such a frame only sets ``id`` or ``retry`` and
    dispatches no event. *event* and *id* must not contain CR, LF or NUL;
    *retry* is a reconnection delay in milliseconds.
    """
    head = ""
    if event is not None:
        head += _field("event", event)
    if id is not None:
        head += _field("id", id)
    if retry is not None:
        if type(retry) is not int or retry < 0:
            raise ValueError(f"SSE retry must be a non-negative int (milliseconds), got {retry!r}")
        head += f"retry: {retry}\n"
    if data is None:
        body = ""
    elif type(data) is not str:
        raise TypeError(f"SSE data must be a str, not {type(data).__name__}")
    elif "\n" in data or "\r" in data:
        body = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    else:
        body = f"data: {data}\n"
    return (head + body + "\n").encode("utf-8")


def encode_message(data: str, id: str | None = None) -> bytes:
    """Frame one serialized message as a data-only event, with *id* if given.

    The same bytes as ``encode_event(data, id=id)``; this is the hot path
    of every send, so the common case (no line break) skips the general
    encoder and builds the frame in one step.
    """
    if type(data) is not str:
        _validate.message(data)  # raises TypeError saying what was expected
    if "\n" in data or "\r" in data:
        return encode_event(data, id=id)
    if id is None:
        return f"data: {data}\n\n".encode()  # one str, one encode: the fastest form in CPython
    if type(id) is str and id.isprintable():  # no CR, LF or NUL
        return f"id: {id}\ndata: {data}\n\n".encode()
    return encode_event(data, id=id)  # raises, saying what is wrong with the id


def encode_id(event_id: str) -> bytes:
    """The ``id`` line that, put before a frame, gives the event its id.

    ``encode_id(i) + encode_message(data)`` is ``encode_event(data, id=i)``:
    a message framed once for many streams gets each stream's id this way.
    """
    return _field("id", event_id).encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """Encode an SSE comment line (ignored by clients; used for keep-alives)."""
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8") + b"\n"
