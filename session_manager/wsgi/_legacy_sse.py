"""LegacySse: the HTTP+SSE transport of MCP revision 2024-11-05, as HTTP over an McpApp.

``GET <sse>`` mints a session and opens its stream, whose first event,
``endpoint``, names the URL to POST to (``<messages>?sessionId=<id>``):
the request's script root and path with *sse_path* replaced by
*messages_path*, so it is right however the app is mounted. Each POST
carries one client message and is answered ``202 Accepted`` at once; the
reply, and whatever the handler emits meanwhile, travel on the session's
stream through ``managers.streams.send``, so with a shared backend the POST
may land on another process than the stream. The stream ending (client
gone) ends the session. The protocol steps are Streamable HTTP's
(:mod:`._handshake`), with the 2024-11-05 revision also accepted.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import quote

from werkzeug.wrappers import Request, Response

from .._jsonrpc import INVALID_REQUEST, REQUEST, SERVER_ERROR, HttpError, JsonRpcError, Message, error_response
from ..base import SessionInfo
from ..errors import SessionManagerError
from ..sse import encode_event
from ..stream import StreamController
from ._checks import accepts, check_content_type, method_not_allowed, read_message, url_path
from ._context import RequestContext
from ._handler import Handler, OnSuccess, invoke, send_reply
from ._handshake import LEGACY_SUPPORTED_PROTOCOL_VERSIONS
from ._headers import body, header
from ._responses import SSE, long_lived_response

if TYPE_CHECKING:
    from ._app import McpApp

__all__ = ["MESSAGE_METHODS", "SESSION_PARAM", "STREAM_METHODS", "LegacySse"]

logger = logging.getLogger(__name__)

#: Query parameter of the POST URL that carries the session id.
SESSION_PARAM = "sessionId"
#: The methods each URL serves; anything else is 405 with this ``Allow``.
STREAM_METHODS = ("GET",)
MESSAGE_METHODS = ("POST",)
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
    frame_overhead = len(_MESSAGE_EVENT)

    def enqueue_frame(self, frame: bytes) -> bool:
        if frame.startswith((b"data:", b"id:")):
            frame = _MESSAGE_EVENT + frame
        return super().enqueue_frame(frame)

    def prime(self, frames: list[bytes]) -> None:
        super().prime(
            [frame[: -len(_EMPTY_DATA)] + b"\n" if frame.endswith(_EMPTY_DATA) else frame for frame in frames]
        )


def _accepted() -> Response:
    return Response("Accepted", 202, content_type="text/plain; charset=utf-8")


class LegacySse:
    """The two URLs of the legacy transport on an :class:`~session_manager.wsgi.McpApp`'s sessions.

    :meth:`serve_stream` answers *sse_path* (``GET``: a new session and its
    stream), :meth:`serve_messages` answers *messages_path* (``POST
    ?sessionId=``: one client message). Both take a werkzeug ``Request``
    and never raise. The app's handler, options, managers and shutdown
    serve both transports.
    """

    __slots__ = ("_app", "messages_path", "sse_path")

    def __init__(self, app: McpApp, sse_path: str = "/sse", messages_path: str = "/messages") -> None:
        if url_path(sse_path, "sse_path") == url_path(messages_path, "messages_path"):
            raise ValueError(f"sse_path and messages_path must differ, both are {sse_path!r}")
        self._app = app
        self.sse_path = sse_path
        self.messages_path = messages_path

    def serve_stream(self, request: Request) -> Response:
        """``GET``: open a new session and its stream."""
        return self._app._answer(request, self._open)

    def serve_messages(self, request: Request) -> Response:
        """``POST ?sessionId=``: one client message for the session's stream."""
        return self._app._answer(request, self._post)

    def messages_url(self, request: Request, session_id: str) -> str:
        """Where the client of the stream opened by *request* POSTs: its URL with *messages_path* for *sse_path*."""
        path = request.path
        base = path[: -len(self.sse_path)] if path.endswith(self.sse_path) else ""
        return f"{quote(request.script_root + base + self.messages_path)}?{SESSION_PARAM}={quote(session_id)}"

    # -- GET -------------------------------------------------------------------

    def _open(self, request: Request) -> Response:
        app = self._app
        if request.method not in STREAM_METHODS:
            raise method_not_allowed(STREAM_METHODS)
        accept = header(request, "Accept")
        if accept is not None and not accepts(accept, SSE):
            raise HttpError(406, SERVER_ERROR, f"Not Acceptable: the stream needs Accept: {SSE}")
        session_id, key = app._handshake.new_session(app._principal(request))
        controller = app._new_stream(request, _MessageEvents)
        controller.add_close_callback(functools.partial(self._end, key))
        try:
            controller.enqueue_frame(encode_event(self.messages_url(request, session_id), event="endpoint"))
            app.managers.streams.create(key, controller)
        except BaseException:
            controller.close()  # never read: ends the session at once
            raise
        logger.debug("legacy SSE session opened")
        return long_lived_response(controller, request.environ)

    def _end(self, key: str) -> None:
        """The stream is over (client gone, or session deleted): the session goes with it, its requests cancelled."""
        self._app._lifecycle.requests.cancel_session(key)
        try:
            self._app.managers.delete(key)
        except SessionManagerError as exc:
            logger.warning("legacy SSE session could not be deleted (it expires instead): %s", exc)

    # -- POST ------------------------------------------------------------------

    def _post(self, request: Request) -> Response:
        app, steps = self._app, self._app._handshake
        if request.method not in MESSAGE_METHODS:
            raise method_not_allowed(MESSAGE_METHODS)
        session_id = request.args.get(SESSION_PARAM)
        if not session_id:
            raise HttpError(400, INVALID_REQUEST, f"Bad Request: the {SESSION_PARAM} query parameter is required")
        key = steps.key_of(session_id, app._principal(request))
        info = self._session_info(key)  # before the body: nothing runs for an unknown session
        check_content_type(header(request, "Content-Type"))
        message = read_message(*body(request), app.options.max_body_size)
        emit = steps.to_session(key)
        try:
            prepared = self._prepare(key, info, message)
        except JsonRpcError as error:
            emit(error_response(message.id, error))
            return _accepted()
        if prepared is None:
            app._lifecycle.requests.notice(key, message.method, message.params)  # the handler sees it too
            steps.client_message(app.handler, key, info, message)
            return _accepted()
        info, record = prepared
        ctx = steps.context(key, info, message, emit)
        app._lifecycle.start(
            key, message.method or "request", _run_request, app.handler, message, ctx, record, request=ctx
        )
        return _accepted()

    def _session_info(self, key: str) -> SessionInfo:
        """The session's info, or 404; a stream that outlived its session (expired) is closed then.

        The client learns from its stream ending that it must reconnect,
        rather than from requests that can no longer be answered.
        """
        try:
            return self._app._handshake.session_info(key)
        except HttpError:
            try:
                self._app.managers.streams.delete(key)
            except SessionManagerError as exc:
                logger.warning("could not close the stream of a gone legacy session: %s", exc)
            raise

    def _prepare(self, key: str, info: SessionInfo, message: Message) -> tuple[SessionInfo, OnSuccess | None] | None:
        """For a request: the session as its handler sees it, and the bookkeeping once it succeeds.

        ``None`` for notifications and client responses. An ``initialize``
        must be a request (400); it declares what the session records.
        """
        steps = self._app._handshake
        if message.method == "initialize":
            declared = steps.negotiate(message, LEGACY_SUPPORTED_PROTOCOL_VERSIONS)
            return replace(declared, log_level=info.log_level), steps.record_initialize(key, declared)
        if message.kind != REQUEST:
            return None
        return info, steps.bookkeeping(key, message)


def _run_request(handler: Handler, message: Message, ctx: RequestContext, record: OnSuccess | None) -> None:
    """The body of a legacy request's own thread: the reply goes where the handler's messages go."""
    send_reply(ctx.send, message, invoke(handler, message, ctx, record)[0])
