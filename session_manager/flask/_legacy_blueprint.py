"""LegacySseBlueprint: the legacy MCP HTTP+SSE transport (2024-11-05) as a Flask blueprint."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Blueprint
from flask.sansio.blueprints import BlueprintSetupState

from ..base import SessionManagers
from ..notifier import Notifier
from ..stream import DEFAULT_KEEPALIVE, DEFAULT_MAXSIZE
from ._checks import DEFAULT_ALLOWED_HOSTS, DEFAULT_ALLOWED_ORIGINS, DEFAULT_MAX_BODY_SIZE
from ._core import DEFAULT_RETRY, Principal, TransportCore, close_transports
from ._handler import Handler
from ._legacy import MESSAGES_ENDPOINT, STREAM_ENDPOINT, LegacyEndpoint
from ._routing import add_mcp_route, install_method_fallback

__all__ = ["LegacySseBlueprint"]


def _path(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "?" in value or "#" in value:
        raise ValueError(f"{what} must be a URL path starting with '/', got {value!r}")
    return value


class LegacySseBlueprint(Blueprint, Notifier):
    """A Flask blueprint serving the legacy MCP HTTP+SSE transport (revision 2024-11-05).

    Two URLs under *url_prefix* (none by default): ``GET`` *sse_path*
    (``/sse``) opens a session and its stream, whose first event
    (``endpoint``) names *messages_path* (``/messages?sessionId=<id>``);
    clients POST each JSON-RPC message there, get ``202 Accepted``, and
    read the replies as ``message`` events of the stream. The session ends
    with its stream.

    The handler API is :class:`~session_manager.flask.McpBlueprint`'s
    (``handler(message, ctx)``), and so are the options (see there; there
    is no *json_response*: every reply travels on the stream). Sessions
    live in *managers* exactly as Streamable HTTP sessions do, ``initialize``,
    ``logging/setLevel`` and ``resources/subscribe|unsubscribe`` are
    recorded by the same code, and the fan-out API (``notify``,
    ``broadcast``, ``resource_updated``, ``log``...) is the same
    :class:`~session_manager.flask.Notifier`.

    Why a second blueprint rather than a mode of McpBlueprint: the legacy
    URLs conventionally sit outside the Streamable HTTP endpoint (``/sse``
    and ``/messages`` beside ``/mcp``) and a blueprint has one url_prefix;
    an app may also serve the legacy transport alone, or mount it
    elsewhere. Sharing is by *managers*: give both blueprints the same
    :class:`~session_manager.SessionManagers` (what
    :meth:`McpBlueprint.legacy_sse_blueprint` does, handler and options
    included) and any one of them is the Notifier for every client: both
    transports register their streams with ``managers.streams``, so a
    ``broadcast`` reaches clients of both.

    With a shared backend (Redis) a POST may land on another worker than
    the one holding the stream: it checks the session with the info manager
    and its replies go through ``managers.streams.send``.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        managers: SessionManagers | None = None,
        url_prefix: str | None = None,
        sse_path: str = "/sse",
        messages_path: str = "/messages",
        name: str = "mcp_legacy",
        import_name: str = __name__,
        server_info: dict[str, Any] | None = None,
        capabilities: dict[str, Any] | None = None,
        instructions: str | None = None,
        allowed_hosts: Iterable[str] | None = DEFAULT_ALLOWED_HOSTS,
        allowed_origins: Iterable[str] | None = DEFAULT_ALLOWED_ORIGINS,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        keepalive: float = DEFAULT_KEEPALIVE,
        stream_maxsize: int = DEFAULT_MAXSIZE,
        principal: Principal | None = None,
        retry: int | None = DEFAULT_RETRY,
    ) -> None:
        if _path(sse_path, "sse_path") == _path(messages_path, "messages_path"):
            raise ValueError(f"sse_path and messages_path must differ, both are {sse_path!r}")
        Blueprint.__init__(self, name, import_name, url_prefix=url_prefix or None)
        Notifier.__init__(self, SessionManagers() if managers is None else managers)
        core = TransportCore(
            handler,
            self.managers,
            server_info=server_info,
            capabilities=capabilities,
            instructions=instructions,
            allowed_hosts=allowed_hosts,
            allowed_origins=allowed_origins,
            max_body_size=max_body_size,
            keepalive=keepalive,
            stream_maxsize=stream_maxsize,
            principal=principal,
            retry=retry,
        )
        self._core = core
        self._legacy_endpoint = LegacyEndpoint(core)
        add_mcp_route(self, sse_path, STREAM_ENDPOINT, self._legacy_endpoint.stream)
        add_mcp_route(self, messages_path, MESSAGES_ENDPOINT, self._legacy_endpoint.messages)
        self.record_once(self._install_method_fallback)

    def close(self, timeout: float = 5.0) -> bool:
        """Shut down: end this blueprint's streams, wait for its handlers, close the managers.

        See :meth:`McpBlueprint.close <session_manager.flask.McpBlueprint.close>`
        (which also covers the legacy blueprints it made: call one of them).
        """
        return close_transports([self._core], self.managers, timeout)

    def _install_method_fallback(self, state: BlueprintSetupState) -> None:
        """Answer methods outside the routed ones with a JSON-RPC 405 on these two URLs only."""
        endpoint = self._legacy_endpoint
        install_method_fallback(
            state, {endpoint.stream: endpoint.refuse_stream_method, endpoint.messages: endpoint.refuse_message_method}
        )

    def __repr__(self) -> str:
        return f"<LegacySseBlueprint {self.name!r} url_prefix={self.url_prefix!r} managers={self.managers!r}>"
