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
session's end or the shutdown cancels them.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

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
        self._workers: set[threading.Thread] = set()
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
        """Run ``run(*args)`` on a new thread (greenlet under gevent) on behalf of session *key*.

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
        thread = threading.Thread(target=context.run, args=(body,), name=f"mcp-{name[:40]}", daemon=True)
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

    def _finished(self, key: str, thread: threading.Thread, request: RequestContext | None) -> None:
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
        left = [thread for thread in workers if thread.is_alive()]
        if left:
            logger.warning(
                "%d MCP handler(s) still running at shutdown: %s", len(left), ", ".join(t.name for t in left)
            )
        while self._controllers and time.monotonic() < deadline:
            time.sleep(0.01)
        managers.close()
        return not left
