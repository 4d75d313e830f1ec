"""The example MCP app on gevent.pywsgi, plus admin routes, for tests/test_flask_gevent_fanout.py.

Run as ``python -m tests.flask_gevent_server --port N``. ``POST
/admin/broadcast?count=K`` broadcasts K numbered notifications;
``GET /admin/streams`` tells how many GET streams are registered.
"""

from gevent import monkey

monkey.patch_all()

import argparse
import resource

from flask import jsonify, request
from gevent.pywsgi import WSGIServer

from examples.server import create_app
from session_manager import InMemoryStreamSessionManager, SessionManagers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keepalive", type=float, default=15.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    streams = InMemoryStreamSessionManager()
    app = create_app(SessionManagers(streams=streams), keepalive=args.keepalive)
    blueprint = app.blueprints["mcp"]

    @app.post("/admin/broadcast")
    def broadcast():  # type: ignore[no-untyped-def]
        count = int(request.args["count"])
        for seq in range(count):
            blueprint.broadcast("notifications/test", {"seq": seq, "pad": "x" * 150})
        return jsonify(sent=count)

    @app.get("/admin/streams")
    def open_streams():  # type: ignore[no-untyped-def]
        return jsonify(open=len(streams))

    WSGIServer(("127.0.0.1", args.port), app, log=None, backlog=2048).serve_forever()


if __name__ == "__main__":
    main()
