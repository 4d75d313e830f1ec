"""McpApp: the MCP transport as a plain WSGI application (werkzeug ``Request``/``Response``, no Flask).

A POST reads top to bottom: :meth:`McpApp.__call__` routes the URL,
:meth:`McpApp._answer` refuses a closing server and foreign peers and turns
every failure into a JSON-RPC error, :meth:`McpApp._post` checks the HTTP
side and runs the protocol steps (:mod:`._handshake`), then either answers
at once or hands the request to its own thread feeding an SSE stream
(:mod:`._post_stream`, then :mod:`session_manager.stream`). GET and DELETE
follow in this file; the legacy HTTP+SSE URLs are in :mod:`._legacy_sse`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Request, Response

from .._jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    NOTIFICATION,
    REQUEST,
    SERVER_ERROR,
    HttpError,
    JsonRpcError,
    Message,
    error_response,
)
from ..base import SessionInfo, SessionManagers
from ..errors import StreamConflictError
from ..events import EventStore, is_get_stream, parse_event_id, resume_frames
from ..notifier import Notifier
from ..sse import encode_event, encode_message
from ..stream import StreamController
from ..subscriptions import ListenFilter, acknowledged_message
from ._checks import accepts, check_content_type, check_peer, method_not_allowed, read_message, url_path
from ._client_requests import INPUT_METHODS, ClientRequests, InputRounds
from ._context import Emit, RequestContext, context_for
from ._handler import Handler, OnSuccess, invoke, notify_handler
from ._handshake import (
    PROTOCOL_HEADER,
    SESSION_HEADER,
    SUPPORTED_PROTOCOL_VERSIONS,
    HandshakeSteps,
    not_found,
)
from ._headers import body, header
from ._legacy_sse import LegacySse
from ._lifecycle import Lifecycle, shutting_down, too_busy
from ._modern import (
    HEADER_MISMATCH,
    META_CAPABILITIES,
    META_VERSION,
    ModernRequest,
    ModernSteps,
    decode_header,
    http_status,
)
from ._options import DEFAULT_CLOSE_TIMEOUT, McpOptions
from ._param_headers import ToolHeaders, mismatch
from ._post_stream import PostStream, PostStreams, follow, has_response, resume_elsewhere, stored_reply
from ._request_state import StateSealer
from ._responses import (
    JSON,
    OPENED,
    SSE,
    empty_response,
    error_response_for,
    json_response,
    long_lived_response,
    refusal_for,
    respond,
    socket_closer,
    sse_response,
    vary_on_origin,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["MCP_METHODS", "McpApp"]

logger = logging.getLogger(__name__)

LAST_EVENT_ID_HEADER = "Last-Event-ID"
#: Methods the Streamable HTTP endpoint serves; anything else is 405 with this ``Allow``.
MCP_METHODS = ("GET", "POST", "DELETE")

#: Serves one MCP URL: a werkzeug request in, a response out, never raising.
Endpoint = Callable[[Request], Response]
#: The 2026-07-28 method that opens a listen stream.
LISTEN = "subscriptions/listen"
#: Seconds a stateless SSE answer waits for the handler's first message: an immediate refusal
#: (unknown method, missing capability) then gets its HTTP status (404, 400) instead of a 200 stream.
_FIRST_MESSAGE_GRACE = 0.5


def _nowhere(data: str) -> bool:
    """The emitter of a stateless request without a stream of its own: there is nowhere to send."""
    return False


def _discovering(handler: Handler) -> Handler:
    """*handler* for ``server/discover``: one that does not know the method answers from the options, as for ``initialize``."""

    def discover(message: dict[str, Any], ctx: RequestContext) -> dict[str, Any] | None:
        try:
            return handler(message, ctx)
        except JsonRpcError as error:
            if error.code != METHOD_NOT_FOUND:
                raise
            return {}

    return discover


def _error_code(reply: str) -> int:
    """The JSON-RPC error code of a serialized reply (0 for a result)."""
    if '"error"' not in reply:
        return 0  # every error response holds it: a result without it needs no parsing
    error = json.loads(reply).get("error")
    return error["code"] if isinstance(error, dict) else 0


class McpApp(Notifier):
    """MCP Streamable HTTP (2025-11-25, 2025-06-18, 2025-03-26) as a WSGI application, for any WSGI server or framework.

    It serves *path* (``/mcp``) and, with *legacy_sse*, the legacy HTTP+SSE
    transport (2024-11-05) at *sse_path* and *messages_path*; other URLs
    get 404. Every JSON-RPC message a client POSTs goes to
    ``handler(message, ctx)``, which returns the result ``dict`` of a
    request (or ``None`` for an empty one) or raises :class:`JsonRpcError`;
    for notifications and client responses its return value is ignored.
    ``ctx`` is a :class:`RequestContext`. The other keywords are the
    fields of :class:`McpOptions` (*principal* is called with the werkzeug
    ``Request``), or *options* gives them as one object.

    Sessions, log levels, subscriptions and streams live in *managers*
    (in memory by default; give Redis managers to share them between
    processes). The app is a :class:`~session_manager.notifier.Notifier`
    (``notify``, ``broadcast``, ``resource_updated``...), and :meth:`close`
    shuts it down. To mount it inside another framework, route its
    :attr:`paths` to it (a WSGI dispatcher), or hand a werkzeug ``Request``
    to :meth:`serve_mcp` (and to :attr:`legacy`'s ``serve_*``).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        managers: SessionManagers | None = None,
        path: str = "/mcp",
        legacy_sse: bool = False,
        sse_path: str = "/sse",
        messages_path: str = "/messages",
        options: McpOptions | None = None,
        **settings: Any,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if options is not None and settings:
            raise TypeError(f"give options= or keyword options, not both (got {', '.join(settings)})")
        Notifier.__init__(self, SessionManagers() if managers is None else managers)
        self.handler = handler
        #: The transport's options, checked (:class:`McpOptions`).
        self.options = McpOptions(**settings) if options is None else options
        self._lifecycle = lifecycle = Lifecycle(self.options.max_handlers, self.managers.info.exists)
        requests = ClientRequests(self.managers, closing=lambda: lifecycle.closing)  # waiting handlers give up
        self._handshake = HandshakeSteps(self.options, self.managers, requests)
        self._modern = ModernSteps(self.options)
        self._tool_headers = ToolHeaders()
        self._state_sealer: StateSealer | None = None
        self._posts = PostStreams()
        self.managers.info.keep_alive_while(self._lifecycle.is_running)
        #: The legacy HTTP+SSE URLs, if served (*legacy_sse*).
        self.legacy = LegacySse(self, sse_path, messages_path) if legacy_sse else None
        routes: dict[str, Endpoint] = {url_path(path, "path"): self.serve_mcp}
        if self.legacy is not None:
            routes.update({sse_path: self.legacy.serve_stream, messages_path: self.legacy.serve_messages})
            if len(routes) < 3:
                raise ValueError(
                    f"path, sse_path and messages_path must differ, got {path!r}, {sse_path!r}, {messages_path!r}"
                )
        self._routes = routes
        #: The URL paths this app answers (relative to its mount point, ``SCRIPT_NAME``).
        self.paths = tuple(routes)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI entry point: route the request's path, answer it."""
        request = Request(environ, populate_request=False)  # not in the environ: no cycle to collect per request
        endpoint = self._routes.get(request.path)
        if endpoint is None:
            return NotFound()(environ, start_response)
        return respond(endpoint(request), environ, start_response)

    def serve_mcp(self, request: Request) -> Response:
        """Answer one request to the Streamable HTTP endpoint, whatever its URL; never raises."""
        return self._answer(request, self._mcp)

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> bool:
        """Shut down: end every stream of this process, wait for handlers, close the managers.

        New requests get 503. Open streams (GET, POST and legacy) end at
        once with the ``retry`` hint, so clients reconnect; with a shared
        event store they resume on another process. Handlers still running
        get up to *timeout* seconds in all; then the managers close (Redis
        threads and connections included). Returns True if no handler was
        left running. Idempotent. Call it when the process stops (e.g.
        gunicorn's ``worker_exit``), not from a request.
        """
        self._lifecycle.stop_accepting()
        self.managers.subscriptions.close_all("shutdown")  # each listen stream gets its request's result
        return self._lifecycle.close(self.managers, timeout)

    # -- what every MCP URL does -------------------------------------------------------

    def _answer(self, request: Request, endpoint: Endpoint) -> Response:
        """Run *endpoint* once the server is open and the peer allowed; every failure becomes a JSON-RPC error."""
        try:
            if self._lifecycle.closing:
                raise shutting_down()
            check_peer(self.options.hosts, self.options.origins, header(request, "Host"), header(request, "Origin"))
            response = endpoint(request)
        except Exception as exc:  # noqa: BLE001 - every failure is answered; the table logs unexpected ones
            response = error_response_for(exc, request)
        return vary_on_origin(response)

    def _principal(self, request: Request) -> str | None:
        """The request's principal (the *principal* option), or None."""
        principal = self.options.principal
        if principal is None:
            return None
        value = principal(request)
        return None if value is None else str(value)

    def _new_stream(self, request: Request, kind: type[StreamController] = StreamController) -> StreamController:
        """A tracked stream for *request*, with the options' keepalive, bound and retry.

        A client that falls *stream_maxsize* frames or *stream_max_bytes*
        bytes behind has its socket shut, so a write blocked on it fails at
        once.
        """
        options = self.options
        stream = kind(
            keepalive=options.keepalive,
            maxsize=options.stream_maxsize,
            max_bytes=options.stream_max_bytes,
            retry=options.retry,
            on_overflow=socket_closer(request.environ),
        )
        return self._lifecycle.track(stream)

    # -- Streamable HTTP -----------------------------------------------------------------

    def _mcp(self, request: Request) -> Response:
        method = request.method
        if method == "POST":
            return self._post(request)
        if method in ("GET", "DELETE") and self._modern.stateless_only(header(request, PROTOCOL_HEADER)):
            raise method_not_allowed(("POST",))  # no session, no stream: only POST exists in this era
        if method == "GET":
            return self._get(request)
        if method == "DELETE":
            return self._delete(request)
        raise method_not_allowed(MCP_METHODS)

    def _session_key(self, request: Request) -> str:
        """The managers' key of the session the request names: 400 without the header, 404 if it cannot be ours."""
        steps = self._handshake
        session_id = steps.named_session(header(request, SESSION_HEADER), header(request, PROTOCOL_HEADER))
        return steps.key_of(session_id, self._principal(request))

    def _post(self, request: Request) -> Response:
        """One client message: 202 for a notification or response; for a request, its reply as JSON or SSE."""
        check_content_type(header(request, "Content-Type"))
        accept = header(request, "Accept")
        sse_ok, json_ok = accepts(accept, SSE), accepts(accept, JSON)
        if not (sse_ok or json_ok):
            raise HttpError(406, SERVER_ERROR, f"Not Acceptable: Accept must allow {JSON} or {SSE}")
        use_sse = sse_ok and not (self.options.json_response and json_ok)
        message = read_message(*body(request), self.options.max_body_size)
        try:
            if self._modern.is_modern(message, header(request, PROTOCOL_HEADER), header(request, SESSION_HEADER)):
                return self._stateless(request, message, use_sse)
            return self._answer_message(request, message, use_sse)
        except Exception as exc:
            refusal = refusal_for(exc)  # refused once the message was read: the client learns which one
            if refusal is None:
                raise
            if refusal.id is None:
                refusal.id = message.id
            try:
                if refusal is exc:
                    raise
                raise refusal from exc
            finally:
                del refusal  # its traceback holds this frame: no cycle for the collector per refused request

    def _answer_message(self, request: Request, message: Message, use_sse: bool) -> Response:
        """A parsed message: ``initialize``, or one of an existing session."""
        if message.method == "initialize":
            return self._initialize(request, message, use_sse)
        if message.method == LISTEN and message.kind == REQUEST:  # a 2026-07-28 method: sessions have GET streams
            raise HttpError(
                404, METHOD_NOT_FOUND, f"Method not found: {LISTEN} needs protocol 2026-07-28 (no session)", id=message.id
            )
        steps = self._handshake
        key = self._session_key(request)
        info = steps.session_info(key)
        if message.kind != REQUEST:
            self._lifecycle.requests.notice(key, message.method, message.params)  # the handler sees it too
            steps.client_message(self.handler, key, info, message)
            return empty_response(202)
        try:
            record = steps.bookkeeping(key, message)
        except JsonRpcError as error:
            return self._reply(error_response(message.id, error), use_sse, key)
        if not use_sse:
            ctx = steps.context(key, info, message, steps.to_session(key))
            with self._lifecycle.requests.running(ctx):
                reply = invoke(self.handler, message, ctx, record)[0]
            return self._reply(reply, use_sse)
        return self._stream_post(request, key, info, message, record)

    def _stream_post(
        self, request: Request, key: str, info: SessionInfo, message: Message, record: OnSuccess | None
    ) -> Response:
        """Answer a request with an SSE stream its handler feeds live, from the request's own thread.

        With an event store the stream is resumable: while the handler runs,
        a ``GET`` with one of its event ids takes it over (:meth:`_resume_post`).
        """
        controller = self._new_stream(request)
        try:
            post = PostStream(key, controller, self.managers.streams.event_store)
            if post.stream_id is not None and not self.managers.info.exists(key):
                self.managers.streams.delete(key)  # deleted meanwhile: drop the log just opened
                raise not_found()
        except BaseException:
            controller.close()
            raise
        controller.enqueue_frame(OPENED)
        self._posts.add(post)
        ctx = self._handshake.context(key, info, message, post.send, post.close_early)
        try:
            self._lifecycle.start(
                key, message.method or "request", self._posts.run, post, self.handler, message, ctx, record, request=ctx
            )
        except BaseException:
            self._posts.end(post)
            controller.close()
            raise
        return sse_response(controller)

    # -- the stateless era (2026-07-28) ------------------------------------------------

    def _stateless(self, request: Request, message: Message, use_sse: bool) -> Response:
        """A request that stands alone: checked, then answered as JSON or on its own SSE stream; no session."""
        read = functools.partial(header, request)
        declared = self._modern.check(message, read)
        if message.method == "tools/call" and message.kind == REQUEST:
            self._check_param_headers(read, message, declared)
        if message.kind != REQUEST:  # a notification (a response answers nothing in this era)
            if message.kind == NOTIFICATION:
                notify_handler(self.handler, message, self._stateless_context(message, declared, _nowhere))
            return empty_response(202)
        if message.method == LISTEN:
            return self._listen(request, message, declared)
        rounds = None
        if message.method in INPUT_METHODS:
            try:
                rounds = InputRounds(
                    self._sealer(), self._principal(request), message, declared.client_capabilities,
                    self.managers.info.claim,
                )
            except JsonRpcError as error:
                return self._stateless_reply(error_response(message.id, error), False, use_sse)
        complete = self._modern.complete(message.method)
        handler = _discovering(self.handler) if message.method == "server/discover" else self.handler
        if not use_sse:
            ctx = self._stateless_context(message, declared, _nowhere, rounds)
            return self._stateless_reply(*invoke(handler, message, ctx, complete), use_sse)
        controller = self._new_stream(request)
        cancel = threading.Event()
        controller.add_close_callback(cancel.set)  # the client closed the stream: the request is cancelled
        post = PostStream("", controller, None)
        post.first_sent = threading.Event()
        controller.enqueue_frame(OPENED)
        ctx = self._stateless_context(message, declared, post.send, rounds, cancel)
        try:
            self._lifecycle.start("", message.method or "request", self._posts.run, post, handler, message, ctx, complete)
        except BaseException:
            controller.close()
            raise
        post.first_sent.wait(_FIRST_MESSAGE_GRACE)
        first = post.first
        if first is not None and first[1]:  # the reply came first: the handler is done, nothing else will follow
            controller.close()
            return self._stateless_reply(first[0], False, use_sse)  # a refusal is said with its HTTP status too
        return sse_response(controller)

    def _check_param_headers(self, read: Callable[[str], str | None], message: Message, declared: ModernRequest) -> None:
        """400 (-32020) unless the ``Mcp-Param-*`` headers mirror the tool's annotated arguments."""
        name, arguments = message.params.get("name"), message.params.get("arguments")
        if type(name) is not str:
            return  # the handler refuses the call
        found = self._tool_headers.of(name, lambda cursor: self._tools_page(message, declared, cursor))
        if found:
            reason = mismatch(found, arguments if isinstance(arguments, dict) else {}, read, decode_header)
            if reason is not None:
                raise HttpError(400, HEADER_MISMATCH, f"Header mismatch: {reason}", id=message.id)

    def _tools_page(self, message: Message, declared: ModernRequest, cursor: str | None) -> dict[str, Any]:
        """One page of the handler's own ``tools/list``: where the annotations come from.

        Asked with a neutral ``_meta`` (the protocol version, no capability,
        no client info), not as the caller, so no caller shapes what is
        checked for everyone. A handler that does not know the method has
        no annotated tools; any other failure is a 503 for this call, and
        nothing is kept (the check never silently turns off).
        """
        meta = {META_VERSION: declared.protocol_version, META_CAPABILITIES: {}}
        params: dict[str, Any] = {"_meta": meta} if cursor is None else {"_meta": meta, "cursor": cursor}
        listing = Message({"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": params}, REQUEST, 0, "tools/list")
        neutral = ModernRequest(declared.protocol_version, {}, None, None)
        try:
            page = self.handler(listing.raw, self._stateless_context(listing, neutral, _nowhere))
        except JsonRpcError as error:
            if error.code == METHOD_NOT_FOUND:
                return {}
            raise self._cannot_check(message, error) from None
        except Exception as exc:  # noqa: BLE001 - any failure of the handler: this call gets 503
            raise self._cannot_check(message, exc) from None
        return page if isinstance(page, dict) else {}

    @staticmethod
    def _cannot_check(message: Message, cause: Exception) -> HttpError:
        logger.warning("tools/list failed while learning the Mcp-Param headers of the tools: %r", cause)
        return HttpError(
            503, INTERNAL_ERROR, "Service Unavailable: the tool list needed to check Mcp-Param headers failed",
            id=message.id, headers={"Retry-After": "1"},
        )

    def broadcast(self, method: str, params: dict[str, Any] | None = None) -> None:
        if method == "notifications/tools/list_changed":
            self._tool_headers.forget()  # the tools' annotations are learned again
        super().broadcast(method, params)

    def _listen(self, request: Request, message: Message, declared: ModernRequest) -> Response:
        """``subscriptions/listen``: a stream that acknowledges the filter, then carries what it asked for.

        The stream is registered with the subscription manager, so a list
        change or resource update raised in any process reaches it; it ends
        when the client leaves or the server shuts down (with the listen
        request's result).
        """
        if not accepts(header(request, "Accept"), SSE):  # a listen stream is SSE whatever json_response says
            raise HttpError(406, SERVER_ERROR, f"Not Acceptable: subscriptions/listen answers with {SSE}", id=message.id)
        assert message.id is not None
        wanted = self._modern.listen_filter(message.params.get("notifications"), message.id)
        subscriptions = self.managers.subscriptions
        if len(subscriptions) >= self.options.max_listen_streams:
            error = too_busy(self.options.max_listen_streams)
            error.id = message.id
            raise error
        granted = self._ask_handler_to_listen(message, declared, wanted)
        controller = self._new_stream(request)
        controller.prime([OPENED, encode_message(acknowledged_message(message.id, granted))])
        try:
            subscriptions.create(message.id, granted, controller)
        except BaseException:
            controller.close()
            raise
        return long_lived_response(controller, request.environ)

    def _ask_handler_to_listen(self, message: Message, declared: ModernRequest, wanted: ListenFilter) -> ListenFilter:
        """The handler's say on a listen request: it may refuse (a JsonRpcError) or grant less (``{"notifications": ...}``).

        A handler that does not know the method grants what was asked: the
        transport serves listen streams by itself.
        """
        ctx = self._stateless_context(message, declared, _nowhere)
        try:
            answer = self.handler(message.raw, ctx)
        except JsonRpcError as error:
            if error.code == METHOD_NOT_FOUND:
                return wanted
            status = http_status(error.code)
            status = 400 if error.code == INVALID_PARAMS else 403 if status == 200 else status
            raise HttpError(status, error.code, error.message, id=message.id, data=error.data) from None
        if isinstance(answer, dict) and "notifications" in answer:  # never more than the client asked for
            return self._modern.listen_filter(answer["notifications"], message.id or 0) & wanted
        return wanted

    @staticmethod
    def _stateless_context(
        message: Message,
        declared: ModernRequest,
        emit: Emit,
        rounds: InputRounds | None = None,
        cancel: threading.Event | None = None,
    ) -> RequestContext:
        """The handler's view of a stateless request: what it declared, its own stream, its input rounds."""
        return context_for(message, None, declared, emit, rounds=rounds, cancel=cancel)

    @staticmethod
    def _stateless_reply(reply: str, ok: bool, use_sse: bool) -> Response:
        """A stateless reply sent at once: JSON (with the error's HTTP status) or a one-message stream."""
        if use_sse and (ok or http_status(_error_code(reply)) == 200):
            return sse_response([encode_event(reply)])
        return json_response(reply, 200 if ok else http_status(_error_code(reply)))

    def _sealer(self) -> StateSealer:
        """What seals request states: the configured keys, or the secret every worker shares through the info manager."""
        sealer = self._state_sealer
        if sealer is None:
            keys = self.options.state_keys or (self.managers.info.shared_secret("request-state"),)
            sealer = self._state_sealer = StateSealer(keys, self.options.state_ttl)
        return sealer

    def _initialize(self, request: Request, message: Message, use_sse: bool) -> Response:
        """Mint a session, store what the client declared, answer with the InitializeResult."""
        steps = self._handshake
        try:
            declared = steps.negotiate(message, SUPPORTED_PROTOCOL_VERSIONS)
        except JsonRpcError as error:
            raise HttpError(400, error.code, error.message, id=message.id) from None
        version = declared.protocol_version
        assert version is not None
        session_id, key = steps.new_session(
            self._principal(request),
            protocol_version=version,
            client_info=declared.client_info,
            client_capabilities=declared.client_capabilities,
        )
        ctx = steps.context(key, declared, message, steps.to_session(key))
        reply, ok = invoke(self.handler, message, ctx, steps.complete_initialize(version))
        if not ok:
            self.managers.info.delete(key)
            return self._reply(reply, use_sse)
        response = self._reply(reply, use_sse, key)
        response.headers[SESSION_HEADER] = session_id
        return response

    def _reply(self, reply: str, use_sse: bool, key: str | None = None) -> Response:
        """A reply sent at once; over SSE, with an event store and a session, primed and stored like any POST stream."""
        if not use_sse:
            return json_response(reply)
        store = self.managers.streams.event_store
        if store is None or key is None:
            return sse_response([encode_event(reply)])
        return sse_response(stored_reply(store, key, reply, self.options.retry))

    def _get(self, request: Request) -> Response:
        """Open the session's stream for server-initiated messages (one per session), or resume a stream.

        With an event store, ``Last-Event-ID`` resumes the stream its id
        belongs to: the session's GET stream (replacing the open one, whose
        client is the one resuming) or a POST's stream. Without a store the
        header is ignored: delivery is at most once.
        """
        if not accepts(header(request, "Accept"), SSE):
            raise HttpError(406, SERVER_ERROR, f"Not Acceptable: a GET stream needs Accept: {SSE}")
        key = self._session_key(request)
        self._handshake.check_exists(key)
        streams = self.managers.streams
        last_event_id = header(request, LAST_EVENT_ID_HEADER) if streams.event_store is not None else None
        if last_event_id:
            stream_id = parse_event_id(last_event_id)[0]
            if not is_get_stream(stream_id):
                return self._resume_post(request, key, stream_id, last_event_id)
        controller = self._new_stream(request)
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
            self._handshake.check_exists(key)  # deleted while the stream was registered
        except HttpError:
            controller.close()  # never read: unregisters it at once
            streams.delete(key)  # and drops the log the racing create may have opened
            raise
        except BaseException:
            controller.close()
            raise
        return long_lived_response(controller, request.environ)

    def _resume_post(self, request: Request, key: str, stream_id: str, last_event_id: str) -> Response:
        """``GET`` + ``Last-Event-ID`` of a POST stream: the events after it, then live if it still runs here.

        If its handler runs in this process the new connection takes the
        stream over and ends after the response; otherwise (finished, or
        running in another process) the answer ends after the replay, with
        ``retry``. Raises :class:`~session_manager.EventGoneError`.
        """
        store = self.managers.streams.event_store
        assert store is not None
        post = self._posts.get(key, stream_id)
        if post is None:
            return self._follow_post(request, store, key, stream_id, last_event_id)
        controller = self._new_stream(request)
        try:
            post.take_over(controller, last_event_id)
        except BaseException:
            controller.close()
            raise
        return sse_response(controller)

    def _follow_post(
        self, request: Request, store: EventStore, key: str, stream_id: str, last_event_id: str
    ) -> Response:
        """Resume a POST stream this process does not feed: the events stored after the id, then its log followed.

        Its handler finished, or runs in another process: either way its
        messages and response land in the shared store, so this resume
        reads them from there until the response (:func:`follow`).
        """
        retry = self.options.retry
        replay = resume_elsewhere(store, key, stream_id, last_event_id)
        frames = resume_frames(last_event_id, replay.events, retry)
        if has_response(replay.events):
            return sse_response(frames)
        controller = self._new_stream(request)
        controller.prime(frames)
        self._posts.follower(key, stream_id, controller)  # one follower per stream: a repeated resume replaces it
        latest = replay.events[-1][0] if replay.events else last_event_id
        lifecycle = self._lifecycle
        try:
            # Not counted against max_handlers: followers are bounded by themselves (one per stream, see follower()).
            lifecycle.start(key, "resume", follow, store, key, latest, controller, lambda: lifecycle.closing, bounded=False)
        except BaseException:
            controller.close()
            raise
        return sse_response(controller)

    def _delete(self, request: Request) -> Response:
        """End the session: its stream and all its metadata."""
        key = self._session_key(request)
        self._handshake.check_exists(key)
        self.managers.delete(key)
        self._lifecycle.requests.cancel_session(key)
        return empty_response(204)

    def __repr__(self) -> str:
        return f"<McpApp paths={self.paths!r} managers={self.managers!r}>"
