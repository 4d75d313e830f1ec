"""What of a transport runs in this process (open streams, handler threads) and its shutdown.

Every stream a transport opens and every thread it starts for a request is
tracked here until it ends, so :meth:`Lifecycle.close` can end the streams
at once (with the ``retry`` hint, so clients reconnect), wait a bounded time
for the handlers, and only then close the managers. Under gevent's
monkey-patching ``threading.Thread`` is a greenlet, so the same code serves
both worlds. A request thread runs in a copy of the context variables of
the request that started it: a framework's request context (Flask's
``request`` and ``g``), tracing or logging context reach the handler.
The session requests running here are also kept by session and request id
(:attr:`Lifecycle.requests`), so a client's ``notifications/cancelled``, the
session's end or the shutdown cancels them. Where gevent patched
``threading``, a request's thread is a bare greenlet: a patched ``Thread``
takes seven times as long to start, a cost every streamed request pays.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from .._jsonrpc import INTERNAL_ERROR, HttpError
from ..base import SessionManagers
from ..stream import StreamController
from ._context import RequestContext, RunningRequests

__all__ = ["Lifecycle", "shutting_down", "too_busy"]

logger = logging.getLogger(__name__)


def shutting_down() -> HttpError:
    """503 once the transport is closing."""
    return HttpError(503, INTERNAL_ERROR, "Service Unavailable: the server is shutting down")


def too_busy(limit: int) -> HttpError:
    """503 with ``Retry-After`` when *limit* handlers already run in this process."""
    return HttpError(
        503,
        INTERNAL_ERROR,
        f"Service Unavailable: {limit} requests are being handled in this process; retry shortly",
        headers={"Retry-After": "1"},
    )


class _Worker(Protocol):
    """What runs a request: a ``threading.Thread``, or a :class:`_Greenlet` under gevent."""

    name: str

    def start(self) -> None: ...

    def join(self, timeout: float | None = None) -> Any: ...


def _worker(target: Callable[[], object], name: str) -> _Worker:
    """A daemon thread that will run *target*, or a greenlet where gevent patched ``threading``."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return _Greenlet(target, name)
    return threading.Thread(target=target, name=name, daemon=True)


class _Greenlet:
    """A bare greenlet started from gevent's event loop: a request's "thread" under gevent.

    gevent's ``Greenlet`` (what a patched ``Thread`` runs on) links,
    reports and records its spawner on every start, and the ``Thread``
    adds its locks: 63 us to start against 9 us here, for a request that
    takes about 200. Nothing here needs those. Log
    records name it as gevent names any greenlet (``Dummy-N``): naming it
    ``mcp-<method>`` as a thread would cost a ``current_thread()`` per request.
    """

    __slots__ = ("_greenlet", "_loop", "name")

    def __init__(self, target: Callable[[], object], name: str) -> None:
        from gevent import get_hub  # imported only where gevent patched threading: gevent is optional
        from greenlet import greenlet  # type: ignore[import-untyped]

        def run() -> None:
            try:
                target()
            except BaseException:  # it would reach the event loop; a thread's would end the thread
                logger.exception("MCP request greenlet %s failed", name)

        hub = get_hub()
        self._greenlet = greenlet(run, parent=hub)
        self._loop = hub.loop
        self.name = name

    def start(self) -> None:
        self._loop.run_callback(self._greenlet.switch)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the greenlet ended, at most *timeout* seconds (polled: only shutdown waits)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._greenlet.dead and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.005)


class Lifecycle:
    """The open streams and running request threads of one transport; refuses new ones once closing."""

    __slots__ = ("_closing", "_controllers", "_lock", "_running", "_workers", "max_handlers", "requests")

    def __init__(self, max_handlers: int | None = None, session_exists: Callable[[str], bool] | None = None) -> None:
        #: Most request threads running at once (None: no bound); one more gets 503.
        self.max_handlers = max_handlers
        #: The session requests running here, by session and request id: what cancels them (*session_exists*:
        #: how a waiting handler checks that its session did not end in another process).
        self.requests = RunningRequests(session_exists)
        self._lock = threading.Lock()
        self._closing = False
        self._controllers: set[StreamController] = set()
        self._workers: set[_Worker] = set()
        self._running: dict[str, int] = {}  # session key -> request threads running

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called: new requests get 503."""
        return self._closing

    def track(self, controller: StreamController) -> StreamController:
        """Track a new stream until it ends (503 once closing); returns it."""
        with self._lock:
            if self._closing:
                raise shutting_down()
            self._controllers.add(controller)
        controller.add_close_callback(lambda: self._forget(self._controllers, controller))
        return controller

    def start(
        self,
        key: str,
        name: str,
        run: Callable[..., object],
        *args: Any,
        bounded: bool = True,
        request: RequestContext | None = None,
    ) -> None:
        """Run ``run(*args)`` on a new thread (a greenlet under gevent) on behalf of session *key*.

        503 once closing, or while :attr:`max_handlers` threads run (with
        ``Retry-After``: a bound on what abandoned slow calls can hold). The
        thread is tracked until it ends (*bounded*: counted against
        :attr:`max_handlers`; threads bounded otherwise pass False), so
        :meth:`close` can wait for it, and while it runs the session is
        kept alive (:meth:`is_running`). The HTTP request may end first: a
        client that went away does not cancel its request. The thread sees
        the caller's context variables (a copy). A session request's context,
        *request*, is in :attr:`requests` while the thread runs: it can be
        cancelled.
        """

        def body() -> None:
            try:
                run(*args)
            except Exception:
                logger.exception("MCP request thread failed on %s", name)
            finally:
                self._finished(key, thread, request)

        context = contextvars.copy_context()
        thread = _worker(lambda: context.run(body), f"mcp-{name[:40]}")
        with self._lock:
            if self._closing:
                raise shutting_down()
            if bounded and self.max_handlers is not None and len(self._workers) >= self.max_handlers:
                raise too_busy(self.max_handlers)
            self._workers.add(thread)
            self._running[key] = self._running.get(key, 0) + 1
        if request is not None:
            self.requests.add(request)  # before the thread starts: a cancel sent right away finds it
        try:
            thread.start()
        except BaseException:  # no thread (the OS refused one): nothing of it stays behind
            self._finished(key, thread, request)
            raise

    def _finished(self, key: str, thread: _Worker, request: RequestContext | None) -> None:
        if request is not None:
            self.requests.discard(request)
        with self._lock:
            self._workers.discard(thread)
            left = self._running.pop(key) - 1
            if left:
                self._running[key] = left

    def is_running(self, key: str) -> bool:
        """Whether a request of the session is still being handled here: it keeps the session alive."""
        return key in self._running

    def _forget(self, tracked: set[Any], item: Any) -> None:
        with self._lock:
            tracked.discard(item)

    def stop_accepting(self) -> None:
        """From now on new requests, streams and threads get 503 (the first step of :meth:`close`)."""
        with self._lock:
            self._closing = True

    def close(self, managers: SessionManagers, timeout: float) -> bool:
        """Shut down: cancel requests, end streams, wait up to *timeout* seconds for the handlers, close *managers*.

        Running requests are cancelled (``ctx.cancelled`` turns true: a
        handler that asks finishes early). Open streams end at once, each
        with its ``retry`` hint so clients reconnect (elsewhere, or here
        after a restart); streams already ending (draining their last
        frames) finish doing so. Then the ended streams are given until the
        same deadline to be released (their close callbacks, e.g.
        unregistering them, run before the managers close). Returns True if
        no handler was left running. Idempotent.
        """
        if not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        with self._lock:
            self._closing = True
            controllers = list(self._controllers)
            workers = list(self._workers)
        self.requests.cancel_all()
        for controller in controllers:
            if not controller.closed:  # one already ending (a response, a listen result) delivers what it has
                controller.close()
        deadline = time.monotonic() + timeout
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = [thread for thread in workers if thread in self._workers]  # a worker leaves the set as it ends
        if left:
            logger.warning(
                "%d MCP handler(s) still running at shutdown: %s", len(left), ", ".join(t.name for t in left)
            )
        while self._controllers and time.monotonic() < deadline:
            time.sleep(0.01)
        managers.close()
        return not left
