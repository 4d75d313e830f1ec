"""HTTP-level checks of an incoming request, each raising :class:`HttpError`.

Host and Origin guard a local server against DNS rebinding; the others
enforce what the Streamable HTTP transport requires of a client (media
types, body size, protocol version) before any JSON is decoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import IO

from werkzeug.datastructures import MIMEAccept

from .._jsonrpc import INVALID_REQUEST, SERVER_ERROR, HttpError

__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "DEFAULT_ALLOWED_ORIGINS",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_PROTOCOL_VERSION",
    "LATEST_PROTOCOL_VERSION",
    "LEGACY_PROTOCOL_VERSION",
    "LEGACY_SUPPORTED_PROTOCOL_VERSIONS",
    "SUPPORTED_PROTOCOL_VERSIONS",
    "Allowlist",
    "accepts",
    "check_content_type",
    "check_host",
    "check_origin",
    "check_protocol_version",
    "method_not_allowed",
    "read_body",
]

#: The revision this transport implements.
LATEST_PROTOCOL_VERSION = "2025-11-25"
#: Revisions accepted from clients, newest first.
SUPPORTED_PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
#: What a request without an ``MCP-Protocol-Version`` header is assumed to speak.
DEFAULT_PROTOCOL_VERSION = "2025-03-26"
#: The revision that defined the legacy HTTP+SSE transport.
LEGACY_PROTOCOL_VERSION = "2024-11-05"
#: Revisions accepted from clients of the legacy transport, newest first: clients
#: negotiate their newest revision whichever transport they use.
LEGACY_SUPPORTED_PROTOCOL_VERSIONS = (*SUPPORTED_PROTOCOL_VERSIONS, LEGACY_PROTOCOL_VERSION)

_LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: Hosts accepted by default (any port): the loopback names of a local server.
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = _LOCAL_NAMES
#: Origins accepted by default (any port): pages served from the local machine.
DEFAULT_ALLOWED_ORIGINS: tuple[str, ...] = tuple(f"{s}://{h}" for s in ("http", "https") for h in _LOCAL_NAMES)
#: Largest request body accepted (bytes).
DEFAULT_MAX_BODY_SIZE = 4 * 1024 * 1024

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

    __slots__ = ("_entries", "_with_scheme")

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

    def allows(self, value: str | None) -> bool:
        """Whether the header *value* names an allowed host (or origin)."""
        address = _parse(value, self._with_scheme) if value else None
        if address is None or address[2] == "*":
            return False
        scheme, host, port = address
        return any(
            s == scheme and h == host and (p is None or p == "*" or p == port) for s, h, p in self._entries
        )


def _forbidden(message: str) -> HttpError:
    return HttpError(403, SERVER_ERROR, f"Forbidden: {message}")


def check_host(allowlist: Allowlist | None, host: str | None) -> None:
    """403 unless the ``Host`` header is allowed (no check without an allowlist)."""
    if allowlist is not None and not allowlist.allows(host):
        raise _forbidden("Host header not allowed")


def check_origin(allowlist: Allowlist | None, origin: str | None) -> None:
    """403 if an ``Origin`` header is present and not allowed (no check without an allowlist)."""
    if allowlist is not None and origin is not None and not allowlist.allows(origin):
        raise _forbidden("Origin not allowed")


def method_not_allowed(allowed: Sequence[str]) -> HttpError:
    """405 for a method the URL does not serve, with the ``Allow`` header listing *allowed*."""
    names = ", ".join(allowed[:-1]) + " or " + allowed[-1] if len(allowed) > 1 else allowed[0]
    return HttpError(405, SERVER_ERROR, f"Method Not Allowed: use {names}", headers={"Allow": ", ".join(allowed)})


def check_content_type(mimetype: str) -> None:
    """415 unless the body is declared as ``application/json``."""
    if mimetype != "application/json":
        raise HttpError(415, SERVER_ERROR, "Unsupported Media Type: Content-Type must be application/json")


def accepts(accept: MIMEAccept, mimetype: str) -> bool:
    """Whether the ``Accept`` header allows *mimetype* (an absent header allows nothing)."""
    return accept.quality(mimetype) > 0


def read_body(stream: IO[bytes], content_length: int | None, limit: int) -> bytes:
    """Read the whole body, 413 as soon as it is known to exceed *limit* bytes.

    ``Content-Length`` is checked first; the bytes actually read are counted
    too (chunked bodies, lying headers), never buffering more than one
    chunk past the limit.
    """
    too_large = HttpError(413, SERVER_ERROR, f"Payload Too Large: the body exceeds {limit} bytes")
    if content_length is not None and content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)


def check_protocol_version(header: str | None) -> str:
    """Return the request's protocol version; 400 if the header names an unsupported one."""
    if header is None:
        return DEFAULT_PROTOCOL_VERSION
    if header not in SUPPORTED_PROTOCOL_VERSIONS:
        raise HttpError(
            400,
            INVALID_REQUEST,
            f"Bad Request: unsupported MCP-Protocol-Version {header[:64]!r}; "
            f"supported: {', '.join(SUPPORTED_PROTOCOL_VERSIONS)}",
        )
    return header
