"""A gunicorn worker whose open streams are written from the event loop: ``-k session_manager.gunicorn.GeventWorker``.

gunicorn's ``gevent_pywsgi`` worker with :mod:`session_manager.pywsgi`'s
handler: a GET or listen stream costs about 4 KB instead of a blocked
greenlet with its request (about 15 KB). On a graceful stop the worker
waits up to ``graceful_timeout`` for the streams as it does for requests;
end them when the worker is told to stop (a ``worker_int``/SIGTERM hook
calling ``McpApp.close``) so their clients get the retry hint.
"""

from __future__ import annotations

import time

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer  # type: ignore[import-untyped]

from ._parking import join_all
from .pywsgi import StreamingHandler, WSGIServer

__all__ = ["GeventWorker"]


class _Handler(StreamingHandler, PyWSGIHandler):  # type: ignore[misc]
    """gunicorn's pywsgi handler (its access log and environ keys), parking long-lived streams."""


class _Server(WSGIServer, PyWSGIServer):  # type: ignore[misc]
    """gunicorn's pywsgi server, whose stop() waits for its parked streams."""


class GeventWorker(GeventPyWSGIWorker):  # type: ignore[misc]
    """``gevent_pywsgi`` with streams written from the event loop."""

    server_class = _Server
    wsgi_handler = _Handler
    #: When the worker was told to stop (``alive`` turned False): the arbiter kills it graceful_timeout later.
    _stopping_since: float | None = None

    @property
    def alive(self) -> bool:
        """gunicorn's flag: False once the worker must stop (set by its signal handlers, or a config's)."""
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        self._alive = value
        if not value and self._stopping_since is None:
            self._stopping_since = time.monotonic()

    def run(self) -> None:
        """Serve until told to stop, then give the parked streams what is left of ``graceful_timeout``."""
        super().run()
        since = self._stopping_since if self._stopping_since is not None else time.monotonic()
        join_all(max(0.0, self.cfg.graceful_timeout - (time.monotonic() - since) - 0.5), tick=self.notify)
