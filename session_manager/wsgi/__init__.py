"""The MCP transports as a plain WSGI application, for any WSGI server or framework (no Flask).

:class:`McpApp` serves Streamable HTTP (2025-03-26 and later) on one URL
and, optionally, the legacy HTTP+SSE transport (2024-11-05) on two more;
it is also the :class:`Notifier` for every session it serves. It needs
werkzeug only (the ``wsgi`` extra; ``flask`` includes it).

::

    from session_manager.pywsgi import WSGIServer  # gevent.pywsgi, streams written from the event loop
    from session_manager.wsgi import METHOD_NOT_FOUND, JsonRpcError, McpApp

    def handler(message, ctx):
        method = message.get("method")
        if method in ("initialize", "ping"):
            return {}  # the app completes the InitializeResult from its options
        if "id" in message and method:  # notifications and client responses need no answer
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    app = McpApp(handler, legacy_sse=True, server_info={"name": "demo", "version": "1"})
    WSGIServer(("127.0.0.1", 8000), app).serve_forever()  # /mcp, and /sse + /messages

Modules, one job each: ``_app`` (the WSGI entry and Streamable HTTP),
``_legacy_sse`` (the HTTP+SSE URLs), ``_handshake`` (the protocol steps of the
session era), ``_post_stream`` (a POST's SSE stream and its resumption),
``_handler`` (calling the handler), ``_lifecycle`` (streams, threads,
shutdown), ``_checks`` and ``_responses`` (HTTP in and out), ``_options``,
``_context``, ``_session_ids``.
"""

try:
    import werkzeug  # noqa: F401 - imported first, so that a missing extra is named
except ImportError as exc:
    from .._extras import missing_extra

    raise missing_extra("session_manager.wsgi", "wsgi", exc) from exc

from .._jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    JsonRpcError,
)
from ..notifier import Notifier
from ._app import McpApp
from ._client_requests import DEFAULT_REQUEST_TIMEOUT, REQUEST_TIMEOUT, ClientRequestError
from ._context import RequestContext
from ._handler import Handler
from ._handshake import (
    DEFAULT_PROTOCOL_VERSION,
    LATEST_PROTOCOL_VERSION,
    LEGACY_PROTOCOL_VERSION,
    SUPPORTED_PROTOCOL_VERSIONS,
)
from ._legacy_sse import LegacySse
from ._options import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_ALLOWED_ORIGINS,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_RETRY,
    McpOptions,
    Principal,
)

__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "DEFAULT_ALLOWED_ORIGINS",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_PROTOCOL_VERSION",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_RETRY",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "LATEST_PROTOCOL_VERSION",
    "LEGACY_PROTOCOL_VERSION",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "REQUEST_TIMEOUT",
    "SUPPORTED_PROTOCOL_VERSIONS",
    "ClientRequestError",
    "Handler",
    "JsonRpcError",
    "LegacySse",
    "McpApp",
    "McpOptions",
    "Notifier",
    "Principal",
    "RequestContext",
]
