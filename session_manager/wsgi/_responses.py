"""The HTTP answers of the transport, on werkzeug: JSON, SSE, empty, and every failure as a JSON-RPC error.

:func:`error_response_for` is the one table from exceptions to HTTP
answers, so a client never sees a traceback. :func:`socket_closer` finds
the client's socket in the WSGI environ, so a stream whose reader stopped
reading can be cut at once (a write blocked on that client then fails
instead of holding the connection open).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from .._jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, SERVER_ERROR, HttpError
from ..errors import BackendUnavailableError, EventGoneError, InvalidEventIdError, SessionLimitError
from ..sse import encode_comment
from ..stream import StreamController

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "JSON",
    "OPENED",
    "PARK_KEY",
    "SSE",
    "empty_response",
    "error_response_for",
    "http_error",
    "json_response",
    "long_lived_response",
    "refusal_for",
    "respond",
    "socket_closer",
    "sse_response",
    "vary_on_origin",
]

logger = logging.getLogger(__name__)

JSON = "application/json"
SSE = "text/event-stream"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: First bytes of a stream, so the headers leave at once instead of with the first event.
OPENED = encode_comment("open")
#: Environ keys under which WSGI servers expose the client's socket:
#: werkzeug's development server, gunicorn (sync/gthread workers, then its gevent pywsgi worker).
_SOCKET_KEYS = ("werkzeug.socket", "gunicorn.socket", "gunicorn.sock")
#: Environ key of a list in which a server that can write long-lived streams from its event loop
#: (``session_manager.pywsgi``) receives the stream of the response, instead of iterating it.
PARK_KEY = "session_manager.park"


def json_response(body: str, status: int = 200) -> Response:
    """A JSON body (one serialized JSON-RPC message)."""
    return Response(body, status, content_type=JSON)


def sse_response(body: StreamController | Iterable[bytes]) -> Response:
    """An SSE response; a controller body is closed when the server is done with the response.

    A controller's frames go to the server as they are (``direct_passthrough``):
    werkzeug's encoding and closing iterators would sit on the stack of every
    blocked stream (1.4 KB each, saved with its greenlet under gevent).
    """
    if not isinstance(body, StreamController):
        return Response(body, 200, content_type=SSE, headers=_SSE_HEADERS)
    response = Response(iter(body), 200, content_type=SSE, headers=_SSE_HEADERS, direct_passthrough=True)
    response.call_on_close(body.close)
    return response


def long_lived_response(controller: StreamController, environ: Mapping[str, Any]) -> Response:
    """The SSE response of a stream that outlives its request (a GET stream, a listen stream).

    Its connection carries nothing else: under gevent.pywsgi (and gunicorn's
    gevent worker) the request's buffered reader, 8 KB per connection, is
    closed now, and the server closes the connection when the stream ends
    (a client opens a new one to reconnect anyway). A server that offers
    :data:`PARK_KEY` gets the stream to write from its event loop.
    """
    _release_input(environ)
    response = sse_response(controller)
    parking = environ.get(PARK_KEY)
    if type(parking) is list:
        parking.append(response.response)  # the controller's iterator, passed through as it is
    return response


def _release_input(environ: Mapping[str, Any]) -> None:
    """Close gevent.pywsgi's reader of a request whose body was read whole; other servers: nothing."""
    body = environ.get("wsgi.input")
    if type(body).__module__ != "gevent.pywsgi" or getattr(body, "chunked_input", True):
        return
    rfile = getattr(body, "rfile", None)
    if rfile is not None and getattr(body, "position", 0) >= (getattr(body, "content_length", None) or 0):
        with contextlib.suppress(Exception):
            rfile.close()  # pywsgi then ends the connection after this response (its "rfile.closed" check)


def respond(response: Response, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Serve *response* to a WSGI server, as ``response(environ, start_response)`` does.

    A body held whole (a JSON reply, an error, a one-event SSE answer) or a
    stream (passed through) goes out as is: werkzeug's ``Response.__call__``
    copies the headers twice and wraps a body in closing and encoding
    iterators on every call, the largest cost of a small reply. Anything
    else (HEAD, bodiless statuses, close callbacks, a header werkzeug
    rewrites) goes through werkzeug.
    """
    if environ.get("REQUEST_METHOD") != "HEAD" and 200 <= response.status_code not in (204, 304):
        body: Any = response.response
        whole = type(body) is list and not response._on_close and all(type(chunk) is bytes for chunk in body)
        if whole or response.direct_passthrough:
            started = _start(response, start_response, body, sum(map(len, body)) if whole else None)
            if started is not None:
                return started
    return response(environ, start_response)


def _start(
    response: Response, start_response: StartResponse, body: Iterable[bytes], length: int | None
) -> Iterable[bytes] | None:
    """Start *response* with its headers as they are (and the *length* of a whole body); None if werkzeug must."""
    headers = response.headers.to_wsgi_list()
    if any(name.lower() in _REWRITTEN for name, _ in headers):
        return None
    if length is not None and all(name.lower() != "content-length" for name, _ in headers):
        headers.append(("Content-Length", str(length)))  # as werkzeug adds it to a whole body
    start_response(response.status, headers)
    return body


#: Headers werkzeug rewrites when it serves a response.
_REWRITTEN = frozenset(("location", "content-location"))


def vary_on_origin(response: Response) -> Response:
    """Add ``Origin`` to the response's ``Vary`` header (its answer depends on the Origin check)."""
    headers = response.headers
    if all(name.lower() != "vary" for name, _ in headers):  # (``in`` raises and catches a werkzeug error when absent)
        headers.add("Vary", "Origin")  # werkzeug's ``vary.add`` parses and rebuilds the header: 15x the cost
    else:
        response.vary.add("Origin")
    return response


def empty_response(status: int) -> Response:
    """A response without a body or a Content-Type (202, 204)."""
    response = Response(b"", status)
    del response.headers["Content-Type"]
    return response


def http_error(exc: HttpError) -> Response:
    """The HTTP response of a refused request: its status, headers and JSON-RPC error body."""
    response = json_response(exc.body(), exc.status)
    response.headers.extend(exc.headers)
    return response


def _gone(exc: EventGoneError) -> HttpError:
    why = (
        "that stream is unknown to this session" if exc.reason == "unknown" else "events after it are no longer stored"
    )
    return HttpError(
        410,
        INVALID_REQUEST,
        f"Gone: cannot resume after Last-Event-ID ({why}); open a new stream without Last-Event-ID "
        "(messages in between are lost)",
    )


def _backend_down(exc: BackendUnavailableError) -> HttpError:
    logger.warning("session backend unavailable: %s", exc)
    return HttpError(503, INTERNAL_ERROR, "Service Unavailable: session backend unavailable")


def _session_limit(exc: SessionLimitError) -> HttpError:
    """503 when the server holds all the sessions it may, 429 when the principal does; both with ``Retry-After``."""
    if exc.scope == "principal":
        status, code, what = 429, SERVER_ERROR, "Too Many Requests: this principal holds"
        then = "end one (DELETE) or retry later"
    else:
        status, code, what, then = 503, INTERNAL_ERROR, "Service Unavailable: the server holds", "retry later"
    return HttpError(
        status,
        code,
        f"{what} {exc.limit} sessions, its limit; {then}",
        headers={"Retry-After": str(exc.retry_after)},
        data={"scope": exc.scope, "limit": exc.limit, "retryAfter": exc.retry_after},
    )


#: What a failure while answering means to the client, first match wins.
_REFUSALS: tuple[tuple[type[Exception], Callable[[Any], HttpError]], ...] = (
    (HttpError, lambda exc: exc),
    (
        InvalidEventIdError,
        lambda exc: HttpError(400, INVALID_REQUEST, "Bad Request: Last-Event-ID is not an event id of this server"),
    ),
    (EventGoneError, _gone),
    (BackendUnavailableError, _backend_down),
    (SessionLimitError, _session_limit),
)


def refusal_for(exc: Exception) -> HttpError | None:
    """The HTTP refusal that *exc* stands for (:data:`_REFUSALS`), or None for an unexpected failure."""
    for kind, refusal in _REFUSALS:
        if isinstance(exc, kind):
            return refusal(exc)
    return None


def error_response_for(exc: Exception, request: Request) -> Response:
    """The answer to a request whose handling raised *exc*: a JSON-RPC error body, never a traceback.

    A werkzeug ``HTTPException`` (e.g. ``abort(401)`` in a principal
    callable) keeps its status and headers; anything unexpected is logged
    and answered 500.
    """
    refusal = refusal_for(exc)
    if refusal is not None:
        return http_error(refusal)
    if isinstance(exc, HTTPException):
        return _from_http_exception(exc, request)
    logger.error("MCP endpoint failed on %s %s", request.method, request.path, exc_info=exc)
    return http_error(HttpError(500, INTERNAL_ERROR, "Internal Server Error"))


def _from_http_exception(exc: HTTPException, request: Request) -> Response:
    """A werkzeug error as a JSON-RPC error body, its headers (e.g. WWW-Authenticate) kept."""
    if exc.response is not None:  # the application built its own response: respect it
        return exc.response  # type: ignore[return-value]
    status = exc.code if exc.code and exc.code >= 400 else 400
    skip = ("content-type", "content-length")
    headers = {name: value for name, value in exc.get_headers(request.environ) if name.lower() not in skip}
    return http_error(HttpError(status, SERVER_ERROR, f"{status} {exc.name}", headers=headers))


def client_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    """The socket of the request's client, if the WSGI server lets us reach it.

    werkzeug and gunicorn put it in the environ. gevent.pywsgi does not; its
    ``wsgi.input`` (a ``gevent.pywsgi.Input``) reads from ``rfile``, a
    buffered file over the socket, whose ``raw`` holds it. Anything else:
    ``None`` (the stream is still closed on overflow, just not cut at once).
    """
    for key in _SOCKET_KEYS:
        sock = environ.get(key)
        if isinstance(sock, socket.socket):
            return sock
    raw = getattr(getattr(environ.get("wsgi.input"), "rfile", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def socket_closer(environ: Mapping[str, Any]) -> Callable[[], None] | None:
    """A callback that shuts the client's socket down (both ways), or ``None`` if it cannot be found.

    Only ``shutdown``: the server owns the descriptor and closes it itself
    once the write it was blocked in fails.
    """
    sock = client_socket(environ)
    if sock is None:
        return None

    # gevent's socket would also wake a write blocked on it with EBADF, which pywsgi logs
    # with a traceback; shut the OS socket under it and the write fails with EPIPE, which
    # the server expects of a client that went away.
    os_socket = getattr(sock, "_sock", sock)

    def shut() -> None:
        with contextlib.suppress(OSError):
            os_socket.shutdown(socket.SHUT_RDWR)
        logger.info("slow SSE consumer disconnected")

    return shut
