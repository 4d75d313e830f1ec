"""gunicorn settings for the example MCP server on several gevent workers, sessions in Redis.

    MCP_REDIS_URL=redis://127.0.0.1:6379/0 gunicorn -c examples/gunicorn.conf.py 'examples.server:create_app()'

Command-line options override these (``-w 2``, ``-b 0.0.0.0:8000``...).
No sticky routing is needed: every worker reads sessions from Redis, and a
notification sent by any worker (or by examples/notify.py) reaches the
stream wherever it is held.
"""

import os

REDIS_URL_ENV = "MCP_REDIS_URL"  # as in examples/server.py (not imported: keep the arbiter free of the app)

# gevent (gunicorn's gevent_pywsgi worker, monkey-patched before it imports
# the app), with session_manager's handler: a request gets a greenlet, and an
# open SSE stream, once its headers are out, is written from the event loop
# (about 4 KB per idle stream instead of a greenlet and its request).
worker_class = "session_manager.gunicorn.GeventWorker"
workers = 4  # about one per core
bind = "127.0.0.1:8000"

# Requests being answered at once per worker (open streams do not count: they
# hold a connection, so raise the open-file limit, ulimit -n, with the streams).
worker_connections = 2000

# A gevent worker tells the arbiter it is alive from its event loop, not per
# request, so long-lived streams never trip `timeout`: it only catches a
# worker whose loop is blocked (e.g. CPU-bound code), which is then killed.
timeout = 30
# How long a graceful stop or reload (SIGTERM, SIGHUP) waits for requests in
# flight. Streams never finish by themselves: post_worker_init below ends them
# at once, so this only bounds ordinary requests (a slow tool call). Idle
# keep-alive connections also hold a gevent worker, for up to `keepalive`.
graceful_timeout = 10
# Idle keep-alive connections between requests (raise it behind a load balancer).
keepalive = 5


def on_starting(server):  # type: ignore[no-untyped-def]
    """Refuse several workers without Redis: each would keep its own sessions."""
    if server.cfg.workers > 1 and not os.environ.get(REDIS_URL_ENV):
        # gunicorn prints a RuntimeError raised here and exits with status 1.
        raise RuntimeError(
            f"{server.cfg.workers} workers need shared sessions: set {REDIS_URL_ENV}=redis://HOST:PORT/DB. "
            "With in-memory sessions each worker knows only its own: requests of a session that land on "
            "another worker get 404 and its notifications are lost. (Or run one worker: -w 1.)"
        )


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """On a graceful stop or reload (SIGTERM), shut this worker's MCP transport down at once.

    Streams never finish by themselves: left alone, the worker waits out
    graceful_timeout, is killed, and its streams still count as open (409 on
    a client's new GET elsewhere) until their liveness keys expire.
    ``McpBlueprint.close`` ends every stream (GET and POST) with a ``retry``
    hint, so clients reconnect to another worker and resume there from the
    shared event store; it waits for running tool calls (bounded below
    graceful_timeout), then closes the managers (Redis threads and
    connections). The worker exits as soon as its requests are done.
    """
    import signal

    import gevent

    blueprint = worker.wsgi.blueprints["mcp"]

    def close() -> None:
        # The effective setting (--graceful-timeout on the command line wins over
        # this file), less 2 s for closing the managers and exiting before the
        # arbiter's SIGKILL.
        timeout = max(0.0, worker.cfg.graceful_timeout - 2)
        worker.log.info("Graceful stop: MCP streams end now, tool calls get up to %g s", timeout)
        if not blueprint.close(timeout):
            worker.log.warning("Graceful stop: tool calls still running after %g s", timeout)

    def on_sigterm(signum, frame):  # type: ignore[no-untyped-def]
        worker.alive = False  # what gunicorn's own handler does: stop accepting, drain
        gevent.spawn(close)  # logging and Redis I/O: not inside the signal handler

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    """Whatever stopped the worker (SIGINT, SIGQUIT, the end of a graceful stop), release the managers."""
    blueprint = getattr(getattr(worker, "wsgi", None), "blueprints", {}).get("mcp")
    if blueprint is not None:
        blueprint.close(timeout=0)  # idempotent: a no-op after a graceful stop
