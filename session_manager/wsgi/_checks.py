"""HTTP-level checks of an incoming request, each raising :class:`HttpError`.

Host and Origin guard a local server against DNS rebinding; the others
enforce what an MCP client must send (media types, body size) before any
JSON is decoded. They read header values, not a request object, so any
HTTP binding can use them; the protocol version header is the protocol
era's business (:mod:`._handshake`). A body the client cut short is a
parse error like any other malformed body: 400, one log line, no traceback.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from typing import IO

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header, parse_options_header

from .._jsonrpc import PARSE_ERROR, SERVER_ERROR, HttpError, Message, parse_message

__all__ = [
    "Allowlist",
    "accepts",
    "check_content_type",
    "check_peer",
    "method_not_allowed",
    "read_body",
    "read_message",
    "url_path",
]

logger = logging.getLogger(__name__)

_HOST_PORT = re.compile(r"(\[[0-9a-f:.]+\]|[^\[\]:/@\s]+)(?::([0-9]{1,5}|\*))?")
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(.+)")

_Address = tuple[str, str, str | None]  # scheme ("" for a Host), host, port (None: any)


def _parse(value: str, with_scheme: bool) -> _Address | None:
    """Split ``[scheme://]host[:port]`` (lower-cased); None if it is not one."""
    value = value.strip().lower()
    scheme = ""
    if with_scheme:
        match = _ORIGIN.fullmatch(value)
        if match is None:
            return None
        scheme, value = match.groups()
    match = _HOST_PORT.fullmatch(value)
    if match is None:
        return None
    return scheme, match.group(1), match.group(2)


class Allowlist:
    """Allowed ``host[:port]`` values (or ``scheme://host[:port]`` origins).

    An entry without a port, or with ``:*``, allows every port of its host;
    an entry with a port allows that port only. Matching ignores case.
    """

    __slots__ = ("_entries", "_seen", "_with_scheme")

    def __init__(self, entries: Iterable[str], *, origins: bool) -> None:
        if isinstance(entries, str):
            raise TypeError("expected an iterable of strings, not a single str; wrap it in a list")
        self._with_scheme = origins
        parsed: list[_Address] = []
        for entry in entries:
            address = _parse(entry, origins) if isinstance(entry, str) else None
            if address is None:
                what = "scheme://host[:port]" if origins else "host[:port]"
                raise ValueError(f"invalid allowlist entry {entry!r}: expected {what}")
            parsed.append(address)
        self._entries = tuple(parsed)
        #: Recent answers by header value: a client sends the same Host with every request.
        self._seen: dict[str, bool] = {}

    def allows(self, value: str | None) -> bool:
        """Whether the header *value* names an allowed host (or origin)."""
        if not value:
            return False
        if len(value) > _CACHED_VALUE:
            return self._allows(value)  # no real host is this long: not worth keeping
        seen = self._seen
        allowed = seen.get(value)
        if allowed is None:
            allowed = self._allows(value)
            if len(seen) >= _SEEN_MAX:
                seen.clear()  # bounded whatever clients send; a plain dict is safe to share between threads
            seen[value] = allowed
        return allowed

    def _allows(self, value: str) -> bool:
        address = _parse(value, self._with_scheme)
        if address is None or address[2] == "*":
            return False
        scheme, host, port = address
        return any(s == scheme and h == host and (p is None or p == "*" or p == port) for s, h, p in self._entries)


#: Header values whose answer an :class:`Allowlist` remembers at most, and the longest one it remembers.
_SEEN_MAX = 256
_CACHED_VALUE = 256


def _forbidden(message: str) -> HttpError:
    return HttpError(403, SERVER_ERROR, f"Forbidden: {message}")


def check_peer(hosts: Allowlist | None, origins: Allowlist | None, host: str | None, origin: str | None) -> None:
    """403 unless the ``Host`` header is allowed and the ``Origin`` header, if present, is too.

    An allowlist of ``None`` disables its check.
    """
    if hosts is not None and not hosts.allows(host):
        raise _forbidden("Host header not allowed")
    if origins is not None and origin is not None and not origins.allows(origin):
        raise _forbidden("Origin not allowed")


def method_not_allowed(allowed: Sequence[str]) -> HttpError:
    """405 for a method the URL does not serve, with the ``Allow`` header listing *allowed*."""
    names = ", ".join(allowed[:-1]) + " or " + allowed[-1] if len(allowed) > 1 else allowed[0]
    return HttpError(405, SERVER_ERROR, f"Method Not Allowed: use {names}", headers={"Allow": ", ".join(allowed)})


def check_content_type(content_type: str | None) -> None:
    """415 unless the ``Content-Type`` header value declares ``application/json`` (parameters allowed)."""
    if content_type != "application/json" and parse_options_header(content_type)[0].lower() != "application/json":
        raise HttpError(415, SERVER_ERROR, "Unsupported Media Type: Content-Type must be application/json")


#: Longest ``Accept`` value whose answers are cached: a client sends the same one with every request.
_CACHED_ACCEPT = 512


def accepts(accept: str | None, mimetype: str) -> bool:
    """Whether the ``Accept`` header value *accept* allows *mimetype* (an absent header allows nothing)."""
    if not accept:
        return False
    if len(accept) > _CACHED_ACCEPT:
        return _accepts.__wrapped__(accept, mimetype)
    return _accepts(accept, mimetype)


@functools.lru_cache(maxsize=128)
def _accepts(accept: str, mimetype: str) -> bool:
    return parse_accept_header(accept, MIMEAccept).quality(mimetype) > 0


def read_body(stream: IO[bytes], content_length: int | None, limit: int) -> bytes:
    """Read the whole body, 413 as soon as it is known to exceed *limit* bytes, 400 if it was cut short.

    ``Content-Length`` is checked first; the bytes actually read are counted
    too (chunked bodies, lying headers), never buffering more than one
    chunk past the limit. A body that ends before its ``Content-Length``, or
    whose chunked framing breaks, is a parse error (:func:`_cut_short`).
    """
    too_large = HttpError(413, SERVER_ERROR, f"Payload Too Large: the body exceeds {limit} bytes")
    if content_length is not None and content_length > limit:
        raise too_large
    if content_length is not None and getattr(stream, "content_length", None) == content_length:
        return _read_bounded(stream, content_length)  # a server's own reader ends at Content-Length itself
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = stream.read(min(65536, limit + 1 - size))
        except Exception as exc:  # noqa: BLE001 - each WSGI server reports a cut or malformed body its own way
            raise _cut_short(repr(exc)) from None
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    if content_length is not None and size < content_length:  # a server that hands over a short read as is
        raise _cut_short(f"{size} of {content_length} bytes")
    return b"".join(chunks)


def _read_bounded(stream: IO[bytes], content_length: int) -> bytes:
    """The body from a reader that stops at *content_length* (gevent.pywsgi's): one read, 400 if it came short."""
    try:
        body = stream.read(content_length)
    except Exception as exc:  # noqa: BLE001 - as read_body
        raise _cut_short(repr(exc)) from None
    if len(body) < content_length:
        raise _cut_short(f"{len(body)} of {content_length} bytes")
    return body


def _cut_short(detail: str) -> HttpError:
    """400 (-32700) for a body that could not be read whole: logged as one line, never as a traceback.

    The client hung up mid-body, or its framing broke; WSGI servers say so
    with an ``OSError`` (gevent, werkzeug's chunked input), a ``ValueError``,
    werkzeug's ``ClientDisconnected`` or gunicorn's parse errors. None of
    this is the server's fault, so it is logged at INFO.
    """
    logger.info("MCP request body cut short or malformed: %s", detail[:200])
    return HttpError(400, PARSE_ERROR, "Parse error: the body ended early or its framing is broken (truncated body)")


def read_message(stream: IO[bytes], content_length: int | None, limit: int) -> Message:
    """The body as one checked JSON-RPC message: 413 beyond *limit* bytes, 400 if it is not one message."""
    return parse_message(read_body(stream, content_length, limit))


def url_path(value: str, what: str) -> str:
    """*value* if it is a URL path (starts with ``/``, no query or fragment); ``ValueError`` naming *what* if not."""
    if not isinstance(value, str) or not value.startswith("/") or "?" in value or "#" in value:
        raise ValueError(f"{what} must be a URL path starting with '/', got {value!r}")
    return value
