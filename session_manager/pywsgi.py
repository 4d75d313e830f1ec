"""gevent's WSGI server, with long-lived streams written from the event loop: a drop-in for ``gevent.pywsgi``.

An open SSE stream on ``gevent.pywsgi`` keeps a greenlet blocked in its
body, with the request's handler, environ and headers: about 15 KB per idle
stream. With this server, once a GET stream's or a listen stream's headers
are out, the request's greenlet ends and the stream is written from the
event loop (``_parking``): about 4 KB per idle stream, and a broadcast
costs no greenlet switch per stream. Everything else is gevent.pywsgi's
own; a body that is not one of this library's streams is served as usual.

Every request also costs the server less: its headers are parsed without
the ``email`` package (:mod:`._request_head`, stricter about malformed
lines), and a response's head leaves in one write with its first body
chunk, not in a write of its own.

    from gevent import monkey; monkey.patch_all()
    from session_manager.pywsgi import WSGIServer

    WSGIServer(("127.0.0.1", 8000), app).serve_forever()

Parked streams are not greenlets of the server's pool: a pool size bounds
the requests being answered, not the streams held open.
:meth:`WSGIServer.stop` waits for the parked streams too (end them first,
e.g. with ``McpApp.close``, so their clients get the retry hint).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from gevent import pywsgi
from gevent.socket import socket as gevent_socket

from ._parking import ParkingLot, parkable
from ._request_head import RequestHeaders, simple_head
from .wsgi._responses import PARK_KEY

__all__ = ["StreamingHandler", "WSGIServer"]

#: A first body chunk up to this size leaves in the same write as the response's head.
_COALESCE_MAX = 65536
#: The class of pywsgi's access log when there is none (``log=None``).
_NO_LOG = getattr(pywsgi, "_NoopLog", None)
#: Environ keys pywsgi sets from the request line and body, never from a same-named header.
_NOT_HEADERS = ("CONTENT_TYPE", "CONTENT_LENGTH")


class StreamingHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
    """A ``gevent.pywsgi`` handler that parks a long-lived stream's socket once its headers are sent.

    A TLS connection is not parked (its bytes must go through the TLS
    socket, which one greenlet at a time may use): it is served as usual.
    """

    socket: Any  # the connection's (gevent) socket, None once handle() is done with it
    result: Any  # the body the application returned, while it is served
    headers: RequestHeaders
    provided_date: Any  # the Date header the application set, if any (start_response)
    status: Any  # the status line, latin-1 bytes once start_response ran; a str after a failed write
    code: int  # the response's status code (negated after a failed write, as pywsgi does)

    MessageClass = RequestHeaders  # pywsgi calls it with (rfile, 0) to read a request's headers

    def handle_one_request(self) -> bool | tuple[str, bytes] | None:
        """Serve one request; a plain HTTP/1.1 head already in the buffer is taken at once (else: pywsgi's reading)."""
        rfile = self.rfile
        if rfile.closed:
            return None
        try:
            head = simple_head(rfile.peek())
        except OSError:
            return None  # the connection is gone, as pywsgi treats a failed read of the request line
        if head is None or len(head[2]) >= pywsgi.MAX_REQUEST_LINE:
            return super().handle_one_request()  # type: ignore[no-any-return]
        self.command, self.path, self.requestline, self.headers, size = head
        rfile.read(size)
        self.request_version = "HTTP/1.1"
        self.response_length = 0
        length = self.headers.get("content-length")
        self.content_length = None if length is None else int(length)  # plain digits (simple_head)
        self.close_connection = (self.headers.get("connection") or "").lower() == "close"
        self.environ = self.get_environ()
        self.application = self.server.application
        self.handle_one_response()
        return None if self.close_connection or self.rfile.closed else True

    def _headers(self) -> Iterator[tuple[str, str]]:
        """The environ's ``HTTP_*`` entries, as pywsgi makes them (a name with ``_`` is dropped: it could pose as another)."""
        for name, value in self.headers.fields:
            if "_" not in name:
                key = name.replace("-", "_").upper()
                if key not in _NOT_HEADERS:
                    yield "HTTP_" + key, value

    def finalize_headers(self) -> None:
        if self.provided_date is None:  # the Date header, formatted once a second rather than per response
            self.response_headers.append((b"Date", _http_date()))
            self.provided_date = True
        super().finalize_headers()

    def log_request(self) -> None:
        """Log the request, unless the server has no access log (``log=None``): pywsgi formats the line anyway."""
        if type(self.server.log) is not _NO_LOG:
            super().log_request()

    def _write_with_headers(self, data: bytes) -> None:
        """Send the head with the first chunk in one write (pywsgi sends the head alone: a syscall, a packet more)."""
        if type(data) is not bytes or not data or len(data) > _COALESCE_MAX:
            super()._write_with_headers(data)  # pywsgi's way: the head alone, then the data (or its error)
            return
        self.headers_sent = True
        self.finalize_headers()
        # status and headers are latin-1 bytes already (start_response encoded them)
        head = b"HTTP/1.1 %s\r\n%s\r\n" % (self.status, b"".join([b"%s: %s\r\n" % item for item in self.response_headers]))
        try:
            if self.response_use_chunked:
                self._sendall(b"%s%x\r\n%s\r\n" % (head, len(data), data))
            else:
                self._sendall(head + data)
        except OSError:
            if not self.response_length:
                self.headers_sent = False  # nothing left: an error answer can still go out with its own head
            raise

    def _sendall(self, data: bytes) -> None:
        """Write *data* whole; one ``send`` when the socket takes it all (gevent's ``sendall`` prepares chunks first).

        ``response_length`` counts what left, also when a write fails part
        way (pywsgi then closes the connection rather than answer again).
        """
        sent = 0
        try:
            sent = self.socket.send(data)
            if sent < len(data):
                self.socket.sendall(memoryview(data)[sent:])
        except OSError as exc:
            self.response_length += sent
            self.status = f"socket error: {exc}"  # as pywsgi records a failed write
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[PARK_KEY] = []  # the app puts a long-lived stream here (wsgi._responses)
        return environ

    def _parkable(self) -> bool:
        """Whether this response is one of the library's long-lived streams, as the app returned it, alone on its connection.

        Not when middleware wrapped or replaced the body (it gets its say and its ``close()``), when
        the request's body was not read whole (pywsgi still reads it; ``long_lived_response`` closed
        the reader otherwise), on TLS, or for anything but a 200.
        """
        parking: Any = self.environ.get(PARK_KEY)
        return (
            bool(parking)
            and self.result is parking[0]
            and self.code == 200
            and self.rfile.closed
            and type(self.socket) is gevent_socket
            and parkable(self.result)
        )

    def process_result(self) -> None:
        if not self._parkable():
            super().process_result()
            return
        frames = self.result
        sock = self.socket
        self.write(b"")  # the status line and headers
        self.socket = None  # ours now: handle() neither reads nor closes it,
        sock._io_refs += 1  # and the server's close() leaves it open, as for a makefile() (see socket.close)
        self.close_connection = True
        self.result = None  # not closed by run_application: the stream goes on
        _lot_of(self.server).park(sock, frames, chunked=self.response_use_chunked)


def _lot_of(server: Any) -> ParkingLot:
    """The lot of *server*'s parked streams, made on first use (any pywsgi server, gunicorn's included)."""
    lot: ParkingLot | None = getattr(server, "parking_lot", None)
    if lot is None:
        lot = server.parking_lot = ParkingLot()
    return lot


_date: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The current HTTP date, as pywsgi formats it, made again only when the second changes."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, pywsgi.format_date_time(now))
    return _date[1]


class WSGIServer(pywsgi.WSGIServer):  # type: ignore[misc]
    """``gevent.pywsgi.WSGIServer`` with :class:`StreamingHandler`."""

    handler_class = StreamingHandler

    def stop(self, timeout: float | None = None) -> None:
        """Stop as gevent's server does, then wait up to *timeout* for the parked streams (then cut them)."""
        super().stop(timeout)
        lot: ParkingLot | None = getattr(self, "parking_lot", None)
        if lot is not None:
            lot.join(self.stop_timeout if timeout is None else timeout)
            lot.close()
