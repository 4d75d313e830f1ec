"""The protocol steps of the handshake era (revisions 2024-11-05 to 2025-11-25), apart from HTTP.

In this era a client opens a session with ``initialize``: the server mints
its id, negotiates the protocol version and stores what the client declared;
every later message names the session, whose metadata the handler sees in
its :class:`RequestContext`, and some requests change it once the handler
accepted them (``logging/setLevel``, ``resources/subscribe|unsubscribe``).
Both HTTP bindings of the era use these steps: Streamable HTTP
(:mod:`._app`) and the legacy HTTP+SSE transport (:mod:`._legacy_sse`). The
steps see values (header values, a principal, a parsed message), never a
request object; refusals are :class:`HttpError` (a status and a JSON-RPC
error) or :class:`JsonRpcError`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from .._jsonrpc import INVALID_PARAMS, INVALID_REQUEST, REQUEST, SESSION_NOT_FOUND, HttpError, JsonRpcError, Message
from .._validate import LOG_LEVELS
from ..base import SessionInfo, SessionManagers, SessionQuota
from ._client_requests import ClientRequests
from ._context import CloseStream, Emit, RequestContext, context_for
from ._handler import Handler, OnSuccess, notify_handler
from ._options import McpOptions
from ._session_ids import is_minted, mint_session_id, session_key

__all__ = [
    "DEFAULT_PROTOCOL_VERSION",
    "LATEST_PROTOCOL_VERSION",
    "LEGACY_PROTOCOL_VERSION",
    "LEGACY_SUPPORTED_PROTOCOL_VERSIONS",
    "PROTOCOL_HEADER",
    "SESSION_HEADER",
    "SUPPORTED_PROTOCOL_VERSIONS",
    "HandshakeSteps",
    "not_found",
]

#: The revision this transport implements.
LATEST_PROTOCOL_VERSION = "2025-11-25"
#: Revisions accepted from clients, newest first.
SUPPORTED_PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
#: What a request without an ``MCP-Protocol-Version`` header is assumed to speak.
DEFAULT_PROTOCOL_VERSION = "2025-03-26"
#: The revision that defined the legacy HTTP+SSE transport.
LEGACY_PROTOCOL_VERSION = "2024-11-05"
#: Revisions accepted from clients of the legacy transport, newest first: clients
#: negotiate their newest revision whichever transport they use.
LEGACY_SUPPORTED_PROTOCOL_VERSIONS = (*SUPPORTED_PROTOCOL_VERSIONS, LEGACY_PROTOCOL_VERSION)

SESSION_HEADER = "Mcp-Session-Id"
PROTOCOL_HEADER = "MCP-Protocol-Version"


def not_found() -> HttpError:
    """404 for a session that does not exist (any more): the client initializes a new one."""
    return HttpError(404, SESSION_NOT_FOUND, "Not Found: unknown or terminated session; initialize a new one")


def _after(action: Callable[[], object]) -> OnSuccess:
    """An :data:`OnSuccess` hook that runs *action* and keeps the result."""

    def on_success(result: dict[str, Any]) -> dict[str, Any]:
        action()
        return result

    return on_success


def _capped(options: McpOptions, managers: SessionManagers) -> bool:
    """Whether the options cap sessions; ``TypeError`` if they do and the info manager cannot enforce caps."""
    if options.max_sessions is None and options.max_sessions_per_principal is None:
        return False
    info = managers.info
    if not info.enforces_quotas:
        raise TypeError(
            f"{type(info).__name__} does not enforce session caps (its enforces_quotas is false): give it "
            "create(..., quota=) and set enforces_quotas = True, or pass max_sessions=None and "
            "max_sessions_per_principal=None to run without caps"
        )
    return True


class HandshakeSteps:
    """The session steps of one transport, on its options and managers."""

    __slots__ = ("_capped", "client_requests", "managers", "options")

    def __init__(self, options: McpOptions, managers: SessionManagers, client_requests: ClientRequests) -> None:
        self.options = options
        self.managers = managers
        #: The handlers' requests to their clients, and the replies that come back.
        self.client_requests = client_requests
        self._capped = _capped(options, managers)

    # -- initialize ----------------------------------------------------------------

    def negotiate(self, message: Message, supported: Sequence[str]) -> SessionInfo:
        """What an ``initialize`` request declares, with the negotiated protocol version.

        400 (:class:`HttpError`) if it is not a request; :class:`JsonRpcError`
        (invalid params) if its params are not the declared types, or client
        info and capabilities exceed the *max_session_info* option. The
        version is the client's if *supported*, else the latest.
        """
        if message.kind != REQUEST:
            raise HttpError(400, INVALID_REQUEST, "Invalid Request: initialize must be a request with an id")
        params = message.params
        requested = params.get("protocolVersion")
        client_info = params.get("clientInfo")
        capabilities = params.get("capabilities")
        if type(requested) is not str or not all(v is None or isinstance(v, dict) for v in (client_info, capabilities)):
            raise JsonRpcError(
                INVALID_PARAMS,
                "Invalid params: initialize needs a string protocolVersion and objects capabilities and clientInfo",
            )
        size = len(json.dumps([client_info, capabilities], ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if size > self.options.max_session_info:
            raise JsonRpcError(
                INVALID_PARAMS,
                f"Invalid params: clientInfo and capabilities take {size} bytes; a session stores at most "
                f"{self.options.max_session_info}",
            )
        version = requested if requested in supported else LATEST_PROTOCOL_VERSION
        return SessionInfo(protocol_version=version, client_info=client_info, client_capabilities=capabilities)

    def complete_initialize(self, version: str) -> OnSuccess:
        """Fill the InitializeResult from the options; the negotiated version always wins."""
        options = self.options

        def complete(result: dict[str, Any]) -> dict[str, Any]:
            result = dict(result)
            result["protocolVersion"] = version
            result.setdefault("capabilities", options.capabilities)
            result.setdefault("serverInfo", options.server_info)
            if options.instructions is not None:
                result.setdefault("instructions", options.instructions)
            return result

        return complete

    def record_initialize(self, key: str, declared: SessionInfo) -> OnSuccess:
        """Complete the InitializeResult, then store what the client declared in the existing session."""
        complete = self.complete_initialize(declared.protocol_version or LATEST_PROTOCOL_VERSION)
        info = self.managers.info

        def record(result: dict[str, Any]) -> dict[str, Any]:
            result = complete(result)
            info.set_protocol_version(key, result["protocolVersion"])
            if declared.client_info is not None:
                info.set_client_info(key, declared.client_info)
            if declared.client_capabilities is not None:
                info.set_client_capabilities(key, declared.client_capabilities)
            return result

        return record

    # -- sessions --------------------------------------------------------------------

    def new_session(self, principal: str | None, **fields: Any) -> tuple[str, str]:
        """Mint a session id and create its session with *fields*; returns ``(id, managers' key)``.

        Every transport creates its sessions here, so all obey the
        *max_sessions* caps: past one the info manager raises
        :class:`~session_manager.SessionLimitError` (503 or 429, see
        :mod:`._responses`) and nothing is created.
        """
        session_id = mint_session_id()
        key = session_key(principal, session_id)
        if self._capped:
            fields["quota"] = SessionQuota(
                self.options.max_sessions, self.options.max_sessions_per_principal, principal
            )
        self.managers.info.create(key, **fields)
        return session_id, key

    @staticmethod
    def key_of(session_id: str, principal: str | None) -> str:
        """The managers' key of a client-presented id; 404 if it cannot be one we minted."""
        if not is_minted(session_id):
            raise not_found()
        return session_key(principal, session_id)

    @staticmethod
    def named_session(session_id: str | None, protocol_version: str | None) -> str:
        """The session id a Streamable HTTP request names in its headers, once they are checked.

        400 without ``Mcp-Session-Id``, or with an ``MCP-Protocol-Version``
        this era does not speak (absent: 2025-03-26 is assumed).
        """
        if session_id is None:
            raise HttpError(400, INVALID_REQUEST, f"Bad Request: the {SESSION_HEADER} header is required")
        if protocol_version is not None and protocol_version not in SUPPORTED_PROTOCOL_VERSIONS:
            raise HttpError(
                400,
                INVALID_REQUEST,
                f"Bad Request: unsupported {PROTOCOL_HEADER} {protocol_version[:64]!r}; "
                f"supported: {', '.join(SUPPORTED_PROTOCOL_VERSIONS)}",
            )
        return session_id

    def session_info(self, key: str) -> SessionInfo:
        """Everything known of the session, in one read; 404 if it does not exist."""
        info = self.managers.info.get(key)
        if info is None:
            raise not_found()
        return info

    def check_exists(self, key: str) -> None:
        """404 unless the session exists."""
        if not self.managers.info.exists(key):
            raise not_found()

    # -- requests ----------------------------------------------------------------------

    def bookkeeping(self, key: str, message: Message) -> OnSuccess | None:
        """What the info manager records once the handler accepted the request (None: nothing).

        :class:`JsonRpcError` (invalid params) if the request cannot be recorded.
        """
        method, params, info = message.method, message.params, self.managers.info
        if method == "logging/setLevel":
            level = params.get("level")
            if type(level) is not str or level not in LOG_LEVELS:
                raise JsonRpcError(INVALID_PARAMS, f"Invalid params: level must be one of {', '.join(LOG_LEVELS)}")
            return _after(functools.partial(info.set_log_level, key, level))
        if method in ("resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            if type(uri) is not str or not uri:
                raise JsonRpcError(INVALID_PARAMS, "Invalid params: uri must be a non-empty string")
            update = info.add_subscription if method == "resources/subscribe" else info.remove_subscription
            return _after(functools.partial(update, key, uri))
        return None

    def to_session(self, key: str) -> Emit:
        """An emitter to the session's stream, wherever (with a shared backend) it is held.

        It returns False, sending nothing, while the session has no open
        stream: the message would go nowhere.
        """
        streams = self.managers.streams

        def emit(data: str) -> bool:
            if not streams.has(key):
                return False
            streams.send([key], data)
            return True

        return emit

    def context(
        self, key: str, info: SessionInfo, message: Message, emit: Emit, close_stream: CloseStream | None = None
    ) -> RequestContext:
        """The handler's view of the session, and where what it emits goes."""
        return context_for(message, key, info, emit, client=self.client_requests, close_stream=close_stream)

    def client_message(self, handler: Handler, key: str, info: SessionInfo, message: Message) -> None:
        """A client notification or response: a reply to a handler's request goes to it, the rest to *handler*."""
        if not self.client_requests.take_reply(key, message):
            notify_handler(handler, message, self.context(key, info, message, self.to_session(key)))
