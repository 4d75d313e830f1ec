"""gevent's WSGI server, with long-lived streams written from the event loop: a drop-in for ``gevent.pywsgi``.

An open SSE stream on ``gevent.pywsgi`` keeps a greenlet blocked in its
body, with the request's handler, environ and headers: about 15 KB per idle
stream. With this server, once a GET stream's or a listen stream's headers
are out, the request's greenlet ends and the stream is written from the
event loop (``_parking``): about 4 KB per idle stream, and a broadcast
costs no greenlet switch per stream. Everything else is gevent.pywsgi's
own; a body that is not one of this library's streams is served as usual.

    from gevent import monkey; monkey.patch_all()
    from session_manager.pywsgi import WSGIServer

    WSGIServer(("127.0.0.1", 8000), app).serve_forever()

Parked streams are not greenlets of the server's pool: a pool size bounds
the requests being answered, not the streams held open.
:meth:`WSGIServer.stop` waits for the parked streams too (end them first,
e.g. with ``McpApp.close``, so their clients get the retry hint).
"""

from __future__ import annotations

from typing import Any

from gevent import pywsgi
from gevent.socket import socket as gevent_socket

from ._parking import ParkingLot, parkable
from .wsgi._responses import PARK_KEY

__all__ = ["StreamingHandler", "WSGIServer"]


class StreamingHandler(pywsgi.WSGIHandler):  # type: ignore[misc]
    """A ``gevent.pywsgi`` handler that parks a long-lived stream's socket once its headers are sent.

    A TLS connection is not parked (its bytes must go through the TLS
    socket, which one greenlet at a time may use): it is served as usual.
    """

    socket: Any  # the connection's (gevent) socket, None once handle() is done with it
    result: Any  # the body the application returned, while it is served

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
        parking = self.environ.get(PARK_KEY)
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
