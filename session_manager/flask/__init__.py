"""The MCP Streamable HTTP transport for Flask, on top of session_manager.

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
    app.register_blueprint(McpBlueprint(handler, server_info={"name": "demo", "version": "1"}))
"""

from ._blueprint import McpBlueprint
from ._checks import (
    DEFAULT_ALLOWED_HOSTS,
    DEFAULT_ALLOWED_ORIGINS,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_PROTOCOL_VERSION,
    LATEST_PROTOCOL_VERSION,
    SUPPORTED_PROTOCOL_VERSIONS,
)
from ._context import RequestContext
from ._jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    JsonRpcError,
)
from ._notifier import Notifier

__all__ = [
    "McpBlueprint",
    "RequestContext",
    "Notifier",
    "JsonRpcError",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "LATEST_PROTOCOL_VERSION",
    "SUPPORTED_PROTOCOL_VERSIONS",
    "DEFAULT_PROTOCOL_VERSION",
    "DEFAULT_ALLOWED_HOSTS",
    "DEFAULT_ALLOWED_ORIGINS",
    "DEFAULT_MAX_BODY_SIZE",
]
