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

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable

from .._jsonrpc import Message
from ..errors import EventGoneError, SessionManagerError
from ..events import EventStore, Replay, event_frame, new_post_stream_id, replay_frames
from ..sse import encode_event, encode_id, encode_message
from ..stream import FRAME_ROOM, StreamController
from ._context import RequestContext
from ._handler import Handler, OnSuccess, invoke, send_reply

__all__ = ["FOLLOW_FOR", "FOLLOW_INTERVAL", "PostStream", "PostStreams", "follow", "has_response", "resume_elsewhere", "stored_reply"]

logger = logging.getLogger(__name__)


#: Seconds between two reads of the log of a POST stream that another process feeds.
FOLLOW_INTERVAL = 0.1
#: Longest a resume follows such a stream before it ends with ``retry`` (the client comes back).
FOLLOW_FOR = 30.0


def resume_elsewhere(store: EventStore, key: str, stream_id: str, last_event_id: str) -> Replay:
    """The events after *last_event_id* of a POST stream this process does not feed (finished, or fed by another).

    Raises what :meth:`~session_manager.EventStore.replay` raises, and
    :class:`~session_manager.EventGoneError` for an id of another stream.
    """
    replay = store.replay(key, last_event_id)
    if replay.stream_id != stream_id:
        raise EventGoneError(last_event_id, "unknown")
    return replay


def has_response(events: Iterable[tuple[str, str]]) -> bool:
    """Whether the response (the stream's last message) is among *events*."""
    return any(_is_response(message) for _, message in events)


def _is_response(message: str) -> bool:
    """Whether a stored message is a JSON-RPC response (its top level has an id and no method)."""
    parsed = json.loads(message)
    return isinstance(parsed, dict) and "id" in parsed and "method" not in parsed


def follow(
    store: EventStore, key: str, last_event_id: str, controller: StreamController, stop: Callable[[], bool]
) -> None:
    """Feed *controller* the events another process stores on a POST stream, until its response.

    The body of a resume that reached a process other than the one running
    the handler: it reads the stream's log every :data:`FOLLOW_INTERVAL`
    seconds and ends once the response went out, or after
    :data:`FOLLOW_FOR` seconds (then the client resumes again), or when the
    client leaves, the log goes (the session ended) or *stop* says so.
    """
    last, deadline = last_event_id, time.monotonic() + FOLLOW_FOR
    try:
        while not controller.closed and not stop() and time.monotonic() < deadline:
            for event_id, message in store.replay(key, last).events:
                controller.enqueue_frame(event_frame(event_id, message))
                last = event_id
                if _is_response(message):
                    return
            time.sleep(FOLLOW_INTERVAL)
    except SessionManagerError as exc:  # the log is gone, or the backend is down: the client learns on resuming
        logger.info("stopped following a POST stream: %s", exc)
    finally:
        controller.close(drain=True)


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

    __slots__ = ("_controller", "_done", "_lock", "_store", "first", "first_sent", "key", "stream_id")

    def __init__(self, key: str, controller: StreamController, store: EventStore | None) -> None:
        self.key = key
        self._store = store
        self._controller = controller
        self._lock = threading.Lock()
        self._done = False
        #: The first message sent on the stream, and whether it was the response (set once, under the lock).
        self.first: tuple[str, bool] | None = None
        #: Set when :attr:`first` is, for a caller that waits for it (None: nobody does).
        self.first_sent: threading.Event | None = None
        self.stream_id: str | None = None
        if store is not None:
            self.stream_id = new_post_stream_id()
            controller.prime([encode_event("", id=store.open(key, self.stream_id), retry=controller.retry)])

    def send(self, data: str) -> bool:
        """Emit one message; True if it was queued to the client or stored for a resume.

        Raises :class:`~session_manager.MessageTooLargeError` (nothing sent
        or stored) for a message the stream could never hold.
        """
        with self._lock:
            frame = self._frame(data)
            if self.first is None:
                self._set_first(data, False)
            return self._send(data, frame)

    def _frame(self, data: str) -> bytes:
        """The SSE frame of *data*, checked against what the stream can hold (with the id a store adds)."""
        frame = encode_message(data)
        self._controller.check_size(len(frame) + FRAME_ROOM)
        return frame

    def _send(self, data: str, frame: bytes) -> bool:
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
        """Send the response; the stream ends once its client has it.

        Raises :class:`~session_manager.MessageTooLargeError` (nothing sent,
        the stream still open) for a response the stream could never hold.
        """
        with self._lock:
            frame = self._frame(reply)
            if self.first is None:
                self._set_first(reply, True)
            self._send(reply, frame)
            self._end()

    def _set_first(self, data: str, is_reply: bool) -> None:
        self.first = (data, is_reply)
        if self.first_sent is not None:
            self.first_sent.set()

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

    __slots__ = ("_followers", "_lock", "_open")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], PostStream] = {}
        #: The one connection following each stream fed elsewhere (:func:`follow`).
        self._followers: dict[tuple[str, str], StreamController] = {}

    def follower(self, key: str, stream_id: str, controller: StreamController) -> None:
        """Make *controller* the one following stream *stream_id* here: the one it replaces ends (its thread with it).

        A client resuming again is the same client on a new connection, so
        the stream is followed once per process however often it is resumed.
        """
        slot = (key, stream_id)
        with self._lock:
            replaced, self._followers[slot] = self._followers.get(slot), controller
        controller.add_close_callback(lambda: self._unfollow(slot, controller))
        if replaced is not None:
            replaced.close()

    def _unfollow(self, slot: tuple[str, str], controller: StreamController) -> None:
        with self._lock:
            if self._followers.get(slot) is controller:
                del self._followers[slot]

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
            send_reply(post.finish, message, invoke(handler, message, ctx, record)[0])
        finally:
            self.end(post)
