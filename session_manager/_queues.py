"""The queue behind a stream: the C ``SimpleQueue``, with a doorbell for its reader under gevent.

Without gevent a stream's queue is :class:`queue.SimpleQueue`, implemented
in C. gevent's ``patch_all`` swaps in its cooperative ``SimpleQueue``, which
costs 3.3 KB per queue (three deques): 2.4 KB per idle stream of a gevent
worker. :class:`_DoorbellQueue` keeps the items in the C queue (166 bytes),
whose non-blocking calls never block a greenlet, and its one reader waits on
a gevent ``Waiter`` (the primitive gevent's own queues wake their getters
with) that a producer rings only while the reader waits.
"""

from __future__ import annotations

import queue
from typing import Any

__all__ = ["new_queue"]

#: The C SimpleQueue, whatever gevent patched into the ``queue`` module.
_NativeSimpleQueue: Any = __import__("_queue").SimpleQueue
#: gevent's Waiter and Timeout, and the native thread's ident (gevent patches ``_thread.get_ident``
#: to a greenlet's), imported with the first doorbell queue (gevent is optional).
_Waiter: Any = None
_Timeout: Any = None
_get_ident: Any = None


def new_queue() -> Any:
    """A queue for one reader and any number of producers, cooperative if gevent patched ``queue``."""
    global _Waiter, _Timeout, _get_ident
    if queue.SimpleQueue is _NativeSimpleQueue:
        return _NativeSimpleQueue()
    if _Waiter is None:
        from gevent import Timeout, monkey
        from gevent.hub import Waiter

        _Waiter, _Timeout = Waiter, Timeout
        _get_ident = monkey.get_original("_thread", "get_ident")
    return _DoorbellQueue()


class _DoorbellQueue:
    """C ``SimpleQueue`` items and one reader that waits on a gevent ``Waiter``: the calls a stream makes.

    The reader publishes its waiter, then looks at the queue once more before
    it waits, so a put that raced it is never missed; a producer that finds a
    waiter takes it and has the hub wake the reader (one test per put
    otherwise). A producer in another native thread (a thread pool's, say)
    wakes the reader's loop through gevent's thread-safe callback.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[Any] = _NativeSimpleQueue()
        self._waiter: Any = None

    def put(self, item: object) -> None:
        self._items.put(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            hub = waiter.hub
            if hub.thread_ident == _get_ident():
                hub.loop.run_callback(waiter.switch, None)
            else:  # a producer in another native thread: the loop may be asleep, wake it too
                hub.loop.run_callback_threadsafe(waiter.switch, None)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        items = self._items
        while not items.qsize():
            if not block:
                raise queue.Empty
            waiter = self._waiter = _Waiter()
            if items.qsize():  # put between the look and the waiter
                self._waiter = None
                break
            timer = None if timeout is None else _Timeout.start_new(timeout)
            try:
                waiter.get()
            except _Timeout as exc:
                if exc is not timer:
                    raise
                raise queue.Empty from None
            finally:
                self._waiter = None
                if timer is not None:
                    timer.close()
        return items.get_nowait()

    def get_nowait(self) -> Any:
        return self._items.get_nowait()

    def qsize(self) -> int:
        return self._items.qsize()

    def empty(self) -> bool:
        return self._items.empty()
