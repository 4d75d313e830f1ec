"""The example MCP app on gevent.pywsgi, plus admin routes, for tests/test_flask_gevent_fanout.py.

Run as ``python -m tests.flask_gevent_server --port N``. ``POST
/admin/broadcast?count=K`` broadcasts K numbered notifications;
(``&pad=B``: each padded with B bytes, 150 by default); ``GET
/admin/streams`` tells how many GET streams are registered. ``--parking``
serves it on ``session_manager.pywsgi`` instead of ``gevent.pywsgi``.
"""

from gevent import monkey

monkey.patch_all()

import argparse
import resource

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

    server_class = ParkingServer if args.parking else WSGIServer
    server_class(("127.0.0.1", args.port), app, log=None, backlog=2048).serve_forever()


if __name__ == "__main__":
    main()
