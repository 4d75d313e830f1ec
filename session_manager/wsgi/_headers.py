"""A request's header values and body stream, read straight from its WSGI environ.

``request.headers.get(name)`` on werkzeug's ``EnvironHeaders`` upper-cases
and rewrites the name on every call; a transport that reads a dozen headers
per POST pays for it on every request. The environ key of each name is
computed once here, and the value is what ``request.headers.get`` returns.
Likewise :func:`body` skips werkzeug's stream wrapper where the server
already ends the body at its ``Content-Length``.
"""

from __future__ import annotations

import functools
from typing import IO

from werkzeug.wrappers import Request

__all__ = ["body", "header"]


@functools.lru_cache(maxsize=256)
def _environ_key(name: str) -> str:
    """The WSGI environ key of the header *name* (PEP 3333: ``HTTP_`` and the name upper-cased, ``-`` as ``_``)."""
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def header(request: Request, name: str) -> str | None:
    """The value of the request header *name* (any case), or None if the request has none."""
    value: str | None = request.environ.get(_environ_key(name))
    return value


def body(request: Request) -> tuple[IO[bytes], int | None]:
    """The request's body stream and its ``Content-Length`` (None if not given), as werkzeug's request has them.

    A server that ends the body itself (``wsgi.input_terminated``: gevent,
    gunicorn) gives its own stream for a plain ``Content-Length`` body;
    anything else (chunked, a length werkzeug must interpret) is werkzeug's.
    """
    environ = request.environ
    length = environ.get("CONTENT_LENGTH")
    if (
        environ.get("wsgi.input_terminated")
        and "HTTP_TRANSFER_ENCODING" not in environ
        and type(length) is str
        and length.isascii()
        and length.isdigit()
    ):
        stream: IO[bytes] = environ["wsgi.input"]
        return stream, int(length)
    return request.stream, request.content_length
