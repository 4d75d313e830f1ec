"""The streams a transport serves: POST response streams, resumption, slow clients.

:class:`PostStream` is the SSE stream that answers one POST. With an event
store every message on it is stored and carries an id, so a client whose
connection dropped gets the rest (the response included) with
``GET`` + ``Last-Event-ID``; while the handler still runs in this process the
resuming connection takes the stream over and continues live.

:func:`client_socket` finds the client's socket in the WSGI environ, so a
stream whose reader stopped reading can be cut at once (a write blocked on
that client then fails instead of holding the connection open).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import SessionManagerError
from ..events import EventStore, new_post_stream_id, replay_frames
from ..sse import encode_event, encode_id, encode_message
from ..stream import StreamController

__all__ = ["PostStream", "client_socket", "replay_only", "socket_closer", "stored_reply"]

logger = logging.getLogger(__name__)

#: Environ keys under which WSGI servers expose the client's socket:
#: werkzeug's development server, gunicorn (sync/gthread workers, then its gevent pywsgi worker).
_SOCKET_KEYS = ("werkzeug.socket", "gunicorn.socket", "gunicorn.sock")


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

    def shut() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        logger.info("slow SSE consumer disconnected")

    return shut


def replay_only(store: EventStore, key: str, stream_id: str, last_event_id: str, retry: int | None) -> list[bytes]:
    """The whole body of a resume of a stream this process no longer feeds: the replay, then ``retry``.

    The client polls again after *retry* if the response was not in it
    (the handler runs in another process, or has not answered yet).
    """
    frames = replay_frames(store, key, stream_id, last_event_id, retry)
    if retry is not None:
        frames.append(encode_event(retry=retry))
    return frames


def stored_reply(store: EventStore, key: str, reply: str, retry: int | None) -> StreamController:
    """A POST answered at once over SSE: a POST stream whose only message is the reply (primed, stored)."""
    controller = StreamController(retry=retry)
    PostStream(key, controller, store).finish(reply)
    return controller


class PostStream:
    """The SSE stream of one POST: the handler's messages, then its response.

    Without a store it only feeds its controller. With one, it opens the
    stream's log (the first event is the priming event: the log's id and
    ``retry``), stores every message and sends it with its id, one lock
    making store order the wire order. :meth:`take_over` hands the stream
    to a resuming client's new connection under that lock: the replay up to
    now, then live, with no gap and no duplicate.
    """

    __slots__ = ("_controller", "_done", "_lock", "_store", "key", "stream_id")

    def __init__(self, key: str, controller: StreamController, store: EventStore | None) -> None:
        self.key = key
        self._store = store
        self._controller = controller
        self._lock = threading.Lock()
        self._done = False
        self.stream_id: str | None = None
        if store is not None:
            self.stream_id = new_post_stream_id()
            controller.prime([encode_event("", id=store.open(key, self.stream_id), retry=controller.retry)])

    def send(self, data: str) -> bool:
        """Emit one message; True if it was queued to the client or stored for a resume."""
        with self._lock:
            return self._send(data)

    def _send(self, data: str) -> bool:
        frame = encode_message(data)
        event_id = None
        if self._store is not None:
            assert self.stream_id is not None
            try:
                event_id = self._store.append(self.key, self.stream_id, data)
            except SessionManagerError as exc:  # a backend outage loses resumability, not the message
                logger.warning("could not store an event of a POST stream: %s", exc)
        queued = self._controller.enqueue_frame(frame if event_id is None else encode_id(event_id) + frame)
        return queued or event_id is not None

    def finish(self, reply: str) -> None:
        """Send the response; the stream ends once its client has it."""
        with self._lock:
            self._send(reply)
            self._end()

    def end(self) -> None:
        """The handler is over (whatever happened): end the stream after what is queued."""
        with self._lock:
            self._end()

    def _end(self) -> None:
        self._done = True
        self._controller.close(drain=True)

    def take_over(self, controller: StreamController, last_event_id: str) -> None:
        """Continue the stream on *controller*: the events after *last_event_id*, then live.

        Raises what :func:`~session_manager.events.replay_frames` raises
        (nothing changes then). The connection it replaces is closed.
        """
        assert self._store is not None and self.stream_id is not None
        with self._lock:
            controller.prime(replay_frames(self._store, self.key, self.stream_id, last_event_id, controller.retry))
            replaced, self._controller = self._controller, controller
            if self._done:
                controller.close(drain=True)
        replaced.close()

    def __repr__(self) -> str:
        return f"<PostStream {self.stream_id} done={self._done}>"
