"""A request's header fields, read for ``session_manager.pywsgi`` without the ``email`` package.

gevent.pywsgi parses every request's headers with ``http.client.parse_headers``,
which runs the ``email`` feed parser: about a third of the server's own time
per request. :class:`RequestHeaders` reads the same lines with the same
limits (65,536 bytes per line, 100 fields) and offers what pywsgi and
gunicorn's handler use of ``http.client.HTTPMessage``. It is also stricter
where RFC 9112 lets a server refuse: a field line that is not ``name:
value`` with a token name (whitespace before the colon, a folded line, a
line without a colon), a control character in a value, two different
``Content-Length`` values, or a ``Transfer-Encoding`` that is not one
``chunked`` alone is a ``ValueError``, which pywsgi answers with 400.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from operator import methodcaller
from typing import IO

__all__ = ["RequestHeaders"]

#: http.client's limits: bytes per header line, and header fields per request.
MAX_LINE = 65536
MAX_FIELDS = 100
#: An RFC 9110 token (a field name, a method), and a field value: no control character but HTAB.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = rb"[^\x00-\x08\x0a-\x1f\x7f]*"
#: One field line: a token, a colon, the value, the line end. Linear: no two parts can match the
#: same byte (the whitespace around the value is stripped after).
_FIELD = re.compile(rb"(%s):(%s)\r?\n" % (_TOKEN, _VALUE))
#: Every field line of a header block that ends its lines with CRLF, checked at once (linear, as above).
_BLOCK = re.compile(rb"(?:%s:%s\r\n)*" % (_TOKEN, _VALUE))
_END = (b"\r\n", b"\n", b"")


class RequestHeaders:
    """The header fields of one request, in order, with case-insensitive lookup of the first of each name.

    ``status`` is ``"Line too long"`` when a line exceeded the limit (as
    pywsgi's own parser says it), else empty.
    """

    __slots__ = ("_first", "fields", "status")

    def __init__(self, fp: IO[bytes] | None = None, *_: object) -> None:
        #: Every field as received: (name, value), the value stripped of surrounding whitespace.
        self.fields: list[tuple[str, str]] = []
        self._first: dict[str, str] = {}
        self.status = ""
        if fp is not None:
            self._read(fp)

    def _read(self, fp: IO[bytes]) -> None:
        peek = getattr(fp, "peek", None)
        if peek is not None:
            end = self._take_block(peek(), 0)
            if end >= 0:
                fp.read(end)
                return
        fields = self.fields
        while True:
            line = fp.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.status = "Line too long"
                break
            if line in _END:
                break
            if len(fields) == MAX_FIELDS:
                raise ValueError(f"more than {MAX_FIELDS} header fields")
            field = _FIELD.fullmatch(line)
            if field is None:
                raise ValueError(f"malformed header line {line[:100]!r}")
            fields.append((field.group(1).decode("latin-1"), field.group(2).strip(b" \t").decode("latin-1")))
        self._index()

    def _take_block(self, buffered: bytes, start: int) -> int:
        """Take the fields from *start* to the blank line at once (a request's usual case); where the head ends, or -1.

        -1 (nothing taken) when the blank line is not in *buffered* yet, a
        line must be looked at alone (bare LF, a malformed one), or there
        are more fields than the limit: the caller reads line by line.
        """
        if buffered.startswith(b"\r\n", start):
            self._index()
            return start + 2  # no field at all
        end = buffered.find(b"\r\n\r\n", start)
        if end < 0 or _BLOCK.fullmatch(buffered, start, end + 2) is None:
            return -1
        lines = buffered[start:end].decode("latin-1").split("\r\n")
        if len(lines) > MAX_FIELDS:
            return -1
        self.fields = [(name, value.strip(" \t")) for name, _, value in map(methodcaller("partition", ":"), lines)]
        self._index()
        return end + 4

    def _index(self) -> None:
        """Index the first value of each name; ``ValueError`` for a body length that is not one plain thing.

        Two ``Content-Length`` values that disagree, a ``Transfer-Encoding``
        with a ``Content-Length``, more than one ``Transfer-Encoding``, or one
        that is not just ``chunked``: each could frame the body one way here
        and another way in a proxy in front (request smuggling).
        """
        fields = self.fields
        self._first = first = {name.lower(): value for name, value in reversed(fields)}
        if len(first) < len(fields) and len({value for name, value in fields if name.lower() == "content-length"}) > 1:
            raise ValueError("conflicting Content-Length headers")
        coding = first.get("transfer-encoding")
        if coding is not None and (
            coding.lower() != "chunked"
            or "content-length" in first
            or sum(name.lower() == "transfer-encoding" for name, _ in fields) > 1
        ):
            raise ValueError("a Transfer-Encoding other than one 'chunked' alone")

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of the field *name* (any case), or *default*."""
        return self._first.get(name.lower(), default)

    getheader = get

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __delitem__(self, name: str) -> None:
        """Remove every field *name*; a missing one is a ``KeyError``, as pywsgi expects."""
        key = name.lower()
        del self._first[key]
        self.fields = [field for field in self.fields if field[0].lower() != key]

    def items(self) -> list[tuple[str, str]]:
        """Every field as (name, value), in order (gunicorn's access log reads them so)."""
        return list(self.fields)

    @property
    def typeheader(self) -> str | None:
        """The ``Content-Type`` value, or None (pywsgi's name for it)."""
        return self._first.get("content-type")

    @property
    def headers(self) -> Iterator[str]:
        """The fields as ``"Name: value\\r\\n"`` lines (pywsgi's older interface)."""
        return (f"{name}: {value}\r\n" for name, value in self.fields)


#: The request line pywsgi's fast path takes: a method token, an origin-form target, HTTP/1.1.
_REQUEST_LINE = re.compile(rb"(%s) (/[!-~]*) HTTP/1\.1\r\n" % _TOKEN)


def simple_head(buffered: bytes) -> tuple[str, str, str, RequestHeaders, int] | None:
    """The request line and headers at the start of *buffered*, if they are all there and plain.

    Returns (method, target, request line, headers, bytes the head takes),
    or None when anything calls for the general path: an incomplete head,
    another HTTP version, a target that is not a path, a line to look at
    alone, more than the field limit, a ``Transfer-Encoding`` or ``Expect``
    header (body framing the general path handles), or a ``Content-Length``
    that is not plain digits or comes with a HEAD.
    """
    line = _REQUEST_LINE.match(buffered)
    if line is None:
        return None
    start = line.end()
    headers = RequestHeaders()
    try:
        end = headers._take_block(buffered, start)
    except ValueError:
        return None  # refused by the general path, which says why
    if end < 0:
        return None
    first = headers._first
    length = first.get("content-length")
    if "transfer-encoding" in first or "expect" in first or not (length is None or _plain_length(length)):
        return None
    method, target = line.group(1).decode("latin-1"), line.group(2).decode("latin-1")
    if method == "HEAD" and length is not None and int(length):
        return None  # refused by the general path
    return method, target, buffered[: start - 2].decode("latin-1"), headers, end


def _plain_length(value: str) -> bool:
    """Whether a ``Content-Length`` value is plain decimal digits (anything else: the general path decides)."""
    return value.isascii() and value.isdigit() and len(value) < 19
