"""TransportCore: what both MCP transports share, from the checks to the handler's context.

Streamable HTTP (:mod:`._endpoint`) and the legacy HTTP+SSE transport
(:mod:`._legacy`) differ only in how a message arrives and which way its
reply leaves. Everything else lives here once: the Host/Origin checks,
reading and parsing a body, minting and finding sessions, the info
manager's bookkeeping (``initialize``, ``logging/setLevel``,
``resources/subscribe|unsubscribe``), the :class:`RequestContext` and the
mapping of every failure to a JSON-RPC error body, so a client never sees
a traceback. It also knows what of the transport runs in this process
(open streams, handler threads, POST streams that can be resumed), so
:func:`close_transports` can end it all.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from flask import Response, request
from werkzeug.exceptions import HTTPException

from .. import __version__
from .._jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    REQUEST,
    SERVER_ERROR,
    SESSION_NOT_FOUND,
    HttpError,
    JsonRpcError,
    Message,
    parse_message,
)
from .._validate import LOG_LEVELS
from ..base import SessionInfo, SessionManagers
from ..errors import BackendUnavailableError, EventGoneError, InvalidEventIdError
from ..sse import encode_comment
from ..stream import StreamController
from ._checks import LATEST_PROTOCOL_VERSION, Allowlist, check_host, check_origin, read_body
from ._context import Emit, RequestContext
from ._handler import Handler, OnSuccess, run_in_background
from ._session import is_minted, mint_session_id, session_key
from ._streams import PostStream, replay_only, socket_closer

__all__ = [
    "DEFAULT_RETRY",
    "JSON",
    "SSE",
    "Principal",
    "TransportCore",
    "close_transports",
    "empty_response",
    "json_response",
    "sse_response",
]

logger = logging.getLogger(__name__)

JSON = "application/json"
SSE = "text/event-stream"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: First bytes of a stream, so the headers leave at once instead of with the first event.
OPENED = encode_comment("open")
#: Milliseconds a client waits before reconnecting to a stream the server ended.
DEFAULT_RETRY = 1000

#: ``principal() -> str | None``: the authenticated principal of the current request.
Principal = Callable[[], str | None]


def json_response(body: str, status: int = 200) -> Response:
    return Response(body, status, content_type=JSON)


def sse_response(body: StreamController | Iterable[bytes]) -> Response:
    """An SSE response; a controller body is closed when the server is done with the response."""
    response = Response(body, 200, content_type=SSE, headers=_SSE_HEADERS)
    if isinstance(body, StreamController):
        response.call_on_close(body.close)
    return response


def empty_response(status: int) -> Response:
    response = Response(b"", status)
    del response.headers["Content-Type"]
    return response


def not_found() -> HttpError:
    return HttpError(404, SESSION_NOT_FOUND, "Not Found: unknown or terminated session; initialize a new one")


def _after(action: Callable[[], object]) -> OnSuccess:
    """An :data:`OnSuccess` hook that runs *action* and keeps the result."""

    def on_success(result: dict[str, Any]) -> dict[str, Any]:
        action()
        return result

    return on_success


def _progress_token(message: Message) -> str | int | None:
    meta = message.params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if type(token) in (str, int) else None


class TransportCore:
    """The options, managers and protocol steps one transport instance works with.

    Built once per blueprint from its options, which it validates.
    """

    def __init__(
        self,
        handler: Handler,
        managers: SessionManagers,
        *,
        server_info: dict[str, Any] | None,
        capabilities: dict[str, Any] | None,
        instructions: str | None,
        allowed_hosts: Iterable[str] | None,
        allowed_origins: Iterable[str] | None,
        max_body_size: int,
        keepalive: float,
        stream_maxsize: int,
        principal: Principal | None,
        retry: int | None = DEFAULT_RETRY,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if principal is not None and not callable(principal):
            raise TypeError(f"principal must be callable, not {type(principal).__name__}")
        if type(max_body_size) is not int or max_body_size < 1:
            raise ValueError(f"max_body_size must be a positive int, got {max_body_size!r}")
        StreamController(keepalive=keepalive, maxsize=stream_maxsize, retry=retry)  # validates them, fails early
        self.handler = handler
        self.managers = managers
        self.server_info = dict(server_info) if server_info else {"name": "session_manager", "version": __version__}
        self.capabilities = dict(capabilities or {})
        self.instructions = instructions
        self.hosts = None if allowed_hosts is None else Allowlist(allowed_hosts, origins=False)
        self.origins = None if allowed_origins is None else Allowlist(allowed_origins, origins=True)
        self.max_body_size = max_body_size
        self.keepalive = keepalive
        self.stream_maxsize = stream_maxsize
        self.principal = principal
        self.retry = retry
        # What runs in this process, for close_transports() (and resumes, for _posts).
        self._lock = threading.Lock()
        self._closing = False
        self._controllers: set[StreamController] = set()
        self._workers: set[threading.Thread] = set()
        self._posts: dict[tuple[str, str], PostStream] = {}
        self._running: dict[str, int] = {}  # session key -> handlers running on their own thread
        managers.info.keep_alive_while(self.is_running)

    # -- answering -------------------------------------------------------------

    def respond(self, dispatch: Callable[[], Response]) -> Response:
        """Run a view's *dispatch*; every failure becomes a JSON-RPC error response. Never raises."""
        try:
            if self._closing:
                raise _shutting_down()
            response = dispatch()
        except HttpError as exc:
            response = self.error(exc)
        except InvalidEventIdError:
            response = self.error(HttpError(400, INVALID_REQUEST, "Bad Request: Last-Event-ID is not an event id of this server"))
        except EventGoneError as exc:
            response = self.error(_gone(exc))
        except BackendUnavailableError as exc:
            logger.warning("session backend unavailable: %s", exc)
            response = self.error(HttpError(503, INTERNAL_ERROR, "Service Unavailable: session backend unavailable"))
        except HTTPException as exc:  # e.g. abort(401) in a principal callable
            response = self._from_http_exception(exc)
        except Exception:
            logger.exception("MCP endpoint failed on %s %s", request.method, request.path)
            response = self.error(HttpError(500, INTERNAL_ERROR, "Internal Server Error"))
        response.vary.add("Origin")
        return response

    @staticmethod
    def error(exc: HttpError) -> Response:
        """The HTTP response of a refused request."""
        response = json_response(exc.body(), exc.status)
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

    # -- request checks ----------------------------------------------------------

    def check_peer(self) -> None:
        """403 unless the request's Host and Origin are allowed."""
        check_host(self.hosts, request.headers.get("Host"))
        check_origin(self.origins, request.headers.get("Origin"))

    def read_message(self) -> Message:
        """The request body as one checked JSON-RPC message (413, 400)."""
        return parse_message(read_body(request.stream, request.content_length, self.max_body_size))

    # -- sessions ------------------------------------------------------------------

    def _principal(self) -> str | None:
        if self.principal is None:
            return None
        value = self.principal()
        return None if value is None else str(value)

    def new_session(self, **fields: Any) -> tuple[str, str]:
        """Mint a session id and create its session with *fields*; returns ``(id, managers' key)``."""
        session_id = mint_session_id()
        key = session_key(self._principal(), session_id)
        self.managers.info.create(key, **fields)
        return session_id, key

    def key_of(self, session_id: str) -> str:
        """The managers' key of a client-presented id; 404 if it cannot be one we minted."""
        if not is_minted(session_id):
            raise not_found()
        return session_key(self._principal(), session_id)

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

    def to_session(self, key: str) -> Emit:
        """An emitter to the session's stream, wherever (with a shared backend) it is held."""
        return functools.partial(self.managers.streams.send, [key])

    def new_stream(self, kind: type[StreamController] = StreamController) -> StreamController:
        """A stream controller for the current request, with this transport's keepalive, bound and retry.

        A client that falls *stream_maxsize* frames behind has its socket
        shut, so a write blocked on it fails at once. The stream is tracked
        until it ends, for :func:`close_transports`.
        """
        controller = kind(
            keepalive=self.keepalive,
            maxsize=self.stream_maxsize,
            retry=self.retry,
            on_overflow=socket_closer(request.environ),
        )
        with self._lock:
            if self._closing:
                raise _shutting_down()
            self._controllers.add(controller)
        controller.add_close_callback(functools.partial(self._untrack, self._controllers, controller))
        return controller

    def _untrack(self, tracked: set[Any], item: Any) -> None:
        with self._lock:
            tracked.discard(item)

    def spawn(
        self,
        message: Message,
        ctx: RequestContext,
        deliver: Callable[[str], object],
        on_success: OnSuccess | None = None,
        done: Callable[[], object] | None = None,
    ) -> None:
        """Run the request's handler on its own thread (greenlet), tracked until it ends."""
        started: list[threading.Thread] = []

        key = ctx.session_id

        def track(thread: threading.Thread) -> None:
            with self._lock:
                if self._closing:
                    raise _shutting_down()
                self._workers.add(thread)
                self._running[key] = self._running.get(key, 0) + 1
            started.append(thread)

        def finished() -> None:
            try:
                if done is not None:
                    done()
            finally:
                for thread in started:
                    self._untrack(self._workers, thread)
                    with self._lock:
                        left = self._running.pop(key) - 1
                        if left:
                            self._running[key] = left

        run_in_background(self.handler, message, ctx, deliver, on_success, finished, track)

    def is_running(self, key: str) -> bool:
        """Whether a request of the session is still being handled here: it keeps the session alive."""
        return key in self._running

    # -- POST streams and resumption ---------------------------------------------

    def stream_post(self, key: str, info: SessionInfo, message: Message, on_success: OnSuccess | None) -> StreamController:
        """Answer a POST with an SSE stream fed by its handler; return the stream.

        With an event store the stream is resumable: while the handler runs,
        a ``GET`` with one of its event ids takes it over (:meth:`resume`).
        """
        controller = self.new_stream()
        try:
            post = PostStream(key, controller, self.managers.streams.event_store)
            if post.stream_id is not None and not self.managers.info.exists(key):
                self.managers.streams.delete(key)  # deleted meanwhile: drop the log just opened
                raise not_found()
        except BaseException:
            controller.close()
            raise
        controller.enqueue_frame(OPENED)
        handle = None if post.stream_id is None else (key, post.stream_id)
        if handle is not None:
            with self._lock:
                self._posts[handle] = post

        def done() -> None:
            post.end()
            if handle is not None:
                self._untrack_post(handle)

        try:
            self.spawn(message, self.context(key, info, message, post.send), post.finish, on_success, done)
        except BaseException:
            done()
            controller.close()
            raise
        return controller

    def _untrack_post(self, handle: tuple[str, str]) -> None:
        with self._lock:
            self._posts.pop(handle, None)

    def resume_post(self, key: str, stream_id: str, last_event_id: str) -> Response:
        """``GET`` + ``Last-Event-ID`` of a POST stream: the events after it, then live if it still runs here.

        If its handler runs in this process the new connection takes the
        stream over and ends after the response; otherwise (finished, or
        running in another process) the answer ends after the replay, with
        ``retry``. Raises :class:`~session_manager.EventGoneError`.
        """
        store = self.managers.streams.event_store
        assert store is not None
        with self._lock:
            post = self._posts.get((key, stream_id))
        if post is None:
            return sse_response(replay_only(store, key, stream_id, last_event_id, self.retry))
        controller = self.new_stream()
        try:
            post.take_over(controller, last_event_id)
        except BaseException:
            controller.close()
            raise
        return sse_response(controller)

    # -- shutdown ------------------------------------------------------------------

    def stop_streams(self) -> None:
        """Refuse new requests and end every stream this transport serves (with ``retry``)."""
        with self._lock:
            self._closing = True
            controllers = list(self._controllers)
        for controller in controllers:
            controller.close()

    def join_workers(self, deadline: float) -> bool:
        """Wait until *deadline* (``time.monotonic()``) for the running handlers; True if none is left."""
        with self._lock:
            workers = list(self._workers)
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [thread for thread in workers if thread.is_alive()]
        if left:
            logger.warning("%d MCP handler(s) still running at shutdown: %s", len(left), ", ".join(t.name for t in left))
        return not left

    def wait_streams(self, deadline: float) -> None:
        """Wait until *deadline* for the ended streams to be released (their close callbacks run).

        A stream is released once the server has written its last frame, so
        what its close callbacks do (forget the stream in the manager, end a
        legacy session) happens before the managers close.
        """
        while self._controllers and time.monotonic() < deadline:
            time.sleep(0.01)

    # -- protocol steps --------------------------------------------------------------

    @staticmethod
    def initialize_params(message: Message, supported: Sequence[str]) -> SessionInfo:
        """What an ``initialize`` request declares, with the negotiated protocol version.

        400 (:class:`HttpError`) if it is not a request; :class:`JsonRpcError`
        (invalid params) if its params are not the declared types. The
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
        version = requested if requested in supported else LATEST_PROTOCOL_VERSION
        return SessionInfo(protocol_version=version, client_info=client_info, client_capabilities=capabilities)

    def complete_initialize(self, version: str) -> OnSuccess:
        """Fill the InitializeResult from the options; the negotiated version always wins."""

        def complete(result: dict[str, Any]) -> dict[str, Any]:
            result = dict(result)
            result["protocolVersion"] = version
            result.setdefault("capabilities", self.capabilities)
            result.setdefault("serverInfo", self.server_info)
            if self.instructions is not None:
                result.setdefault("instructions", self.instructions)
            return result

        return complete

    def bookkeeping(self, key: str, message: Message) -> OnSuccess | None:
        """What the info manager records once the handler accepted the request.

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

    @staticmethod
    def context(key: str, info: SessionInfo, message: Message, emit: Emit) -> RequestContext:
        """The handler's view of the session, and where what it emits goes."""
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



def _shutting_down() -> HttpError:
    return HttpError(503, INTERNAL_ERROR, "Service Unavailable: the server is shutting down")


def _gone(exc: EventGoneError) -> HttpError:
    why = "that stream is unknown to this session" if exc.reason == "unknown" else "events after it are no longer stored"
    return HttpError(
        410,
        INVALID_REQUEST,
        f"Gone: cannot resume after Last-Event-ID ({why}); open a new stream without Last-Event-ID "
        "(messages in between are lost)",
    )


def close_transports(cores: Iterable[TransportCore], managers: SessionManagers, timeout: float) -> bool:
    """Shut transports down: end their streams, wait for their handlers, close *managers*.

    Streams end at once, each with the transport's ``retry`` hint so clients
    reconnect (elsewhere, or here after a restart). Running handlers get up
    to *timeout* seconds in all. Returns True if none was left running.
    """
    if not isinstance(timeout, (int, float)) or timeout < 0:
        raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
    cores = list(cores)
    for core in cores:
        core.stop_streams()
    deadline = time.monotonic() + timeout
    finished = [core.join_workers(deadline) for core in cores]
    for core in cores:
        core.wait_streams(deadline)
    managers.close()
    return all(finished)
