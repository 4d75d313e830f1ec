"""The SSE stream that answers one POST: the handler's messages, then its response; resuming it.

:class:`PostStream` feeds one POST's stream. With an event store every
message on it is stored and carries an id, so a client whose connection
dropped gets the rest (the response included) with ``GET`` +
``Last-Event-ID``; while the handler still runs in this process the
resuming connection takes the stream over and continues live
(:class:`PostStreams` finds it). :meth:`PostStreams.run` is what the
request's own thread does: call the handler, send its reply, end the stream.
"""

from __future__ import annotations

import logging
import threading

from .._jsonrpc import Message
from ..errors import SessionManagerError
from ..events import EventStore, new_post_stream_id, replay_frames
from ..sse import encode_event, encode_id, encode_message
from ..stream import StreamController
from ._context import RequestContext
from ._handler import Handler, OnSuccess, invoke

__all__ = ["PostStream", "PostStreams", "replay_only", "stored_reply"]

logger = logging.getLogger(__name__)


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

    def close_early(self, retry: int | None) -> bool:
        """End the client's connection now, with a ``retry`` hint; what follows is stored for its resume.

        False (nothing changes) without a store, whose log is what the
        client resumes from, or once the handler is over.
        """
        if self._store is None:
            return False
        with self._lock:
            if self._done:
                return False
            controller = self._controller
            hint = controller.retry if retry is None else retry
            if hint is not None:
                controller.enqueue_frame(encode_event(retry=hint))
            controller.close(drain=True)
        return True

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


class PostStreams:
    """The POST streams of this process a client can resume (those with a stored log), by session and stream id."""

    __slots__ = ("_lock", "_open")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], PostStream] = {}

    def add(self, post: PostStream) -> None:
        """Make *post* resumable while its handler runs (a no-op without a store)."""
        if post.stream_id is not None:
            with self._lock:
                self._open[post.key, post.stream_id] = post

    def get(self, key: str, stream_id: str) -> PostStream | None:
        """The live stream *stream_id* of session *key*, or None (ended, or fed by another process)."""
        with self._lock:
            return self._open.get((key, stream_id))

    def end(self, post: PostStream) -> None:
        """The handler is over: end *post* after what is queued, and stop offering it for resumes."""
        post.end()
        if post.stream_id is not None:
            with self._lock:
                self._open.pop((post.key, post.stream_id), None)

    def run(
        self, post: PostStream, handler: Handler, message: Message, ctx: RequestContext, record: OnSuccess | None
    ) -> None:
        """The body of a request's own thread: run the handler, send its reply on *post*, end the stream."""
        try:
            post.finish(invoke(handler, message, ctx, record)[0])
        finally:
            self.end(post)
