"""The example app as the gunicorn end-to-end tests serve it (tests/test_redis_e2e.py).

``gunicorn -k gevent -w 3 'tests.gunicorn_app:create_app()'`` with ``MCP_REDIS_URL``
set: examples/server.py's app on Redis managers (default prefix) with the test
suite's small liveness bounds, and one test-only addition, an ``X-Worker-Pid``
response header, so a test can tell which worker served each request.
"""

import os

from flask import Flask, Response

from examples.server import REDIS_URL_ENV, redis_managers
from examples.server import create_app as create_example

from .conftest_redis import TEST_HEARTBEAT, TEST_LIVENESS_TTL

WORKER_HEADER = "X-Worker-Pid"


def create_app() -> Flask:
    """The factory each gunicorn worker calls after the fork."""
    url = os.environ[REDIS_URL_ENV]
    managers = redis_managers(url, liveness_ttl=TEST_LIVENESS_TTL, heartbeat_interval=TEST_HEARTBEAT)
    app = create_example(managers, redis_url=url, keepalive=0.5)

    @app.after_request
    def tag(response: Response) -> Response:
        response.headers[WORKER_HEADER] = str(os.getpid())
        return response

    return app
