"""The protocol steps of the stateless era (revision 2026-07-28), apart from HTTP.

Every request stands alone: it carries its protocol version, client
capabilities (and optionally client info and log level) in
``params._meta``, mirrored in HTTP headers. There is no ``initialize``, no
session, no GET stream and no resumability. :class:`ModernSteps` decides
which era a POST belongs to, checks a modern request in the order the
spec's conformance suite expects (``_meta``, headers, version, method),
cuts a listen filter to what the server honours, and completes results
(``resultType``, cache hints, server info). Like
:mod:`._handshake`, it sees values (header values, a parsed message), never
a request object; refusals are :class:`HttpError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any

from .._jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, REQUEST, HttpError, Message, RequestId
from .._validate import LOG_LEVELS
from ..subscriptions import ListenFilter
from ._client_requests import MISSING_CLIENT_CAPABILITY
from ._handshake import SUPPORTED_PROTOCOL_VERSIONS
from ._options import McpOptions

__all__ = [
    "CACHEABLE_METHODS",
    "HEADER_MISMATCH",
    "MAX_LISTEN_URI_BYTES",
    "META_CAPABILITIES",
    "META_VERSION",
    "MISSING_CLIENT_CAPABILITY",
    "MODERN_PROTOCOL_VERSIONS",
    "REMOVED_METHODS",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "ModernRequest",
    "ModernSteps",
    "decode_header",
]

#: The stateless revisions this transport serves, newest first.
MODERN_PROTOCOL_VERSIONS = ("2026-07-28",)
#: Error codes the stateless era adds.
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
_META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
_META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
_META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"

#: Most bytes of resource URIs one listen stream may watch (what its index entries and acknowledgement hold).
MAX_LISTEN_URI_BYTES = 64 * 1024
#: Handshake-era methods a stateless request may not call (404, -32601).
REMOVED_METHODS = frozenset(
    {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)
#: Methods whose complete results carry cache hints (``ttlMs``, ``cacheScope``).
CACHEABLE_METHODS = frozenset(
    {"server/discover", "tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
)
#: Methods whose ``params`` field is mirrored in the ``Mcp-Name`` header.
_NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
#: ``=?base64?...?=``: how a client sends a header value that is not plain visible ASCII.
_BASE64_VALUE = re.compile(r"=\?base64\?(.*)\?=")
_STATUS = {METHOD_NOT_FOUND: 404, HEADER_MISMATCH: 400, MISSING_CLIENT_CAPABILITY: 400, UNSUPPORTED_PROTOCOL_VERSION: 400}


class ModernRequest:
    """What a checked stateless request declares."""

    __slots__ = ("client_capabilities", "client_info", "log_level", "protocol_version")

    def __init__(
        self,
        protocol_version: str,
        client_capabilities: dict[str, Any],
        client_info: dict[str, Any] | None,
        log_level: str | None,
    ) -> None:
        self.protocol_version = protocol_version
        self.client_capabilities = client_capabilities
        self.client_info = client_info
        self.log_level = log_level


def http_status(code: int) -> int:
    """The HTTP status of a stateless request refused with JSON-RPC error *code* (200: answered in the body)."""
    return _STATUS.get(code, 200)


def decode_header(value: str | None) -> str | None:
    """A header value as the client meant it: ``=?base64?...?=`` decoded, surrounding spaces trimmed.

    ``None`` (matches nothing) for a value with characters a header may not
    carry as such: anything but visible ASCII and spaces must come base64-encoded.
    """
    if value is None or not (value.isascii() and value.isprintable()):  # visible ASCII and spaces only
        return None
    value = value.strip()
    match = _BASE64_VALUE.fullmatch(value) if value.startswith("=?") else None
    if match is None:
        return value
    payload = match.group(1)
    try:
        if len(payload) % 4:
            raise ValueError("unpadded")
        decoded = base64.b64decode(payload, validate=True)
        if base64.b64encode(decoded).decode("ascii") != payload:
            raise ValueError("not canonical")  # only what an encoder makes
        return decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return None  # malformed: matches nothing


class ModernSteps:
    """The stateless steps of one transport, on its options."""

    __slots__ = ("handshake", "modern", "options", "supported")

    def __init__(self, options: McpOptions) -> None:
        self.options = options
        self.modern = "modern" in options.eras
        self.handshake = "handshake" in options.eras
        #: Every revision this transport serves (``server/discover``, ``-32022``), newest first.
        self.supported: tuple[str, ...] = (
            *(MODERN_PROTOCOL_VERSIONS if self.modern else ()),
            *(SUPPORTED_PROTOCOL_VERSIONS if self.handshake else ()),
        )

    def stateless_only(self, protocol_header: str | None) -> bool:
        """Whether a GET or DELETE gets 405: no session era served, or a stateless revision named."""
        return self.modern and (not self.handshake or protocol_header in MODERN_PROTOCOL_VERSIONS)

    def is_modern(self, message: Message, protocol_header: str | None, session_header: str | None) -> bool:
        """Whether a POSTed message is served statelessly.

        Yes when its ``_meta`` names a protocol version, or its
        ``MCP-Protocol-Version`` is a stateless revision, or (no session
        named) a revision the handshake era does not know; an
        ``initialize`` without ``_meta`` opens a session.
        """
        if not self.modern:
            return False
        if not self.handshake:
            return True
        meta = message.params.get("_meta")
        if isinstance(meta, dict) and META_VERSION in meta:
            return True
        if protocol_header is None or protocol_header in SUPPORTED_PROTOCOL_VERSIONS:
            return False
        return protocol_header in MODERN_PROTOCOL_VERSIONS or (session_header is None and message.method != "initialize")

    def check(self, message: Message, header: Callable[[str], str | None]) -> ModernRequest:
        """Check a stateless request (or notification); :class:`HttpError` with its id if it is refused."""
        id = message.id
        meta = message.params.get("_meta")
        if not isinstance(meta, dict) or META_VERSION not in meta or META_CAPABILITIES not in meta:
            raise HttpError(
                400,
                INVALID_PARAMS,
                f"Invalid params: params._meta must carry {META_VERSION!r} and {META_CAPABILITIES!r}",
                id=id,
            )
        version = meta[META_VERSION]
        self._check_headers(message, version, header)
        if type(version) is not str or version not in MODERN_PROTOCOL_VERSIONS:
            raise HttpError(
                400,
                UNSUPPORTED_PROTOCOL_VERSION,
                f"Unsupported protocol version: {str(version)[:64]!r}",
                id=id,
                data={"supported": list(MODERN_PROTOCOL_VERSIONS), "requested": version if type(version) is str else None},
            )
        capabilities, client_info, level = meta[META_CAPABILITIES], meta.get(_META_CLIENT_INFO), meta.get(_META_LOG_LEVEL)
        if not isinstance(capabilities, dict) or not (client_info is None or isinstance(client_info, dict)):
            raise HttpError(400, INVALID_PARAMS, "Invalid params: client capabilities and info must be objects", id=id)
        if level is not None and level not in LOG_LEVELS:
            raise HttpError(400, INVALID_PARAMS, f"Invalid params: logLevel must be one of {', '.join(LOG_LEVELS)}", id=id)
        if message.kind == REQUEST and message.method in REMOVED_METHODS:
            raise HttpError(404, METHOD_NOT_FOUND, f"Method not found: {message.method} (not in {version})", id=id)
        return ModernRequest(version, capabilities, client_info, level)

    @staticmethod
    def _check_headers(message: Message, version: Any, header: Callable[[str], str | None]) -> None:
        """The HTTP headers must mirror the body: ``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``."""
        mirrored = [("MCP-Protocol-Version", version), ("Mcp-Method", message.method)]
        field = _NAMED_BY.get(message.method or "")
        if field is not None and message.params.get(field) is not None:
            mirrored.append(("Mcp-Name", message.params[field]))
        for name, expected in mirrored:
            value = header(name)
            got = decode_header(value)
            if name != "Mcp-Name" and got != (None if value is None else value.strip()):
                got = None  # only Mcp-Name may be base64-encoded
            if got is None or got != expected:
                state = "missing" if value is None else "does not match the body"
                raise HttpError(400, HEADER_MISMATCH, f"Header mismatch: the {name} header {state}", id=message.id)

    # -- listen streams ------------------------------------------------------------------

    def listen_filter(self, notifications: object, id: RequestId) -> ListenFilter:
        """What a listen request asks for, cut to what this server honours; 400 (-32602) if malformed or too large.

        Honoured: the list changes of the capabilities the options declare
        (``tools``, ``prompts``, ``resources``) and resource updates if
        ``resources.subscribe`` is declared; a server that declares no
        capabilities at all honours everything.
        """
        try:
            wanted = ListenFilter.parse(notifications)
        except (TypeError, ValueError) as exc:
            raise HttpError(400, INVALID_PARAMS, f"Invalid params: {exc}", id=id) from None
        size = sum(len(uri.encode("utf-8", "surrogatepass")) for uri in wanted.resource_subscriptions)
        if size > MAX_LISTEN_URI_BYTES:
            raise HttpError(
                400,
                INVALID_PARAMS,
                f"Invalid params: resourceSubscriptions take {size} bytes, at most {MAX_LISTEN_URI_BYTES}",
                id=id,
            )
        capabilities = self.options.capabilities
        if not capabilities:
            return wanted
        resources = capabilities.get("resources")
        return wanted.honoured(
            tools="tools" in capabilities,
            prompts="prompts" in capabilities,
            resources=resources is not None,
            subscribe=isinstance(resources, dict) and bool(resources.get("subscribe")),
        )

    # -- results -------------------------------------------------------------------

    def discover(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """``server/discover``: what the handler returned, completed from the options as ``initialize`` is."""
        options = self.options
        done = dict(result)
        done.pop("protocolVersion", None)
        server_info = done.pop("serverInfo", options.server_info)
        done["supportedVersions"] = list(self.supported)
        done.setdefault("capabilities", options.capabilities)
        if options.instructions is not None:
            done.setdefault("instructions", options.instructions)
        meta = dict(done.get("_meta") or {})
        meta.setdefault(_META_SERVER_INFO, server_info)
        done["_meta"] = meta
        return done

    def complete(self, method: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """Completes a handler's result: ``resultType``, the server info in ``_meta``, and cache hints where cacheable."""
        options = self.options
        cacheable = method in CACHEABLE_METHODS
        discover = method == "server/discover"

        def completed(result: dict[str, Any]) -> dict[str, Any]:
            if discover:
                result = self.discover(result)
            else:
                meta = result.get("_meta")
                if meta is None:
                    result["_meta"] = {_META_SERVER_INFO: options.server_info}
                elif isinstance(meta, dict):
                    meta.setdefault(_META_SERVER_INFO, options.server_info)
            result.setdefault("resultType", "complete")
            if cacheable and result["resultType"] == "complete":
                result.setdefault("ttlMs", options.cache_ttl_ms)
                result.setdefault("cacheScope", options.cache_scope)
            return result

        return completed

