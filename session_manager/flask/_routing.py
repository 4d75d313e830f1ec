"""Routing MCP views so that every HTTP method gets a JSON-RPC answer.

Each MCP URL routes the common methods to its view, which refuses those it
does not serve with a JSON-RPC 405. Methods Werkzeug does not route at all
(``PROPFIND``, ``BREW``...) raise ``MethodNotAllowed`` before any view
runs; an app-wide error handler answers those for the blueprint's URLs only.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from flask import Blueprint, Flask, current_app, request
from flask.sansio.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Response

__all__ = ["add_mcp_route", "install_method_fallback"]

#: Methods routed to an MCP view (which refuses those it does not serve).
ROUTED_METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "TRACE")

View = Callable[[], Response]


def add_mcp_route(blueprint: Blueprint, rule: str, endpoint: str, view: View) -> None:
    """Route every common method of *rule* to *view*."""
    blueprint.add_url_rule(rule, endpoint, view, methods=ROUTED_METHODS, provide_automatic_options=False)


def install_method_fallback(state: BlueprintSetupState, refusals: Dict[View, View]) -> None:
    """Answer unrouted methods on the URLs of the views in *refusals* with their 405 response.

    *refusals* maps a view to the function building its 405 response. For
    other URLs the handler defers to the one registered before it, if any.
    """
    app: Flask = state.app
    previous = app.error_handler_spec[None][405].get(MethodNotAllowed)

    def handle(exc: MethodNotAllowed) -> Any:
        refuse = refusals.get(_view_of_url())  # type: ignore[arg-type]
        if refuse is not None:
            response = refuse()
            response.vary.add("Origin")
            return response
        return previous(exc) if previous is not None else exc

    app.register_error_handler(MethodNotAllowed, handle)


def _view_of_url() -> Any:
    """The view routed at the current request's URL (for POST, which every MCP URL routes), or None."""
    try:
        endpoint, _ = current_app.create_url_adapter(request).match(method="POST")  # type: ignore[union-attr]
    except (HTTPException, RequestRedirect):
        return None
    return current_app.view_functions.get(endpoint)
