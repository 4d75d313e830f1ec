"""LegacyEndpoint: the HTTP+SSE transport of MCP revision 2024-11-05.

``GET <sse>`` mints a session and opens its stream, whose first event,
``endpoint``, names the URL to POST to (``<messages>?sessionId=<id>``).
Each POST carries one client message and is answered ``202 Accepted`` at
once; the reply, and whatever the handler emits meanwhile, travel on the
session's stream through ``managers.streams.send``, so with a shared
backend the POST may land on another process than the stream. The stream
ending (client gone) ends the session.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import Any

from flask import Response, request, url_for

from .._jsonrpc import INVALID_REQUEST, REQUEST, SERVER_ERROR, HttpError, JsonRpcError, Message, error_response
from ..base import SessionInfo
from ..errors import SessionManagerError
from ..sse import encode_event
from ..stream import StreamController
from ._checks import LEGACY_SUPPORTED_PROTOCOL_VERSIONS, accepts, check_content_type, method_not_allowed
from ._core import SSE, TransportCore, sse_response
from ._handler import OnSuccess, notify_handler

__all__ = ["MESSAGES_ENDPOINT", "SESSION_PARAM", "STREAM_ENDPOINT", "LegacyEndpoint"]

logger = logging.getLogger(__name__)

#: Query parameter of the POST URL that carries the session id.
SESSION_PARAM = "sessionId"
#: Blueprint-local endpoint names of the two views.
STREAM_ENDPOINT, MESSAGES_ENDPOINT = "sse", "messages"
_STREAM_METHODS = ("GET",)
_MESSAGE_METHODS = ("POST",)
_MESSAGE_EVENT = b"event: message\n"
_EMPTY_DATA = b"data: \n\n"


class _MessageEvents(StreamController):
    """A legacy stream: every message goes out as an ``event: message`` event.

    The 2024-11-05 transport names its events (``endpoint``, ``message``);
    an unnamed event is a ``message`` event to every SSE parser, but clients
    written against the reference servers may look for the name. Stream
    managers queue messages through :meth:`enqueue_frame`, so naming them
    here covers direct sends and fan-out alike (with an event store, those
    frames start with their ``id`` line).

    The legacy transport has no resumption, and its clients parse every
    ``message`` event as JSON: the priming event a stream manager with an
    event store starts the stream with keeps its ``id`` and ``retry`` but
    loses its empty ``data`` (so it dispatches no event).
    """

    __slots__ = ()

    def enqueue_frame(self, frame: bytes) -> bool:
        if frame.startswith((b"data:", b"id:")):
            frame = _MESSAGE_EVENT + frame
        return super().enqueue_frame(frame)

    def prime(self, frames: list[bytes]) -> None:
        super().prime([frame[: -len(_EMPTY_DATA)] + b"\n" if frame.endswith(_EMPTY_DATA) else frame for frame in frames])


def _accepted() -> Response:
    return Response("Accepted", 202, content_type="text/plain; charset=utf-8")


class LegacyEndpoint:
    """The two views of the legacy transport: :meth:`stream` (GET) and :meth:`messages` (POST)."""

    def __init__(self, core: TransportCore) -> None:
        self.core = core

    # -- views -----------------------------------------------------------------

    def stream(self) -> Response:
        """``GET``: open a new session and its stream."""
        return self.core.respond(self._open)

    def messages(self) -> Response:
        """``POST ?sessionId=``: one client message for the session's stream."""
        return self.core.respond(self._post)

    def refuse_stream_method(self) -> Response:
        return self.core.error(method_not_allowed(_STREAM_METHODS))

    def refuse_message_method(self) -> Response:
        return self.core.error(method_not_allowed(_MESSAGE_METHODS))

    # -- GET -------------------------------------------------------------------

    def _open(self) -> Response:
        core = self.core
        core.check_peer()
        if request.method not in _STREAM_METHODS:
            raise method_not_allowed(_STREAM_METHODS)
        if "Accept" in request.headers and not accepts(request.accept_mimetypes, SSE):
            raise HttpError(406, SERVER_ERROR, f"Not Acceptable: the stream needs Accept: {SSE}")
        session_id, key = core.new_session()
        controller = core.new_stream(_MessageEvents)
        controller.add_close_callback(functools.partial(self._end, key))
        try:
            query: dict[str, Any] = {SESSION_PARAM: session_id}
            endpoint = url_for(f".{MESSAGES_ENDPOINT}", **query)
            controller.enqueue_frame(encode_event(endpoint, event="endpoint"))
            core.managers.streams.create(key, controller)
        except BaseException:
            controller.close()  # never read: ends the session at once
            raise
        logger.debug("legacy SSE session opened")
        return sse_response(controller)

    def _end(self, key: str) -> None:
        """The stream is over (client gone, or session deleted): the session goes with it."""
        try:
            self.core.managers.delete(key)
        except SessionManagerError as exc:
            logger.warning("legacy SSE session could not be deleted (it expires instead): %s", exc)

    # -- POST ------------------------------------------------------------------

    def _post(self) -> Response:
        core = self.core
        core.check_peer()
        if request.method not in _MESSAGE_METHODS:
            raise method_not_allowed(_MESSAGE_METHODS)
        session_id = request.args.get(SESSION_PARAM)
        if not session_id:
            raise HttpError(400, INVALID_REQUEST, f"Bad Request: the {SESSION_PARAM} query parameter is required")
        key = core.key_of(session_id)
        info = self._session_info(key)  # before the body: nothing runs for an unknown session
        check_content_type(request.mimetype)
        message = core.read_message()
        emit = core.to_session(key)
        try:
            prepared = self._prepare(key, info, message)
        except JsonRpcError as error:
            emit(error_response(message.id, error))
            return _accepted()
        if prepared is None:
            notify_handler(core.handler, message, core.context(key, info, message, emit))
            return _accepted()
        info, on_success = prepared
        ctx = core.context(key, info, message, emit)
        core.spawn(message, ctx, ctx.send, on_success)
        return _accepted()

    def _session_info(self, key: str) -> SessionInfo:
        """The session's info, or 404; a stream that outlived its session (expired) is closed then.

        The client learns from its stream ending that it must reconnect,
        rather than from requests that can no longer be answered.
        """
        try:
            return self.core.session_info(key)
        except HttpError:
            try:
                self.core.managers.streams.delete(key)
            except SessionManagerError as exc:
                logger.warning("could not close the stream of a gone legacy session: %s", exc)
            raise

    def _prepare(self, key: str, info: SessionInfo, message: Message) -> tuple[SessionInfo, OnSuccess | None] | None:
        """For a request: the session as its handler sees it, and the bookkeeping once it succeeds.

        ``None`` for notifications and client responses. An ``initialize``
        must be a request (400); it declares what the session records.
        """
        if message.method == "initialize":
            declared = self.core.initialize_params(message, LEGACY_SUPPORTED_PROTOCOL_VERSIONS)
            return replace(declared, log_level=info.log_level), self.core.record_initialize(key, declared)
        if message.kind != REQUEST:
            return None
        return info, self.core.bookkeeping(key, message)
