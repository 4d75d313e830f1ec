"""McpBlueprint: the MCP Streamable HTTP transport as a Flask blueprint."""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Optional

from flask import Blueprint, Flask, current_app, request
from flask.sansio.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Response

from ..base import SessionManagers
from ..stream import DEFAULT_KEEPALIVE, DEFAULT_MAXSIZE
from ._checks import DEFAULT_ALLOWED_HOSTS, DEFAULT_ALLOWED_ORIGINS, DEFAULT_MAX_BODY_SIZE
from ._endpoint import Endpoint, Principal
from ._handler import Handler
from ._notifier import Notifier

__all__ = ["McpBlueprint"]

logger = logging.getLogger(__name__)

#: Methods routed to the endpoint's view (which refuses all but GET, POST and
#: DELETE with a JSON-RPC body); any other method is caught app-wide.
_ROUTED_METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "TRACE")
_ENDPOINT = "endpoint"


class McpBlueprint(Blueprint, Notifier):
    """A Flask blueprint serving MCP Streamable HTTP (2025-11-25, 2025-06-18, 2025-03-26) on one URL.

    Mount it with ``app.register_blueprint(bp)``; the endpoint is
    *url_prefix* (``/mcp``). Every JSON-RPC message a client POSTs goes to
    ``handler(message, ctx)``, which returns the result ``dict`` of a
    request (or ``None`` for an empty one) or raises
    :class:`~session_manager.flask.JsonRpcError`; for notifications and
    client responses its return value is ignored. ``ctx`` is a
    :class:`~session_manager.flask.RequestContext`.

    The blueprint keeps the session bookkeeping in *managers*: sessions
    minted at ``initialize``, log levels, resource subscriptions, GET
    streams. It is also a :class:`~session_manager.flask.Notifier`:
    ``notify``, ``broadcast``, ``resource_updated``, ``*_list_changed``
    and ``log`` work from any thread or greenlet.

    Options:

    - *server_info*, *capabilities*, *instructions*: fill the
      InitializeResult where the handler's result leaves them out.
    - *json_response*: answer requests with plain JSON instead of an SSE
      stream (handler messages then go to the session's GET stream).
    - *allowed_hosts*, *allowed_origins*: ``host[:port]`` and
      ``scheme://host[:port]`` allowlists (no port or ``:*``: any port);
      localhost names by default, ``None`` disables the check.
    - *max_body_size*: bytes per POST body (413 beyond).
    - *keepalive*: seconds between pings on idle streams;
      *stream_maxsize*: messages a stream may hold for a slow client.
    - *principal*: called in each request, returns its authenticated
      principal (or ``None``); a session is only visible to its principal.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        managers: Optional[SessionManagers] = None,
        url_prefix: Optional[str] = "/mcp",
        name: str = "mcp",
        import_name: str = __name__,
        server_info: Optional[Dict[str, Any]] = None,
        capabilities: Optional[Dict[str, Any]] = None,
        instructions: Optional[str] = None,
        json_response: bool = False,
        allowed_hosts: Optional[Iterable[str]] = DEFAULT_ALLOWED_HOSTS,
        allowed_origins: Optional[Iterable[str]] = DEFAULT_ALLOWED_ORIGINS,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        keepalive: float = DEFAULT_KEEPALIVE,
        stream_maxsize: int = DEFAULT_MAXSIZE,
        principal: Optional[Principal] = None,
    ) -> None:
        Blueprint.__init__(self, name, import_name, url_prefix=url_prefix or None)
        Notifier.__init__(self, SessionManagers() if managers is None else managers)
        self._mcp_endpoint = Endpoint(
            handler,
            self.managers,
            server_info=server_info,
            capabilities=capabilities,
            instructions=instructions,
            json_response=json_response,
            allowed_hosts=allowed_hosts,
            allowed_origins=allowed_origins,
            max_body_size=max_body_size,
            keepalive=keepalive,
            stream_maxsize=stream_maxsize,
            principal=principal,
        )
        self.add_url_rule(
            "" if url_prefix else "/",
            _ENDPOINT,
            self._mcp_endpoint.view,
            methods=_ROUTED_METHODS,
            provide_automatic_options=False,
        )
        self.record_once(self._install_method_fallback)

    def _install_method_fallback(self, state: BlueprintSetupState) -> None:
        """Answer methods outside the routed ones with a JSON-RPC 405 on this endpoint only.

        Werkzeug raises ``MethodNotAllowed`` before any view runs, so this
        needs an app-wide error handler; for other URLs it defers to the
        handler registered before it, if any.
        """
        app: Flask = state.app
        previous = app.error_handler_spec[None][405].get(MethodNotAllowed)

        def handle(exc: MethodNotAllowed) -> Any:
            if self._owns_url():
                response: Response = self._mcp_endpoint.error(self._mcp_endpoint.method_not_allowed())
                response.vary.add("Origin")
                return response
            return previous(exc) if previous is not None else exc

        app.register_error_handler(MethodNotAllowed, handle)

    def _owns_url(self) -> bool:
        """Whether the current request's URL is this blueprint's endpoint."""
        try:
            endpoint, _ = current_app.create_url_adapter(request).match(method="POST")  # type: ignore[union-attr]
        except (HTTPException, RequestRedirect):
            return False
        return current_app.view_functions.get(endpoint) == self._mcp_endpoint.view

    def __repr__(self) -> str:
        return f"<McpBlueprint {self.name!r} url_prefix={self.url_prefix!r} managers={self.managers!r}>"
