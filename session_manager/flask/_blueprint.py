"""McpBlueprint: the MCP Streamable HTTP transport as a Flask blueprint."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flask import Blueprint
from flask.sansio.blueprints import BlueprintSetupState

from ..base import SessionManagers
from ..notifier import Notifier
from ..stream import DEFAULT_KEEPALIVE, DEFAULT_MAXSIZE
from ._checks import DEFAULT_ALLOWED_HOSTS, DEFAULT_ALLOWED_ORIGINS, DEFAULT_MAX_BODY_SIZE
from ._core import DEFAULT_RETRY, Principal, TransportCore, close_transports
from ._endpoint import Endpoint
from ._handler import Handler
from ._legacy_blueprint import LegacySseBlueprint
from ._routing import add_mcp_route, install_method_fallback

__all__ = ["DEFAULT_CLOSE_TIMEOUT", "McpBlueprint"]

logger = logging.getLogger(__name__)

_ENDPOINT = "endpoint"
#: Seconds :meth:`McpBlueprint.close` waits for running handlers by default.
DEFAULT_CLOSE_TIMEOUT = 5.0


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
    - *retry*: milliseconds a client should wait before reconnecting to a
      stream the server ended (sent as the SSE ``retry`` field when a
      stream is primed and when the server closes it); ``None`` sends none.

    Resumable streams: give ``managers.streams`` an event store (e.g.
    ``InMemoryStreamSessionManager(event_store=InMemoryEventStore())``) and
    every event carries an id; a client that lost a GET or POST stream
    resumes it with ``GET`` + ``Last-Event-ID`` (see the README). Without
    one, delivery is at most once and ``Last-Event-ID`` is ignored.

    :meth:`close` shuts the transport down (streams, handlers, managers).

    Clients of the legacy HTTP+SSE transport (2024-11-05) are served by a
    second blueprint on the same managers: :meth:`legacy_sse_blueprint`.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        managers: SessionManagers | None = None,
        url_prefix: str | None = "/mcp",
        name: str = "mcp",
        import_name: str = __name__,
        server_info: dict[str, Any] | None = None,
        capabilities: dict[str, Any] | None = None,
        instructions: str | None = None,
        json_response: bool = False,
        allowed_hosts: Iterable[str] | None = DEFAULT_ALLOWED_HOSTS,
        allowed_origins: Iterable[str] | None = DEFAULT_ALLOWED_ORIGINS,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        keepalive: float = DEFAULT_KEEPALIVE,
        stream_maxsize: int = DEFAULT_MAXSIZE,
        principal: Principal | None = None,
        retry: int | None = DEFAULT_RETRY,
    ) -> None:
        Blueprint.__init__(self, name, import_name, url_prefix=url_prefix or None)
        Notifier.__init__(self, SessionManagers() if managers is None else managers)
        #: The transport options, kept for :meth:`legacy_sse_blueprint`.
        self._options: dict[str, Any] = {
            "server_info": server_info,
            "capabilities": capabilities,
            "instructions": instructions,
            "allowed_hosts": allowed_hosts,
            "allowed_origins": allowed_origins,
            "max_body_size": max_body_size,
            "keepalive": keepalive,
            "stream_maxsize": stream_maxsize,
            "principal": principal,
            "retry": retry,
        }
        self._handler = handler
        core = TransportCore(handler, self.managers, **self._options)
        #: Every transport on these managers made here (this one, then its legacy blueprints), for close().
        self._cores: list[TransportCore] = [core]
        self._mcp_endpoint = Endpoint(core, json_response=json_response)
        add_mcp_route(self, "" if url_prefix else "/", _ENDPOINT, self._mcp_endpoint.view)
        self.record_once(self._install_method_fallback)

    def legacy_sse_blueprint(
        self,
        *,
        url_prefix: str | None = None,
        sse_path: str = "/sse",
        messages_path: str = "/messages",
        name: str | None = None,
    ) -> LegacySseBlueprint:
        """A :class:`~session_manager.flask.LegacySseBlueprint` for clients of the 2024-11-05 transport.

        It shares this blueprint's handler, managers and options, so both
        kinds of client live in one set of sessions and this blueprint's
        ``broadcast`` (or any fan-out call) reaches both. Register it too::

            app.register_blueprint(mcp)                          # /mcp
            app.register_blueprint(mcp.legacy_sse_blueprint())   # /sse and /messages
        """
        legacy = LegacySseBlueprint(
            self._handler,
            managers=self.managers,
            url_prefix=url_prefix,
            sse_path=sse_path,
            messages_path=messages_path,
            name=f"{self.name}_legacy" if name is None else name,
            **self._options,
        )
        self._cores.append(legacy._core)
        return legacy

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> bool:
        """Shut down: end every stream of this process, wait for handlers, close the managers.

        New requests get 503. Open streams (GET and POST, and those of the
        legacy blueprints made by :meth:`legacy_sse_blueprint`) end at once
        with the ``retry`` hint, so clients reconnect; with a shared event
        store they resume on another process. Handlers still running get up
        to *timeout* seconds in all; then the managers close (Redis threads
        and connections included). Returns True if no handler was left
        running. Idempotent. Call it when the process stops (e.g. gunicorn's
        ``worker_exit``), not from a request.
        """
        return close_transports(self._cores, self.managers, timeout)

    def _install_method_fallback(self, state: BlueprintSetupState) -> None:
        """Answer methods outside the routed ones with a JSON-RPC 405 on this endpoint only."""
        install_method_fallback(state, {self._mcp_endpoint.view: self._mcp_endpoint.refuse_method})

    def __repr__(self) -> str:
        return f"<McpBlueprint {self.name!r} url_prefix={self.url_prefix!r} managers={self.managers!r}>"
