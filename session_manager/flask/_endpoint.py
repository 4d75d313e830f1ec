"""Endpoint: the Streamable HTTP protocol behind the blueprint's single URL.

POST carries one client message, GET opens the session's stream, DELETE
ends the session. Every refusal is an :class:`HttpError` turned into a
JSON-RPC error body here, so a client never sees a traceback.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Dict, Iterable, Optional, Union

from flask import Response, request
from werkzeug.exceptions import HTTPException

from .. import __version__
from .._validate import LOG_LEVELS
from ..base import SessionInfo, SessionManagers
from ..errors import BackendUnavailableError, StreamConflictError
from ..sse import encode_comment, encode_event
from ..stream import StreamController
from ._checks import (
    LATEST_PROTOCOL_VERSION,
    SUPPORTED_PROTOCOL_VERSIONS,
    Allowlist,
    accepts,
    check_content_type,
    check_host,
    check_origin,
    check_protocol_version,
    read_body,
)
from ._context import RequestContext
from ._handler import Handler, OnSuccess, invoke, notify_handler, run_streamed
from ._jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    REQUEST,
    SERVER_ERROR,
    SESSION_NOT_FOUND,
    HttpError,
    JsonRpcError,
    Message,
    error_response,
    parse_message,
)
from ._session import is_minted, mint_session_id, session_key

__all__ = ["Endpoint", "ALLOWED_METHODS"]

logger = logging.getLogger(__name__)

SESSION_HEADER = "Mcp-Session-Id"
PROTOCOL_HEADER = "MCP-Protocol-Version"
JSON = "application/json"
SSE = "text/event-stream"
#: Methods the endpoint serves; anything else is 405 with this ``Allow``.
ALLOWED_METHODS = ("GET", "POST", "DELETE")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: First bytes of a stream, so the headers leave at once instead of with the first event.
_OPENED = encode_comment("open")

Principal = Callable[[], Optional[str]]


def _not_found() -> HttpError:
    return HttpError(404, SESSION_NOT_FOUND, "Not Found: unknown or terminated session; initialize a new one")


def _json_response(body: str, status: int = 200) -> Response:
    return Response(body, status, content_type=JSON)


def _sse_response(body: Union[StreamController, Iterable[bytes]]) -> Response:
    response = Response(body, 200, content_type=SSE, headers=_SSE_HEADERS)
    if isinstance(body, StreamController):
        response.call_on_close(body.close)
    return response


def _empty_response(status: int) -> Response:
    response = Response(b"", status)
    del response.headers["Content-Type"]
    return response


def _after(action: Callable[[], object]) -> OnSuccess:
    """An :data:`OnSuccess` hook that runs *action* and keeps the result."""

    def on_success(result: Dict[str, Any]) -> Dict[str, Any]:
        action()
        return result

    return on_success


def _progress_token(message: Message) -> Optional[Union[str, int]]:
    meta = message.params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if type(token) in (str, int) else None


class Endpoint:
    """The protocol logic of one MCP endpoint; :meth:`view` is its Flask view."""

    def __init__(
        self,
        handler: Handler,
        managers: SessionManagers,
        *,
        server_info: Optional[Dict[str, Any]],
        capabilities: Optional[Dict[str, Any]],
        instructions: Optional[str],
        json_response: bool,
        allowed_hosts: Optional[Iterable[str]],
        allowed_origins: Optional[Iterable[str]],
        max_body_size: int,
        keepalive: float,
        stream_maxsize: int,
        principal: Optional[Principal],
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if principal is not None and not callable(principal):
            raise TypeError(f"principal must be callable, not {type(principal).__name__}")
        if type(max_body_size) is not int or max_body_size < 1:
            raise ValueError(f"max_body_size must be a positive int, got {max_body_size!r}")
        StreamController(keepalive=keepalive, maxsize=stream_maxsize)  # validates both, fails early
        self.handler = handler
        self.managers = managers
        self.server_info = dict(server_info) if server_info else {"name": "session_manager", "version": __version__}
        self.capabilities = dict(capabilities or {})
        self.instructions = instructions
        self.json_response = bool(json_response)
        self.hosts = None if allowed_hosts is None else Allowlist(allowed_hosts, origins=False)
        self.origins = None if allowed_origins is None else Allowlist(allowed_origins, origins=True)
        self.max_body_size = max_body_size
        self.keepalive = keepalive
        self.stream_maxsize = stream_maxsize
        self.principal = principal

    # -- the view ------------------------------------------------------------

    def view(self) -> Response:
        """Answer one HTTP request; never raises and never leaks a traceback."""
        try:
            response = self._dispatch()
        except HttpError as exc:
            response = self.error(exc)
        except BackendUnavailableError as exc:
            logger.warning("session backend unavailable: %s", exc)
            response = self.error(HttpError(503, INTERNAL_ERROR, "Service Unavailable: session backend unavailable"))
        except HTTPException as exc:  # e.g. abort(401) in a principal callable
            response = self._from_http_exception(exc)
        except Exception:
            logger.exception("MCP endpoint failed on %s", request.method)
            response = self.error(HttpError(500, INTERNAL_ERROR, "Internal Server Error"))
        response.vary.add("Origin")
        return response

    @staticmethod
    def error(exc: HttpError) -> Response:
        """The HTTP response of a refused request."""
        response = _json_response(exc.body(), exc.status)
        response.headers.extend(exc.headers)
        return response

    def _from_http_exception(self, exc: HTTPException) -> Response:
        """A werkzeug error as a JSON-RPC error body, its headers (e.g. WWW-Authenticate) kept."""
        if exc.response is not None:  # the application built its own response: respect it
            return exc.response  # type: ignore[return-value]
        status = exc.code if exc.code and exc.code >= 400 else 400
        skip = ("content-type", "content-length")
        headers = {name: value for name, value in exc.get_headers(request.environ) if name.lower() not in skip}
        return self.error(HttpError(status, SERVER_ERROR, f"{status} {exc.name}", headers=headers))

    @staticmethod
    def method_not_allowed() -> HttpError:
        """405 for any method but GET, POST and DELETE."""
        return HttpError(
            405,
            SERVER_ERROR,
            "Method Not Allowed: use POST, GET or DELETE",
            headers={"Allow": ", ".join(ALLOWED_METHODS)},
        )

    def _dispatch(self) -> Response:
        check_host(self.hosts, request.headers.get("Host"))
        check_origin(self.origins, request.headers.get("Origin"))
        method = request.method
        if method == "POST":
            return self._post()
        if method == "GET":
            return self._get()
        if method == "DELETE":
            return self._delete()
        raise self.method_not_allowed()

    # -- sessions ------------------------------------------------------------

    def _session_key(self) -> str:
        """The managers' key of the request's session: 400 without the header, 404 if it cannot be ours."""
        session_id = request.headers.get(SESSION_HEADER)
        if session_id is None:
            raise HttpError(400, INVALID_REQUEST, f"Bad Request: the {SESSION_HEADER} header is required")
        check_protocol_version(request.headers.get(PROTOCOL_HEADER))
        if not is_minted(session_id):
            raise _not_found()
        return session_key(self._principal(), session_id)

    def _principal(self) -> Optional[str]:
        if self.principal is None:
            return None
        value = self.principal()
        return None if value is None else str(value)

    def _existing(self, key: str) -> None:
        if not self.managers.info.exists(key):
            raise _not_found()

    def _to_session(self, key: str) -> Callable[[str], object]:
        """An emitter to the session's GET stream."""
        return functools.partial(self.managers.streams.send, [key])

    # -- POST ----------------------------------------------------------------

    def _post(self) -> Response:
        check_content_type(request.mimetype)
        accept = request.accept_mimetypes
        sse_ok, json_ok = accepts(accept, SSE), accepts(accept, JSON)
        if not (sse_ok or json_ok):
            raise HttpError(406, SERVER_ERROR, f"Not Acceptable: Accept must allow {JSON} or {SSE}")
        use_sse = sse_ok and not (self.json_response and json_ok)
        message = parse_message(read_body(request.stream, request.content_length, self.max_body_size))
        if message.method == "initialize":
            if message.kind != REQUEST:
                raise HttpError(400, INVALID_REQUEST, "Invalid Request: initialize must be a request with an id")
            return self._initialize(message, use_sse)
        key = self._session_key()
        info = self.managers.info.get(key)
        if info is None:
            raise _not_found()
        if message.kind != REQUEST:
            notify_handler(self.handler, message, self._context(key, info, message, self._to_session(key)))
            return _empty_response(202)
        try:
            on_success = self._bookkeeping(key, message)
        except JsonRpcError as error:
            return self._reply(error_response(message.id, error), use_sse)
        if not use_sse:
            ctx = self._context(key, info, message, self._to_session(key))
            return self._reply(invoke(self.handler, message, ctx, on_success)[0], use_sse)
        controller = StreamController(keepalive=self.keepalive, maxsize=self.stream_maxsize)
        controller.enqueue_frame(_OPENED)
        run_streamed(self.handler, message, self._context(key, info, message, controller.enqueue), controller, on_success)
        return _sse_response(controller)

    def _initialize(self, message: Message, use_sse: bool) -> Response:
        """Mint a session, store what the client declared, answer with the InitializeResult."""
        params = message.params
        requested = params.get("protocolVersion")
        client_info = params.get("clientInfo")
        capabilities = params.get("capabilities")
        if type(requested) is not str or not all(v is None or isinstance(v, dict) for v in (client_info, capabilities)):
            raise HttpError(
                400,
                INVALID_PARAMS,
                "Invalid params: initialize needs a string protocolVersion and objects capabilities and clientInfo",
                id=message.id,
            )
        version = requested if requested in SUPPORTED_PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION
        session_id = mint_session_id()
        key = session_key(self._principal(), session_id)
        self.managers.info.create(
            key, protocol_version=version, client_info=client_info, client_capabilities=capabilities
        )
        info = SessionInfo(protocol_version=version, client_info=client_info, client_capabilities=capabilities)
        ctx = self._context(key, info, message, self._to_session(key))
        reply, ok = invoke(self.handler, message, ctx, self._complete_initialize(version))
        if not ok:
            self.managers.info.delete(key)
            return self._reply(reply, use_sse)
        response = self._reply(reply, use_sse)
        response.headers[SESSION_HEADER] = session_id
        return response

    def _complete_initialize(self, version: str) -> OnSuccess:
        """Fill the InitializeResult from the options; the negotiated version always wins."""

        def complete(result: Dict[str, Any]) -> Dict[str, Any]:
            result = dict(result)
            result["protocolVersion"] = version
            result.setdefault("capabilities", self.capabilities)
            result.setdefault("serverInfo", self.server_info)
            if self.instructions is not None:
                result.setdefault("instructions", self.instructions)
            return result

        return complete

    def _bookkeeping(self, key: str, message: Message) -> Optional[OnSuccess]:
        """What the info manager records once the handler accepted the request."""
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

    def _context(
        self, key: str, info: SessionInfo, message: Message, emit: Callable[[str], object]
    ) -> RequestContext:
        return RequestContext(
            session_id=key,
            protocol_version=info.protocol_version,
            client_info=info.client_info,
            client_capabilities=info.client_capabilities,
            log_level=info.log_level,
            request_id=message.id if message.kind == REQUEST else None,
            method=message.method,
            progress_token=_progress_token(message),
            emit=emit,
        )

    @staticmethod
    def _reply(reply: str, use_sse: bool) -> Response:
        return _sse_response([encode_event(reply)]) if use_sse else _json_response(reply)

    # -- GET and DELETE --------------------------------------------------------

    def _get(self) -> Response:
        """Open the session's stream for server-initiated messages (one per session)."""
        if not accepts(request.accept_mimetypes, SSE):
            raise HttpError(406, SERVER_ERROR, f"Not Acceptable: a GET stream needs Accept: {SSE}")
        key = self._session_key()
        self._existing(key)
        controller = StreamController(keepalive=self.keepalive, maxsize=self.stream_maxsize)
        controller.enqueue_frame(_OPENED)
        try:
            self.managers.streams.create(key, controller)
        except StreamConflictError:
            raise HttpError(409, SERVER_ERROR, "Conflict: this session already has an open stream") from None
        try:
            self._existing(key)  # deleted while the stream was registered
            return _sse_response(controller)
        except BaseException:
            controller.close()  # never read: unregisters it at once
            raise

    def _delete(self) -> Response:
        """End the session: its stream and all its metadata."""
        key = self._session_key()
        self._existing(key)
        self.managers.delete(key)
        return _empty_response(204)

