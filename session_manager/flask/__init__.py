"""The MCP transports for Flask: thin blueprints over :class:`session_manager.wsgi.McpApp`.

:class:`McpBlueprint` serves Streamable HTTP (2025-03-26 and later) on one
URL; :class:`LegacySseBlueprint` serves the legacy HTTP+SSE transport
(2024-11-05) on two. Given the same managers (``mcp.legacy_sse_blueprint()``)
they share sessions, the handler and fan-out. Outside Flask, serve the
McpApp itself (:mod:`session_manager.wsgi`).

::

    from flask import Flask
    from session_manager.flask import METHOD_NOT_FOUND, JsonRpcError, McpBlueprint

    def handler(message, ctx):
        method = message.get("method")
        if method in ("initialize", "ping"):
            return {}  # the blueprint completes the InitializeResult from its options
        if "id" in message and method:  # notifications and client responses need no answer
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    app = Flask(__name__)
    mcp = McpBlueprint(handler, server_info={"name": "demo", "version": "1"})
    app.register_blueprint(mcp)                         # Streamable HTTP: /mcp
    app.register_blueprint(mcp.legacy_sse_blueprint())  # legacy HTTP+SSE: GET /sse, POST /messages
    mcp.broadcast("notifications/tools/list_changed")   # reaches clients of both
"""

try:
    import flask  # noqa: F401 - imported first, so that a missing extra is named
    import werkzeug  # noqa: F401
except ImportError as exc:
    from .._extras import missing_extra

    raise missing_extra("session_manager.flask", "flask", exc) from exc

from ..wsgi import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_ALLOWED_ORIGINS,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_PROTOCOL_VERSION,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRY,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LATEST_PROTOCOL_VERSION,
    LEGACY_PROTOCOL_VERSION,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    REQUEST_TIMEOUT,
    SUPPORTED_PROTOCOL_VERSIONS,
    ClientRequestError,
    JsonRpcError,
    McpApp,
    McpOptions,
    Notifier,
    RequestContext,
)
from ._blueprints import LegacySseBlueprint, McpBlueprint

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
    "JsonRpcError",
    "LegacySseBlueprint",
    "McpApp",
    "McpBlueprint",
    "McpOptions",
    "Notifier",
    "RequestContext",
]
