"""StreamController: one SSE stream, a bounded queue drained by a generator.

The queue is a :class:`queue.SimpleQueue` with the bound kept by the
controller: it is the documented, C-implemented queue of the standard
library, about ten times faster to fill and twenty times smaller than a
:class:`queue.Queue`, whose Python-level condition variables would dominate
fan-out cost and per-stream memory. Under gevent the items stay in the C
queue and the reader waits on a doorbell (see ``_queues``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from ._queues import new_queue
from ._validate import positive_int
from .errors import MessageTooLargeError
from .sse import PING, encode_event, encode_message

__all__ = ["DEFAULT_KEEPALIVE", "DEFAULT_MAXSIZE", "DEFAULT_MAX_BYTES", "FRAME_ROOM", "StreamController", "counted_above"]

logger = logging.getLogger(__name__)

#: Frames a stream may hold before its reader counts as a slow consumer.
DEFAULT_MAXSIZE = 1024
#: Bytes of frames a stream may hold before its reader counts as a slow consumer.
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
#: Seconds of silence after which an idle stream sends a comment ping.
DEFAULT_KEEPALIVE = 15.0
#: Bytes a frame may gain after a sender checked its message: an ``id`` field (an event id
#: is at most 64 characters) and a stream's ``frame_overhead`` (an event name, up to 59
#: bytes). Checks made before a frame is built leave this much room.
FRAME_ROOM = 128


def counted_above(max_bytes: int, count: int) -> int:
    """The size over which an item is counted byte by byte against *max_bytes*: smaller ones are bounded by *count*.

    A quarter of the byte budget at most goes to items bounded by the count
    alone, so the hot path (short messages) takes no lock and no sum; every
    byte-bounded buffer here (streams, event logs) splits its budget this way.
    """
    return max_bytes // (4 * count)


_DEFAULT_SMALL = counted_above(DEFAULT_MAX_BYTES, DEFAULT_MAXSIZE)
#: Most frames joined into one chunk handed to the WSGI server.
_MAX_BATCH = 64

_OPEN, _DRAINING, _CLOSED = 0, 1, 2
# A reader's phases (see _Frames).
_NEW, _PRIMING, _LIVE, _RETRY, _OVER = "new", "priming", "live", "retry", "over"
_WAKE = object()  # queue item that only wakes the reader up


class _Large:
    """A queued frame counted against the byte budget: the reader gives its bytes back.

    It refers to the frame (one frame is shared by every stream of a broadcast), never copies it.
    """

    __slots__ = ("frame",)

    def __init__(self, frame: bytes) -> None:
        self.frame = frame


class StreamController:
    """One long-lived SSE stream.

    Producers call :meth:`enqueue` (or :meth:`enqueue_frame` with a frame
    encoded once for many streams); it never blocks. The consumer iterates
    the controller, usually as the body of a WSGI response, and gets
    ``bytes`` chunks of one or more complete SSE frames, a comment ping
    every *keepalive* seconds while idle, and the end of iteration after
    :meth:`close`.

    The queue holds at most *maxsize* frames and *max_bytes* bytes (give or
    take one frame per sender racing on the same stream). A consumer that
    falls that far behind is a slow consumer: the stream is closed (and
    logged) rather than allowed to grow the server, *on_overflow* runs (e.g.
    to shut the client's socket, so a write blocked on it fails at once),
    and other streams are unaffected. With an event store the client
    resumes from where it stopped reading. A frame larger than *max_bytes*
    can never be queued: :meth:`enqueue_frame` raises
    :class:`~session_manager.MessageTooLargeError` and the stream is left
    as it was.

    Bytes are counted without a lock on the hot path: frames up to
    ``max_bytes / (4 * maxsize)`` bytes are bounded by the frame count alone
    (a quarter of *max_bytes* at most); larger ones are counted one by one,
    under the lock, against *max_bytes*. So a stream never holds more than
    1.25 times *max_bytes*, and one message of up to *max_bytes* always
    reaches a reader that keeps up.

    Frames handed to :meth:`prime` before reading starts (a priming event,
    a replay) come first, even if the stream is closed before it is read
    (at shutdown, say): its client still gets an event id to resume from.
    With *retry* (milliseconds), a stream the server closes ends with a
    ``retry`` field telling the client when to reconnect.

    Close callbacks (*on_close* and :meth:`add_close_callback`) run exactly
    once when the stream is over: the reader finished, the reader was
    abandoned (``GeneratorExit`` when the client goes away), or the stream
    was closed before anyone read it.
    """

    __slots__ = (
        "_callbacks",
        "_keepalive",
        "_large",
        "_lock",
        "_max_bytes",
        "_maxsize",
        "_on_overflow",
        "_overflowed",
        "_preamble",
        "_queue",
        "_retry",
        "_small",
        "_started",
        "_state",
    )

    #: Bytes a subclass adds to every frame it is offered (an event name, say): fan-out
    #: checks a frame against ``max_bytes - frame_overhead`` before offering it.
    frame_overhead: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that changes how frames are queued gets every frame that way,
        # short ones from the in-memory manager included.
        # (Its own, a base's or a mixin's: whatever its MRO resolves.)
        if cls.enqueue_frame is not StreamController.enqueue_frame and "_enqueue_short" not in cls.__dict__:
            cls._enqueue_short = cls.enqueue_frame  # type: ignore[method-assign]

    def __init__(
        self,
        *,
        maxsize: int = DEFAULT_MAXSIZE,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keepalive: float = DEFAULT_KEEPALIVE,
        retry: int | None = None,
        on_close: Callable[[], object] | None = None,
        on_overflow: Callable[[], object] | None = None,
    ) -> None:
        positive_int(maxsize, "maxsize")
        positive_int(max_bytes, "max_bytes")
        if not isinstance(keepalive, (int, float)) or not 0 < keepalive <= threading.TIMEOUT_MAX:
            raise ValueError(
                f"keepalive must be a positive, finite number of seconds (at most "
                f"threading.TIMEOUT_MAX), got {keepalive!r}"
            )
        if retry is not None and (type(retry) is not int or retry < 0):
            raise ValueError(f"retry must be a non-negative int (milliseconds), got {retry!r}")
        for name, callback in (("on_close", on_close), ("on_overflow", on_overflow)):
            if callback is not None and not callable(callback):
                raise TypeError(f"{name} must be callable, not {type(callback).__name__}")
        self._queue: queue.SimpleQueue[object] = new_queue()  # or its gevent stand-in
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        # Frames this big or smaller: the frame count bounds them (the defaults share one int object).
        defaults = max_bytes == DEFAULT_MAX_BYTES and maxsize == DEFAULT_MAXSIZE
        self._small = _DEFAULT_SMALL if defaults else counted_above(max_bytes, maxsize)
        self._large = 0  # bytes of larger frames queued, under the lock
        self._keepalive = float(keepalive)
        self._state = _OPEN
        self._started = False
        self._overflowed = False
        self._lock = threading.Lock()
        self._retry = retry
        self._callbacks: list[Callable[[], object]] | None = [on_close] if on_close else []
        self._preamble: list[bytes] = []
        self._on_overflow = on_overflow

    # -- producer side -----------------------------------------------------

    def enqueue(self, data: str) -> bool:
        """Queue one message (a serialized JSON-RPC message) as an SSE event.

        Returns ``True`` if queued, ``False`` if the stream is closed or
        this message made it overflow (the stream is then closed). Raises
        :class:`~session_manager.MessageTooLargeError` for a message whose
        frame exceeds *max_bytes*.
        """
        return self.enqueue_frame(encode_message(data))

    def enqueue_frame(self, frame: bytes) -> bool:
        """Queue an already encoded SSE frame; see :meth:`enqueue`."""
        if self._state is not _OPEN:
            return False
        if len(frame) > self._small:
            return self._enqueue_large(frame)
        queue_ = self._queue  # _enqueue_short, inlined: this is every direct send's path
        if queue_.qsize() < self._maxsize:
            queue_.put(frame)
            return True
        return self._overflow(f"{self._maxsize} frames unread")

    def _enqueue_short(self, frame: bytes) -> bool:
        """:meth:`enqueue_frame` of a frame the caller measured: ``len(frame) <= short_frame``.

        Fan-out measures a frame once for all its streams, so no delivery
        pays the length check.
        """
        if self._state is not _OPEN:
            return False
        queue_ = self._queue
        if queue_.qsize() < self._maxsize:
            queue_.put(frame)
            return True
        return self._overflow(f"{self._maxsize} frames unread")

    @property
    def short_frame(self) -> int:
        """Longest frame bounded by the frame count alone; longer ones are counted byte by byte."""
        return self._small - self.frame_overhead

    def _enqueue_large(self, frame: bytes) -> bool:
        """Queue a frame counted against the byte budget (a wrapper tells the reader to give its bytes back)."""
        size = len(frame)
        self.check_size(size)
        with self._lock:
            room = self._large + size <= self._max_bytes
            fits = room and self._queue.qsize() < self._maxsize
            if fits:
                self._large += size
                self._queue.put(_Large(frame))
        if fits:
            return True
        return self._overflow(f"more than {self._max_bytes} bytes unread" if not room else f"{self._maxsize} frames unread")

    def check_size(self, size: int) -> None:
        """Raise :class:`~session_manager.MessageTooLargeError` if a frame of *size* bytes could never be queued."""
        if size > self._max_bytes:
            raise MessageTooLargeError(size, self._max_bytes)

    def _overflow(self, why: str) -> bool:
        """Close the stream of a slow consumer (once) and run *on_overflow*; always ``False``."""
        with self._lock:
            if self._overflowed:
                return False
            self._overflowed = True
        logger.warning("slow SSE consumer: %s, closing the stream", why)
        self.close()
        if self._on_overflow is not None:
            _run_callback(self._on_overflow)
        return False

    def prime(self, frames: list[bytes]) -> None:
        """Send *frames* before anything queued: a priming event, a replay.

        Must be called before the stream is read. Unlike queued frames they
        do not count against *maxsize*: a replay is bounded by the event
        store's buffer instead.
        """
        if self._started:
            raise RuntimeError("prime() must be called before the stream is read")
        self._preamble.extend(frames)

    # -- lifecycle ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the stream overflowed."""
        return self._state is not _OPEN

    @property
    def overflowed(self) -> bool:
        """True if the stream was closed because its consumer fell behind."""
        return self._overflowed

    @property
    def retry(self) -> int | None:
        """Reconnection delay (ms) sent to the client when the server ends the stream, if any."""
        return self._retry

    @property
    def maxsize(self) -> int:
        """Frames the stream may hold before its consumer counts as slow."""
        return self._maxsize

    @property
    def max_bytes(self) -> int:
        """Bytes of frames the stream may hold before its consumer counts as slow."""
        return self._max_bytes

    def close(self, *, drain: bool = False) -> None:
        """End the stream; idempotent and safe from any thread or greenlet.

        By default the reader stops at once and frames still queued are
        dropped (with an event store the client gets them back by resuming;
        a controller with *retry* tells it when, in its last frame). Frames
        given to :meth:`prime` are not queued: a stream closed before it is
        read still sends them (then the retry hint) before it ends. With
        ``drain=True`` frames queued so far are delivered first (how a POST
        stream ends after its response).
        """
        with self._lock:
            if self._state is _CLOSED or (drain and self._state is _DRAINING):
                return
            self._state = _DRAINING if drain else _CLOSED
            release_now = not (drain or self._started)
        self._queue.put(_WAKE)
        if release_now:
            self._release()

    def add_close_callback(self, callback: Callable[[], object]) -> None:
        """Run *callback* once when the stream is over (at once if it already is)."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        with self._lock:
            callbacks = self._callbacks
            if callbacks is not None:
                callbacks.append(callback)
                return
        _run_callback(callback)

    def _release(self) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            _run_callback(callback)

    # -- consumer side -----------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        """The consumer's iterator; iterate a controller once."""
        return _Frames(self)

    def _unwrap(self, chunk: list[Any]) -> list[bytes]:
        """The frames of *chunk*, large ones unwrapped, their bytes given back to the budget."""
        frames: list[bytes] = []
        large = 0
        for item in chunk:
            frame = item.frame if isinstance(item, _Large) else item
            if frame is not item:
                large += len(frame)
            frames.append(frame)
        if large:
            with self._lock:
                self._large -= large
        return frames

    def __repr__(self) -> str:
        state = ("open", "draining", "closed")[self._state]
        return f"<StreamController {state} queued={self._queue.qsize()}/{self.maxsize}>"


class _Frames:
    """The consumer's iterator over a controller: chunks of frames, pings while idle, then the end.

    An iterator class rather than a generator: a WSGI server's loop calls
    its ``__next__`` directly, so a stream blocked in ``get`` nests one
    interpreter frame less on the C stack (under gevent that stack is
    saved with every idle stream's greenlet), and ``close()`` before the
    first ``next()`` still ends the stream (a generator would skip its
    cleanup). The stream is over, and its close callbacks run, when the
    iterator is exhausted, closed, garbage collected, or a ``next()``
    raises.
    """

    __slots__ = ("_block", "_controller", "_phase", "_preamble")

    def __init__(self, controller: StreamController) -> None:
        self._controller = controller
        self._phase = _NEW
        self._preamble: list[bytes] = []
        #: False for a stream written from the event loop (see ``_parking``): a ``next()``
        #: that finds nothing queued returns ``b""`` at once instead of waiting.
        self._block = True

    def __iter__(self) -> _Frames:
        return self

    def __next__(self) -> bytes:
        if self._phase is not _LIVE:
            return self._not_live()
        c = self._controller
        q = c._queue
        try:
            while c._state is not _CLOSED:
                waiting = q.qsize()  # the only reader: that many items are there to take
                if waiting == 1 and not c._large:
                    # The usual wake-up, one short frame: no deadline to compute, no list, no join.
                    # (A large frame is counted before it is queued, so _large shows it here.)
                    item = q.get_nowait()
                    if item is _WAKE:
                        continue
                    if c._state is _CLOSED:
                        break
                    return item  # type: ignore[return-value]
                chunk: list[bytes] = []
                if not waiting:
                    if c._state is _DRAINING:
                        return self._end(retry=False)
                    try:
                        item = q.get(self._block, c._keepalive)
                    except queue.Empty:
                        if c._state is not _OPEN:
                            continue  # closing: the loop's checks end it, after the frames a drain still owes
                        return PING if self._block else b""
                    if item is not _WAKE:
                        chunk.append(item)  # type: ignore[arg-type]
                    waiting = q.qsize()
                if waiting:
                    get_nowait = q.get_nowait
                    for _ in range(min(waiting, _MAX_BATCH)):
                        item = get_nowait()
                        if item is not _WAKE:
                            chunk.append(item)  # type: ignore[arg-type]
                if c._large:  # counted before it was queued: a large frame may be in this chunk
                    chunk = c._unwrap(chunk)
                if c._state is _CLOSED:
                    break
                if chunk:
                    return chunk[0] if len(chunk) == 1 else b"".join(chunk)
        except BaseException:
            self._finish()
            raise
        return self._end(retry=True)

    def _not_live(self) -> bytes:
        """The first frames (primed ones, in batches), the retry hint at the end, or the end itself."""
        c = self._controller
        if self._phase is _NEW:
            c._started = True
            self._preamble, c._preamble = c._preamble, []
            self._phase = _PRIMING
        if self._phase is _PRIMING:
            preamble = self._preamble
            # Closed while they go out: stop between batches. Closed before the first
            # read (at shutdown, say; close() released it then): they all go out, so
            # the client has an event id to resume from.
            if preamble and not (c._state is _CLOSED and c._callbacks is not None):
                batch, self._preamble = preamble[:_MAX_BATCH], preamble[_MAX_BATCH:]
                return b"".join(batch)
            self._preamble = []
            self._phase = _LIVE
            return next(self)
        if self._phase is _RETRY:
            self._phase = _OVER
            return encode_event(retry=c._retry)
        self._finish()
        raise StopIteration

    def _end(self, *, retry: bool) -> bytes:
        """End the stream; a stream the server closed says when to come back, if it has a retry hint."""
        if retry and self._controller._retry is not None:
            self._phase = _RETRY
            return self._not_live()
        self._finish()
        raise StopIteration

    def _finish(self) -> None:
        self._phase = _OVER
        c = self._controller
        c._state = _CLOSED
        c._release()

    def close(self) -> None:
        """The server is done with the response (or the client went away): end the stream.

        Also after the last frame (the retry hint): the stream is over only
        once its callbacks ran. The controller is closed first, so a reader
        blocked in another thread wakes at once.
        """
        self._controller.close()
        self._finish()

    def __del__(self) -> None:
        if self._phase is not _NEW:
            self._finish()


def _run_callback(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("stream close callback %r failed", callback)
