"""The example MCP server without Flask: ``session_manager.wsgi.McpApp`` on gevent's WSGI server.

Run it (http://127.0.0.1:8000/mcp, legacy clients at /sse)::

    python examples/wsgi_server.py [--host 127.0.0.1] [--port 8000]

The tools, resources and prompts are examples/server.py's (its
``NoteServer`` is imported); only the transport differs. McpApp is a plain
WSGI application, so any WSGI server runs it, e.g.
``gunicorn -k gevent 'examples.wsgi_server:create_app()'``.
"""

if __name__ == "__main__":
    # Patch before anything else is imported, and only when run as a script.
    from gevent import monkey

    monkey.patch_all()

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for `examples.server`

import argparse
import logging
import signal
from collections.abc import Callable, Iterable

from examples.server import SHUTDOWN_TIMEOUT, NoteServer, memory_managers
from session_manager.wsgi import McpApp

logger = logging.getLogger(__name__)

#: What the example serves, announced in the InitializeResult.
CAPABILITIES = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "prompts": {"listChanged": True},
    "logging": {},
}


def create_app() -> McpApp:
    """The WSGI application: the example's handler on McpApp, sessions in memory (resumable streams)."""
    server = NoteServer()
    app = McpApp(
        server.handle,  # handler(message, ctx), the same as under Flask
        managers=memory_managers(),  # or Redis managers, to share sessions between processes
        legacy_sse=True,  # also serve 2024-11-05 clients at /sse and /messages
        server_info={"name": "session-manager-wsgi-example", "version": "1.0.0"},
        capabilities=CAPABILITIES,
    )
    server.transport = app  # McpApp is a Notifier: set_note tells the note's subscribers
    return app


def serve(
    application: Callable[..., Iterable[bytes]], mcp: McpApp, description: str, argv: list[str] | None = None
) -> None:
    """Serve *application* (*mcp*, or a site it is mounted in) under gevent until SIGINT or SIGTERM.

    Then: no new connections, every MCP stream ends with a retry hint,
    running tool calls get a few seconds, the managers close.
    """
    import gevent
    import gevent.event

    from session_manager.pywsgi import WSGIServer  # gevent.pywsgi, streams written from the event loop

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    server = WSGIServer((args.host, args.port), application, log=None)
    server.start()
    logger.info("serving http://%s:%d/ (MCP at %s)", args.host, server.server_port, ", ".join(mcp.paths))
    stopped = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stopped.set)
    stopped.wait()
    server.close()  # no new connections
    mcp.close(timeout=SHUTDOWN_TIMEOUT)  # end every stream, wait for tool calls, close the managers
    server.stop(timeout=1)


if __name__ == "__main__":
    app = create_app()
    serve(app, app, __doc__.splitlines()[0])
