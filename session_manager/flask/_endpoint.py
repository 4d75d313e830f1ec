"""Endpoint: the Streamable HTTP protocol behind McpBlueprint's single URL.

POST carries one client message, GET opens the session's stream (or,
with ``Last-Event-ID``, resumes one), DELETE ends the session. What it shares with the legacy transport (checks,
sessions, bookkeeping, the handler's context, error mapping) is in
:mod:`._core`.
"""

from __future__ import annotations

import logging

from flask import Response, request

from .._jsonrpc import INVALID_REQUEST, REQUEST, SERVER_ERROR, HttpError, JsonRpcError, Message, error_response
from ..errors import StreamConflictError
from ..events import is_get_stream, parse_event_id
from ..sse import encode_event
from ._checks import (
    SUPPORTED_PROTOCOL_VERSIONS,
    accepts,
    check_content_type,
    check_protocol_version,
    method_not_allowed,
)
from ._core import JSON, OPENED, SSE, TransportCore, empty_response, json_response, sse_response
from ._handler import invoke, notify_handler
from ._streams import stored_reply

__all__ = ["ALLOWED_METHODS", "Endpoint"]

logger = logging.getLogger(__name__)

SESSION_HEADER = "Mcp-Session-Id"
PROTOCOL_HEADER = "MCP-Protocol-Version"
LAST_EVENT_ID_HEADER = "Last-Event-ID"
#: Methods the endpoint serves; anything else is 405 with this ``Allow``.
ALLOWED_METHODS = ("GET", "POST", "DELETE")


class Endpoint:
    """The Streamable HTTP protocol of one MCP endpoint; :meth:`view` is its Flask view."""

    def __init__(self, core: TransportCore, *, json_response: bool) -> None:
        self.core = core
        self.json_response = bool(json_response)

    def view(self) -> Response:
        """Answer one HTTP request; never raises and never leaks a traceback."""
        return self.core.respond(self._dispatch)

    def refuse_method(self) -> Response:
        """The 405 response for any method but GET, POST and DELETE."""
        return self.core.error(method_not_allowed(ALLOWED_METHODS))

    def _dispatch(self) -> Response:
        self.core.check_peer()
        method = request.method
        if method == "POST":
            return self._post()
        if method == "GET":
            return self._get()
        if method == "DELETE":
            return self._delete()
        raise method_not_allowed(ALLOWED_METHODS)

    def _session_key(self) -> str:
        """The managers' key of the request's session: 400 without the header, 404 if it cannot be ours."""
        session_id = request.headers.get(SESSION_HEADER)
        if session_id is None:
            raise HttpError(400, INVALID_REQUEST, f"Bad Request: the {SESSION_HEADER} header is required")
        check_protocol_version(request.headers.get(PROTOCOL_HEADER))
        return self.core.key_of(session_id)

    # -- POST ----------------------------------------------------------------

    def _post(self) -> Response:
        core = self.core
        check_content_type(request.mimetype)
        accept = request.accept_mimetypes
        sse_ok, json_ok = accepts(accept, SSE), accepts(accept, JSON)
        if not (sse_ok or json_ok):
            raise HttpError(406, SERVER_ERROR, f"Not Acceptable: Accept must allow {JSON} or {SSE}")
        use_sse = sse_ok and not (self.json_response and json_ok)
        message = core.read_message()
        if message.method == "initialize":
            return self._initialize(message, use_sse)
        key = self._session_key()
        info = core.session_info(key)
        if message.kind != REQUEST:
            notify_handler(core.handler, message, core.context(key, info, message, core.to_session(key)))
            return empty_response(202)
        try:
            on_success = core.bookkeeping(key, message)
        except JsonRpcError as error:
            return self._reply(error_response(message.id, error), use_sse, key)
        if not use_sse:
            ctx = core.context(key, info, message, core.to_session(key))
            return self._reply(invoke(core.handler, message, ctx, on_success)[0], use_sse)
        return sse_response(core.stream_post(key, info, message, on_success))

    def _initialize(self, message: Message, use_sse: bool) -> Response:
        """Mint a session, store what the client declared, answer with the InitializeResult."""
        core = self.core
        try:
            declared = core.initialize_params(message, SUPPORTED_PROTOCOL_VERSIONS)
        except JsonRpcError as error:
            raise HttpError(400, error.code, error.message, id=message.id) from None
        version = declared.protocol_version
        assert version is not None
        session_id, key = core.new_session(
            protocol_version=version,
            client_info=declared.client_info,
            client_capabilities=declared.client_capabilities,
        )
        ctx = core.context(key, declared, message, core.to_session(key))
        reply, ok = invoke(core.handler, message, ctx, core.complete_initialize(version))
        if not ok:
            core.managers.info.delete(key)
            return self._reply(reply, use_sse)
        response = self._reply(reply, use_sse, key)
        response.headers[SESSION_HEADER] = session_id
        return response

    def _reply(self, reply: str, use_sse: bool, key: str | None = None) -> Response:
        """A reply sent at once; over SSE, with an event store and a session, primed and stored like any POST stream."""
        if not use_sse:
            return json_response(reply)
        store = self.core.managers.streams.event_store
        if store is None or key is None:
            return sse_response([encode_event(reply)])
        return sse_response(stored_reply(store, key, reply, self.core.retry))

    # -- GET and DELETE --------------------------------------------------------

    def _get(self) -> Response:
        """Open the session's stream for server-initiated messages (one per session), or resume a stream.

        With an event store, ``Last-Event-ID`` resumes the stream its id
        belongs to: the session's GET stream (replacing the open one, whose
        client is the one resuming) or a POST's stream. Without a store the
        header is ignored: delivery is at most once.
        """
        core = self.core
        if not accepts(request.accept_mimetypes, SSE):
            raise HttpError(406, SERVER_ERROR, f"Not Acceptable: a GET stream needs Accept: {SSE}")
        key = self._session_key()
        core.check_exists(key)
        streams = core.managers.streams
        last_event_id = request.headers.get(LAST_EVENT_ID_HEADER) if streams.event_store is not None else None
        if last_event_id:
            stream_id = parse_event_id(last_event_id)[0]
            if not is_get_stream(stream_id):
                return core.resume_post(key, stream_id, last_event_id)
        controller = core.new_stream()
        controller.enqueue_frame(OPENED)
        try:
            if last_event_id:
                streams.create(key, controller, last_event_id=last_event_id)
            else:
                streams.create(key, controller)
        except StreamConflictError:
            controller.close()
            raise HttpError(409, SERVER_ERROR, "Conflict: this session already has an open stream") from None
        except BaseException:
            controller.close()
            raise
        try:
            core.check_exists(key)  # deleted while the stream was registered
        except HttpError:
            controller.close()  # never read: unregisters it at once
            streams.delete(key)  # and drops the log the racing create may have opened
            raise
        except BaseException:
            controller.close()
            raise
        return sse_response(controller)

    def _delete(self) -> Response:
        """End the session: its stream and all its metadata."""
        key = self._session_key()
        self.core.check_exists(key)
        self.core.managers.delete(key)
        return empty_response(204)
