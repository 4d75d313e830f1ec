"""The example MCP server mounted in a Django site: one WSGI application, Django for the site, McpApp for MCP.

Run it (the Django page at http://127.0.0.1:8000/, MCP at /mcp, legacy clients at /sse)::

    python examples/django_app.py [--host 127.0.0.1] [--port 8000]

A single-file Django project, configured in code. MCP is mounted with a WSGI
dispatcher in front of Django rather than a Django view: MCP streams are
long-lived SSE responses, and handing McpApp the request's WSGI environ
lets the server write them as they come, with nothing in between (no
request/response conversion, no middleware buffering a stream). Django
keeps every other URL, its middleware and its views.
"""

if __name__ == "__main__":
    # Patch before anything else is imported, and only when run as a script.
    from gevent import monkey

    monkey.patch_all()

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for `examples.*`

from collections.abc import Callable, Iterable
from typing import Any

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse
from django.urls import path

from examples.wsgi_server import create_app as create_mcp_app
from examples.wsgi_server import serve
from session_manager.wsgi import McpApp

settings.configure(
    DEBUG=False,
    SECRET_KEY="example-only-not-secret",
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "[::1]"],
    ROOT_URLCONF=__name__,  # the urlpatterns below
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
)
django.setup()


def index(request: HttpRequest) -> HttpResponse:
    """A page of the Django site."""
    return HttpResponse("Hello from Django. MCP clients connect to /mcp.\n", content_type="text/plain")


urlpatterns = [path("", index)]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def create_app() -> tuple[WSGIApp, McpApp]:
    """The site's WSGI application, and the McpApp mounted in it (for fan-out and shutdown)."""
    mcp = create_mcp_app()  # examples/wsgi_server.py's McpApp: the example's tools, /mcp, /sse, /messages
    site = get_wsgi_application()

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The MCP URLs go to McpApp, everything else to Django."""
        app = mcp if environ.get("PATH_INFO", "") in mcp.paths else site
        return app(environ, start_response)

    return application, mcp


if __name__ == "__main__":
    application, mcp = create_app()
    serve(application, mcp, __doc__.splitlines()[0])
