"""Long-lived streams written from gevent's event loop instead of a greenlet each.

A WSGI server gives every open response a greenlet blocked in the body's
``next()``: its saved stack, its handler, environ and parsed headers, about
15 KB per idle stream under gevent.pywsgi. A :class:`ParkingLot` takes the
socket of a stream that outlives its request once the response headers are
out, and the request's greenlet ends. Then:

- a producer's put rings the stream's doorbell (``_queues``), which queues
  the stream for the lot's one *pump* greenlet; the pump takes whatever
  frames are queued, in batches, and writes them with one non-blocking
  ``send`` each;
- a socket that cannot take a whole write gets a greenlet of its own until
  it drains (a slow reader; its queue overflows as before if it never does);
- one *ticker* greenlet per keep-alive interval pings the streams that were
  silent for that long, instead of a timer per stream;
- the socket's read watcher notices a client that hangs up at once;
- a stream's end (the retry hint, the last chunk, the close callbacks,
  which may block on a backend) runs in a greenlet of its own.

Everything here runs in the thread of the lot's hub, like the server.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.hub import Waiter, get_hub
from gevent.pool import Group

from .sse import PING
from .stream import _OPEN, _Frames

__all__ = ["ParkingLot", "join_all", "parkable"]

logger = logging.getLogger(__name__)

#: Chunks (each up to 64 frames) a stream writes per turn of the pump; then the others' turn.
_TURN = 4
#: Ends of streams (``_Parked.ending``): the client went away, or the server ended the stream.
_GONE, _ENDED = "gone", "ended"


def parkable(frames: object) -> bool:
    """Whether *frames* can be written from the event loop: a controller's iterator whose queue has a doorbell."""
    return type(frames) is _Frames and hasattr(frames._controller._queue, "_waiter")


class ParkingLot:
    """The parked streams of one server, written by one pump greenlet in the server's hub."""

    __slots__ = ("__weakref__", "_ending", "_ends", "_pump", "_ready", "_tickers", "_waiter", "_workers", "hub")

    def __init__(self) -> None:
        _LOTS.add(self)
        self.hub = get_hub()
        self._ready: deque[_Parked] = deque()
        self._waiter: Any = None  # the pump's, while it waits for a ready stream
        self._pump: Any = None
        self._tickers: dict[float, set[_Parked]] = {}  # keep-alive interval: its open streams
        self._ends = Group()  # greenlets ending a stream or draining a slow socket
        self._ending: set[_Parked] = set()  # streams whose end has not run yet
        self._workers = Group()  # the pump and the tickers

    def park(self, sock: socket.socket, frames: _Frames, *, chunked: bool) -> None:
        """Write the rest of the stream *frames* to *sock* (its response headers are out) from now on."""
        parked = _Parked(self, sock, frames, chunked)
        keepalive = frames._controller._keepalive
        streams = self._tickers.get(keepalive)
        if streams is None:
            streams = self._tickers[keepalive] = set()
            self._workers.spawn(self._tick, keepalive, streams)
        streams.add(parked)
        sock._read_event.start(parked.readable)  # type: ignore[attr-defined]
        if self._pump is None:
            self._pump = self._workers.spawn(self._run_pump)
        self.ring(parked)

    def __len__(self) -> int:
        """Parked streams not over yet (open, or ending)."""
        return sum(len(streams) for streams in self._tickers.values()) + len(self._ending)

    def ring(self, parked: _Parked) -> None:
        """Queue *parked* for the pump (from a doorbell's hub callback, or the pump itself)."""
        self._ready.append(parked)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            self.hub.loop.run_callback(waiter.switch, None)  # after the rings already scheduled

    def _run_pump(self) -> None:
        ready = self._ready
        while True:
            while ready:
                parked = ready.popleft()
                try:
                    parked.flush()
                except Exception:
                    logger.exception("a parked SSE stream failed; closing it")
                    parked.end(_GONE)
            waiter = self._waiter = Waiter()
            waiter.get()

    def _tick(self, keepalive: float, streams: set[_Parked]) -> None:
        """Ping every stream of this interval that wrote nothing for *keepalive* seconds."""
        while streams:
            gevent.sleep(keepalive / 2)
            for parked in list(streams):
                if parked.wrote:
                    parked.wrote = False
                elif not parked.busy and parked.ending is None:
                    parked.send(PING)
        if self._tickers.get(keepalive) is streams:
            del self._tickers[keepalive]

    def forget(self, parked: _Parked) -> None:
        """*parked* is ending: no pings, no reads; it counts until its end ran (:meth:`_Parked.release`)."""
        self._tickers.get(parked.frames._controller._keepalive, set()).discard(parked)
        self._ending.add(parked)
        parked.sock._read_event.stop()  # type: ignore[attr-defined]

    def spawn(self, function: Any, *args: Any) -> None:
        """Run *function* in a greenlet that :meth:`join` waits for."""
        self._ends.spawn(function, *args)

    def join(self, timeout: float | None, tick: Callable[[], object] | None = None) -> bool:
        """Wait up to *timeout* for the parked streams to end; False if some were still open (they are cut).

        *tick* runs about once a second while waiting (a gunicorn worker tells its arbiter it is alive).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self) or len(self._ends):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self._ends.join(timeout=1.0 if left is None else min(left, 1.0))
            gevent.sleep(0.01)  # streams closed a moment ago: the pump's turn to end them
            if tick is not None:
                tick()
        else:
            return True
        for streams in list(self._tickers.values()):
            for parked in list(streams):
                parked.end(_GONE)
        self._ends.join(timeout=1)  # the ends of cut streams write nothing: they run now
        self._ends.kill(timeout=1)  # ends blocked on clients that do not read
        for parked in list(self._ending):  # killed before they ran: their end, here
            parked.release()
        return False

    def close(self) -> None:
        """Stop the pump and the tickers (after :meth:`join`); the lot can park streams again later."""
        self._workers.kill(block=True, timeout=1)
        self._pump = self._waiter = None
        self._ready.clear()
        self._tickers.clear()


#: Every lot of this process, for :func:`join_all`.
_LOTS: weakref.WeakSet[ParkingLot] = weakref.WeakSet()


def join_all(timeout: float | None, tick: Callable[[], object] | None = None) -> None:
    """Wait up to *timeout* in all for the parked streams of every lot of this process, then stop the lots."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for lot in list(_LOTS):
        lot.join(None if deadline is None else max(0.0, deadline - time.monotonic()), tick)
        lot.close()


class _Parked:
    """One parked stream: its socket, its frames, and whether a write or its end is under way."""

    __slots__ = ("busy", "chunked", "ending", "frames", "hub", "lot", "raw", "sock", "wrote")

    def __init__(self, lot: ParkingLot, sock: socket.socket, frames: _Frames, chunked: bool) -> None:
        frames._block = False
        self.lot = lot
        self.hub = lot.hub  # read by the doorbell, with switch()
        self.sock = sock
        self.raw: socket.socket = getattr(sock, "_sock", sock)  # the OS socket, non-blocking under gevent
        self.frames = frames
        self.chunked = chunked
        self.wrote = True  # since the last tick
        self.busy = False  # a greenlet is writing the rest of a write
        self.ending: str | None = None

    def switch(self, _: object) -> None:
        """The doorbell rang (a frame was queued): the pump's turn."""
        self.lot.ring(self)

    def readable(self) -> None:
        """The client sent something: the end of its connection (anything else is dropped)."""
        try:
            data = self.raw.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.end(_GONE)

    def flush(self) -> None:
        """Write what is queued, up to a turn's worth; wait for the doorbell if that was all."""
        if self.busy or self.ending is not None:
            return
        frames = self.frames
        controller = frames._controller
        if controller._state is not _OPEN:
            # Its last frames and callbacks may block: not in the pump. A slow consumer is cut.
            self.end(_GONE if controller._overflowed else _ENDED)
            return
        chunks = []
        for _ in range(_TURN):
            chunk = next(frames)
            if not chunk:
                queue: Any = controller._queue  # a doorbell queue (see parkable)
                queue._waiter = self  # nothing queued: ring us on the next put
                break
            chunks.append(chunk)
        else:
            self.lot.ring(self)  # there may be more: after the other streams
        if chunks:
            self.send(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def framed(self, data: bytes) -> bytes:
        """*data* as the response body carries it: one chunk of chunked encoding, or as it is (HTTP/1.0)."""
        return b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data

    def send(self, data: bytes) -> None:
        """Write *data* without blocking; a greenlet writes what the socket could not take."""
        data = self.framed(data)
        try:
            sent = self.raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.end(_GONE)
            return
        self.wrote = True
        if sent < len(data):
            self.busy = True
            self.lot.spawn(self._send_rest, memoryview(data)[sent:])

    def _send_rest(self, rest: memoryview) -> None:
        sent = False
        try:
            self.sock.sendall(rest)
            sent = True
        except OSError:
            pass  # the client is gone (or a server's stop killed this greenlet: the stream ends too)
        finally:
            self.busy = False
            if self.ending is not None:  # end() came while this write was under way
                self.lot.spawn(self._end, self.ending)
            elif sent:
                self.lot.ring(self)
            else:
                self.end(_GONE)

    def end(self, why: str) -> None:
        """End the stream: its last frames if the server *ended* it, then its callbacks; once."""
        if self.ending is not None:
            return
        self.ending = why
        self.lot.forget(self)
        if not self.busy:
            self.lot.spawn(self._end, why)
        elif why is _GONE:  # wake the writer blocked on a client that is gone
            with contextlib.suppress(OSError):
                self.raw.shutdown(socket.SHUT_RDWR)

    def _end(self, why: str) -> None:
        frames = self.frames
        try:
            if why is _ENDED:
                frames._block = True
                for chunk in frames:  # the frames a drain still owes, the retry hint
                    self.sock.sendall(self.framed(chunk))
                if self.chunked:
                    self.sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        finally:
            self.release()

    def release(self) -> None:
        """The stream is over: its close callbacks, and the socket closed (once the server let go of it too)."""
        if self not in self.lot._ending:
            return
        self.lot._ending.discard(self)
        frames = self.frames
        frames.close()
        queue: Any = frames._controller._queue
        queue._waiter = None  # it may still name this stream: no cycle left for the collector
        self.sock._decref_socketios()  # type: ignore[attr-defined]
