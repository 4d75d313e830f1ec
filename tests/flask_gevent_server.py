"""The example MCP app on gevent.pywsgi, plus admin routes, for tests/test_flask_gevent_fanout.py.

Run as ``python -m tests.flask_gevent_server --port N``. ``POST
/admin/broadcast?count=K`` broadcasts K numbered notifications;
(``&pad=B``: each padded with B bytes, 150 by default); ``GET
/admin/streams`` tells how many GET streams are registered. ``--parking``
serves it on ``session_manager.pywsgi`` instead of ``gevent.pywsgi``;
``--middleware`` wraps the app in a middleware that counts (``GET
/admin/middleware``). SIGTERM stops the server (``stop(0.5)``) without
ending the streams first, and it prints how many are still registered.
"""

from gevent import monkey

monkey.patch_all()

import argparse
import resource
import signal
import sys
from typing import Any

import gevent
import gevent.event
from flask import jsonify, request
from gevent.pywsgi import WSGIServer

from examples.server import create_app
from session_manager import InMemoryStreamSessionManager, SessionManagers
from session_manager.pywsgi import WSGIServer as ParkingServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keepalive", type=float, default=15.0)
    parser.add_argument("--parking", action="store_true", help="session_manager.pywsgi: streams written from the loop")
    parser.add_argument("--middleware", action="store_true", help="a WSGI middleware wraps every response body")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    streams = InMemoryStreamSessionManager()
    app = create_app(SessionManagers(streams=streams), keepalive=args.keepalive)
    blueprint = app.blueprints["mcp"]

    @app.post("/admin/broadcast")
    def broadcast():  # type: ignore[no-untyped-def]
        count, pad = int(request.args["count"]), int(request.args.get("pad", 150))
        for seq in range(count):
            blueprint.broadcast("notifications/test", {"seq": seq, "pad": "x" * pad})
        return jsonify(sent=count)

    @app.get("/admin/streams")
    def open_streams():  # type: ignore[no-untyped-def]
        return jsonify(open=len(streams))

    wrapped = Wrapped(app.wsgi_app)

    @app.get("/admin/middleware")
    def middleware():  # type: ignore[no-untyped-def]
        return jsonify(chunks=wrapped.chunks, closed=wrapped.closed)

    if args.middleware:
        app.wsgi_app = wrapped  # type: ignore[method-assign]
    server_class = ParkingServer if args.parking else WSGIServer
    server = server_class(("127.0.0.1", args.port), app, log=None, backlog=2048)
    server.start()
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    stop.wait()
    server.stop(timeout=0.5)  # the streams are not ended first: the server cuts them
    print(f"after stop: {len(streams)} streams registered", file=sys.stderr, flush=True)


class Wrapped:
    """A WSGI middleware that counts the chunks of GET streams it passes on, and the streams it closed (PEP 3333)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.chunks = 0
        self.closed = 0

    def __call__(self, environ: Any, start_response: Any) -> Any:
        body = self.app(environ, start_response)
        if environ["REQUEST_METHOD"] != "GET" or environ["PATH_INFO"] != "/mcp":
            return body
        return self.stream(body)

    def stream(self, body: Any) -> Any:
        try:
            for chunk in body:
                self.chunks += 1
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            self.closed += 1


if __name__ == "__main__":
    main()
