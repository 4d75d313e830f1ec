"""Routing MCP views in Flask so that every HTTP method gets a JSON-RPC answer.

Each MCP URL routes the common methods to its view, whose McpApp refuses
those it does not serve with a JSON-RPC 405. Methods Flask's router does
not route at all (``PROPFIND``, ``BREW``...) raise ``MethodNotAllowed``
before any view runs, and a ``Host`` header it cannot parse (``Host: .``)
raises ``BadRequest`` there too; app-wide error handlers answer both for
the blueprint's URLs only, with the same JSON-RPC errors. (A bare McpApp
needs none of this: it sees every request itself.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Blueprint, current_app, request
from flask.sansio.blueprints import BlueprintSetupState
from werkzeug.exceptions import BadRequest, HTTPException, MethodNotAllowed
from werkzeug.routing import MapAdapter, RequestRedirect
from werkzeug.wrappers import Response

from .._jsonrpc import INVALID_REQUEST, HttpError
from ..wsgi._checks import method_not_allowed
from ..wsgi._responses import http_error, vary_on_origin

__all__ = ["add_mcp_route", "install_method_fallback"]

#: Methods routed to an MCP view (which refuses those it does not serve).
ROUTED_METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "TRACE")

View = Callable[[], Response]


def add_mcp_route(blueprint: Blueprint, rule: str, endpoint: str, view: View) -> None:
    """Route every common method of *rule* to *view*."""
    blueprint.add_url_rule(rule, endpoint, view, methods=ROUTED_METHODS, provide_automatic_options=False)


def install_method_fallback(state: BlueprintSetupState, refusals: Mapping[View, Sequence[str]]) -> None:
    """Answer what fails before routing on the URLs of the views in *refusals* with JSON-RPC errors.

    Unrouted methods get a 405 listing the methods the view serves
    (*refusals* maps a view to them); a malformed ``Host`` header gets a
    400. For other URLs each handler defers to the one registered before
    it, if any.
    """
    app = state.app
    previous_405 = app.error_handler_spec[None][405].get(MethodNotAllowed)
    previous_400 = app.error_handler_spec[None][400].get(BadRequest)

    def handle_405(exc: MethodNotAllowed) -> Any:
        allowed = refusals.get(_view_of_url())
        if allowed is not None:
            return vary_on_origin(http_error(method_not_allowed(allowed)))
        return previous_405(exc) if previous_405 is not None else exc

    def handle_400(exc: BadRequest) -> Any:
        if exc is request.routing_exception and _view_of_url(neutral_host=True) in refusals:
            return vary_on_origin(http_error(HttpError(400, INVALID_REQUEST, "Bad Request: malformed Host header")))
        return previous_400(exc) if previous_400 is not None else exc

    app.register_error_handler(MethodNotAllowed, handle_405)
    app.register_error_handler(BadRequest, handle_400)


def _view_of_url(*, neutral_host: bool = False) -> Any:
    """The view routed at the current request's URL (for POST, which every MCP URL routes), or None.

    With *neutral_host* the URL is matched as if the Host header were
    ``localhost``: for a request whose own Host could not be parsed.
    """
    try:
        adapter: MapAdapter | None
        if neutral_host:
            adapter = current_app.url_map.bind("localhost", script_name=request.script_root or "/")
        else:
            adapter = current_app.create_url_adapter(request)
        if adapter is None:  # no URL map for this request: nothing is routed
            return None
        endpoint, _ = adapter.match(request.path, method="POST")
    except (HTTPException, RequestRedirect):
        return None
    return current_app.view_functions.get(endpoint)
