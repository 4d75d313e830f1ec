"""McpBlueprint and LegacySseBlueprint: Flask routes in front of an McpApp (:mod:`session_manager.wsgi`).

Flask routes the URLs; the McpApp answers them, given Flask's request.
Only what Flask needs is here: the routes, the app-wide fallback for what
Flask refuses before any view (:mod:`._fallback`), and the Flask form of
*principal* (no argument: it reads ``flask.request``).
"""

from __future__ import annotations

import functools
from typing import Any, cast

from flask import Blueprint, request
from werkzeug.wrappers import Request, Response

from ..base import SessionManagers
from ..notifier import Notifier
from ..wsgi import DEFAULT_CLOSE_TIMEOUT, McpApp, McpOptions
from ..wsgi._app import MCP_METHODS
from ..wsgi._handler import Handler
from ..wsgi._legacy_sse import MESSAGE_METHODS, STREAM_METHODS, LegacySse
from ._fallback import add_mcp_route, install_method_fallback

__all__ = ["LegacySseBlueprint", "McpBlueprint"]


def _transport(handler: Handler | McpApp, managers: SessionManagers | None, options: dict[str, Any]) -> McpApp:
    """The McpApp a blueprint routes to: the one given, or one built from the handler and options."""
    if isinstance(handler, McpApp):
        if managers is not None or options:
            raise TypeError("a blueprint over an McpApp takes no managers or options: the app has its own")
        return handler
    principal = options.get("principal")
    if callable(principal):  # Flask's principal reads flask.request; McpApp's gets the request
        options["principal"] = lambda _request: principal()
    return McpApp(handler, managers=managers, options=McpOptions(**options))


def _current_request() -> Request:
    """The request Flask is handling (the object itself, not its context-local proxy)."""
    return cast(Request, cast(Any, request)._get_current_object())


class McpBlueprint(Blueprint, Notifier):
    """A Flask blueprint serving MCP Streamable HTTP (2025-11-25, 2025-06-18, 2025-03-26) on one URL.

    Mount it with ``app.register_blueprint(bp)``; the endpoint is
    *url_prefix* (``/mcp``). It routes to an
    :class:`~session_manager.wsgi.McpApp` (:attr:`transport`): every
    JSON-RPC message a client POSTs goes to ``handler(message, ctx)``,
    which returns the result ``dict`` of a request (or ``None``) or raises
    :class:`~session_manager.flask.JsonRpcError`. The keyword options are
    those of :class:`~session_manager.wsgi.McpOptions` (*server_info*,
    *capabilities*, *instructions*, *json_response*, *allowed_hosts*,
    *allowed_origins*, *max_body_size*, *keepalive*, *stream_maxsize*,
    *stream_max_bytes*, *principal*, *retry*, ...); here *principal* takes no argument and reads
    ``flask.request``. Instead of a handler, an existing McpApp may be given.

    Sessions live in *managers*; with an event store on ``managers.streams``
    streams are resumable (``GET`` + ``Last-Event-ID``). The blueprint is a
    :class:`~session_manager.flask.Notifier` (``notify``, ``broadcast``,
    ``resource_updated``...), :meth:`close` shuts the transport down, and
    :meth:`legacy_sse_blueprint` serves clients of the legacy HTTP+SSE
    transport (2024-11-05) from the same transport.
    """

    def __init__(
        self,
        handler: Handler | McpApp,
        *,
        managers: SessionManagers | None = None,
        url_prefix: str | None = "/mcp",
        name: str = "mcp",
        import_name: str = __name__,
        **options: Any,
    ) -> None:
        Blueprint.__init__(self, name, import_name, url_prefix=url_prefix or None)
        #: The WSGI transport behind the blueprint (its options: ``transport.options``).
        self.transport = _transport(handler, managers, options)
        Notifier.__init__(self, self.transport.managers)
        add_mcp_route(self, "" if url_prefix else "/", "endpoint", self._serve)
        self.record_once(functools.partial(install_method_fallback, refusals={self._serve: MCP_METHODS}))

    def _serve(self) -> Response:
        return self.transport.serve_mcp(_current_request())

    def legacy_sse_blueprint(
        self,
        *,
        url_prefix: str | None = None,
        sse_path: str = "/sse",
        messages_path: str = "/messages",
        name: str | None = None,
    ) -> LegacySseBlueprint:
        """A :class:`~session_manager.flask.LegacySseBlueprint` on this blueprint's transport.

        Its clients share this blueprint's handler, options, sessions and
        fan-out, and :meth:`close` ends them too. Register it as well::

            app.register_blueprint(mcp)                          # /mcp
            app.register_blueprint(mcp.legacy_sse_blueprint())   # /sse and /messages
        """
        return LegacySseBlueprint(
            self.transport,
            url_prefix=url_prefix,
            sse_path=sse_path,
            messages_path=messages_path,
            name=f"{self.name}_legacy" if name is None else name,
        )

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> bool:
        """Shut the transport down; see :meth:`McpApp.close <session_manager.wsgi.McpApp.close>`."""
        return self.transport.close(timeout)

    def __repr__(self) -> str:
        return f"<McpBlueprint {self.name!r} url_prefix={self.url_prefix!r} managers={self.managers!r}>"


class LegacySseBlueprint(Blueprint, Notifier):
    """A Flask blueprint serving the legacy MCP HTTP+SSE transport (revision 2024-11-05).

    Two URLs under *url_prefix* (none by default): ``GET`` *sse_path*
    (``/sse``) opens a session and its stream, whose first event
    (``endpoint``) names *messages_path* (``/messages?sessionId=<id>``);
    clients POST each message there, get ``202 Accepted`` and read the
    replies on the stream, which ends the session when it closes. Handler
    and options are :class:`McpBlueprint`'s (without *json_response*).
    :meth:`McpBlueprint.legacy_sse_blueprint` builds one on the same
    transport; given the same *managers*, separate blueprints share
    sessions and fan-out too, in one process or (Redis) many.
    """

    def __init__(
        self,
        handler: Handler | McpApp,
        *,
        managers: SessionManagers | None = None,
        url_prefix: str | None = None,
        sse_path: str = "/sse",
        messages_path: str = "/messages",
        name: str = "mcp_legacy",
        import_name: str = __name__,
        **options: Any,
    ) -> None:
        if "json_response" in options:
            raise TypeError("LegacySseBlueprint has no json_response option: every reply travels on the stream")
        Blueprint.__init__(self, name, import_name, url_prefix=url_prefix or None)
        #: The WSGI transport behind the blueprint, and its legacy URLs.
        self.transport = _transport(handler, managers, options)
        self.legacy = LegacySse(self.transport, sse_path, messages_path)
        Notifier.__init__(self, self.transport.managers)
        add_mcp_route(self, sse_path, "sse", self._serve_stream)
        add_mcp_route(self, messages_path, "messages", self._serve_messages)
        refusals = {self._serve_stream: STREAM_METHODS, self._serve_messages: MESSAGE_METHODS}
        self.record_once(functools.partial(install_method_fallback, refusals=refusals))

    def _serve_stream(self) -> Response:
        return self.legacy.serve_stream(_current_request())

    def _serve_messages(self) -> Response:
        return self.legacy.serve_messages(_current_request())

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> bool:
        """Shut the transport down (every URL it serves); see :meth:`McpBlueprint.close`."""
        return self.transport.close(timeout)

    def __repr__(self) -> str:
        return f"<LegacySseBlueprint {self.name!r} url_prefix={self.url_prefix!r} managers={self.managers!r}>"
