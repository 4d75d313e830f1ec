"""RequestContext: what a handler knows of its session, and how it talks back."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .._jsonrpc import REQUEST, Message, notification
from .._mcp import log_enabled, log_notification, progress_notification
from ..errors import BackendUnavailableError, SessionManagerError
from ._client_requests import _SESSION_CHECK_INTERVAL, DEFAULT_REQUEST_TIMEOUT, cannot_ask

if TYPE_CHECKING:
    from ._client_requests import ClientRequests, InputRounds

__all__ = ["CANCELLED", "Declared", "RequestContext", "RunningRequests", "context_for", "progress_token"]

logger = logging.getLogger(__name__)

#: Seconds a request stops looking its session up after a lookup failed (the backend is down).
_OUTAGE_BACKOFF = 30.0

Emit = Callable[[str], object]
#: What a client sends to cancel one of its requests (the cancellation utility, 2025-11-25 and before).
CANCELLED = "notifications/cancelled"


class Declared(Protocol):
    """What a client declared: a session's stored info, or what a stateless request carries (read-only)."""

    @property
    def protocol_version(self) -> str | None: ...
    @property
    def client_info(self) -> dict[str, Any] | None: ...
    @property
    def client_capabilities(self) -> dict[str, Any] | None: ...
    @property
    def log_level(self) -> str | None: ...


def progress_token(message: Message) -> str | int | None:
    """The ``_meta.progressToken`` of a message, if it has a usable one."""
    meta = message.params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if type(token) in (str, int) else None


def context_for(
    message: Message, session_id: str | None, declared: Declared, emit: Emit, **extra: Any
) -> RequestContext:
    """The handler's context for *message* (no session: a stateless request); *extra*: its optional parts."""
    return RequestContext(
        session_id=session_id,
        protocol_version=declared.protocol_version,
        client_info=declared.client_info,
        client_capabilities=declared.client_capabilities,
        log_level=declared.log_level,
        request_id=message.id if message.kind == REQUEST else None,
        method=message.method,
        progress_token=progress_token(message),
        emit=emit,
        **extra,
    )


#: Ends the current request's stream with a ``retry`` hint (milliseconds, or the transport's); False if it cannot.
CloseStream = Callable[[int | None], bool]


class RequestContext:
    """Handed to the handler with every message.

    Session data is read once per HTTP request (one ``info.get``). Messages
    emitted here travel on the current request's SSE stream, live, before
    its response; when the request has no stream of its own (a notification,
    or a plain JSON response) they go to the session's GET stream instead.
    On the legacy HTTP+SSE transport everything goes to the session's one
    stream.
    Emitting never blocks and never raises for a gone client: it returns
    whether the message was handed over. :meth:`request` asks the client
    something and waits for its reply, which may reach any process;
    :meth:`close_stream` ends the request's stream early (the client
    resumes it).

    A stateless request (protocol 2026-07-28, :attr:`stateless`) has no
    session (``session_id`` is ``None``): what the client declared comes
    with the request, messages go only on its own stream, logs only if the
    request set a log level, and :meth:`request` becomes a multi round-trip
    request.

    :attr:`cancelled` (and :meth:`wait_cancelled`) tells a request's handler
    that its client gave up, so it can stop working: a stateless request
    when its client closes the request's stream; a request of a session
    when the client sends ``notifications/cancelled`` naming it, when the
    session is deleted or expires, or when the server shuts down
    (:meth:`~session_manager.wsgi.McpApp.close`).

    Attributes: ``session_id`` (the key the managers know the session by:
    the ``Mcp-Session-Id``, prefixed by the principal when one is
    configured; pass it to the transport's ``notify``/``log``),
    ``protocol_version``, ``client_info``, ``client_capabilities``,
    ``log_level``, ``request_id`` (``None`` for notifications),
    ``method``, ``progress_token`` and ``stateless``.
    """

    __slots__ = (
        "_cancel",
        "_client",
        "_close_stream",
        "_emit",
        "_input",
        "_next_check",
        "_running",
        "client_capabilities",
        "client_info",
        "log_level",
        "method",
        "progress_token",
        "protocol_version",
        "request_id",
        "session_id",
    )

    def __init__(
        self,
        *,
        session_id: str | None,
        protocol_version: str | None,
        client_info: dict[str, Any] | None,
        client_capabilities: dict[str, Any] | None,
        log_level: str | None,
        request_id: str | int | None,
        method: str | None,
        progress_token: str | int | None,
        emit: Emit,
        client: ClientRequests | None = None,
        close_stream: CloseStream | None = None,
        rounds: InputRounds | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.session_id = session_id
        self.protocol_version = protocol_version
        self.client_info = client_info
        self.client_capabilities = client_capabilities
        self.log_level = log_level
        self.request_id = request_id
        self.method = method
        self.progress_token = progress_token
        self._emit = emit
        self._client = client
        self._close_stream = close_stream
        self._input = rounds
        self._cancel = cancel  # a session request's is made when first needed (:meth:`RunningRequests.signal`)
        self._running: RunningRequests | None = None  # a session request's registry, once it runs
        self._next_check = 0.0  # when to look up the session next (:meth:`_session_gone`)

    @property
    def stateless(self) -> bool:
        """Whether this is a stateless request (2026-07-28): no session, everything in the request."""
        return self.session_id is None

    @property
    def cancelled(self) -> bool:
        """Whether the client gave up on this request, or the server needs it to end; stop work then.

        A stateless request is cancelled when its client closes the
        request's stream: the server learns it when it next writes to the
        stream, so at the latest one ``keepalive`` interval later (pings are
        writes). In a session a dropped stream is resumed, not cancelled; a
        session's request (Streamable HTTP) is cancelled when:

        - its client sends ``notifications/cancelled`` with its id (same
          session, same principal). The notification reaches the request
          when it lands on the process running it: with several processes
          one landing elsewhere is ignored there;
        - its session ends: deleted (``DELETE``) in this process, at once;
          deleted in another process, or expired, noticed while the handler
          asks (one session lookup a second at most, from the request's
          second second on);
        - the server shuts down (:meth:`~session_manager.wsgi.McpApp.close`):
          finish quickly; the response still reaches a client that resumes.

        The handler's reply is still sent when it returns (a client that
        cancelled ignores it, as the spec asks): a POST is always answered,
        and a resumable stream that ended without its response would be
        resumed again and again. Notifications and ``initialize`` are never
        cancelled.
        """
        cancel = self._cancel
        if cancel is not None and cancel.is_set():
            return True
        return self._running is not None and self._session_gone()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to *timeout* seconds, waking early if the request is cancelled; return :attr:`cancelled`."""
        running = self._running
        cancel = self._cancel if running is None else running.signal(self)
        if cancel is None:
            if timeout is not None:
                time.sleep(timeout)
            return False
        if running is None or running.session_exists is None:
            return cancel.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (cancel.is_set() or self._session_gone()):
            now = time.monotonic()
            step = self._next_check - now
            if deadline is not None:
                if now >= deadline:
                    return False
                step = min(step, deadline - now)
            cancel.wait(step)
        return True

    def _session_gone(self) -> bool:
        """Whether the session ended in another process (a lookup at most once a second); cancels the request if so."""
        running, key, now = self._running, self.session_id, time.monotonic()
        if running is None or running.session_exists is None or key is None or now < self._next_check:
            return False
        self._next_check = now + _SESSION_CHECK_INTERVAL
        try:
            if running.session_exists(key):
                return False
        except SessionManagerError as exc:  # the backend is down: not a reason to give up the request
            logger.debug("could not check that the session of a running request exists: %s", exc)
            # Each failed lookup may have waited out the socket timeout: a handler polling
            # ``cancelled`` in its loop pays that at most once per _OUTAGE_BACKOFF, not every second.
            self._next_check = time.monotonic() + _OUTAGE_BACKOFF
            return False
        logger.debug("request %.80r cancelled: its session ended", self.request_id)
        running.signal(self).set()
        return True

    def send(self, data: str) -> bool:
        """Emit one serialized JSON-RPC message; False if it could not be handed over."""
        try:
            return self._emit(data) is not False
        except BackendUnavailableError:
            logger.warning("session backend unavailable: message to session dropped")
            return False

    def notify(self, method: str, params: dict[str, Any] | None = None) -> bool:
        """Emit a notification related to the current request."""
        return self.send(notification(method, params))

    def progress(self, progress: float, total: float | None = None, message: str | None = None) -> bool:
        """Report progress on the request's ``_meta.progressToken``; a no-op without one."""
        if self.progress_token is None:
            return False
        return self.send(progress_notification(self.progress_token, progress, total, message))

    def log(self, level: str, data: Any, logger: str | None = None) -> bool:
        """Emit a ``notifications/message``, dropped below the log level (a stateless request without one: all)."""
        if self.stateless and self.log_level is None:
            log_enabled(level, None)  # still checks the level
            return False
        if not log_enabled(level, self.log_level):
            return False
        return self.send(log_notification(level, data, logger))

    def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Send a request to the client (``sampling/createMessage``, ``elicitation/create``, ``roots/list``...); return its result.

        Blocks until the client's reply comes, which it may POST to any
        process of the server. Raises
        :class:`~session_manager.wsgi.ClientRequestError` when there is no
        result: the client answered with an error, did not answer within
        *timeout* seconds, lacks the capability the method needs, the
        request could not be sent, or the session ended meanwhile.

        In a stateless request this is a multi round-trip request: without
        the answer the handler stops here, the client gets an
        ``input_required`` result, and on its retry (any worker) the handler
        runs again and this call returns the answer. The handler must so
        ask the same things in the same order each time; *key* names the
        request in ``inputRequests`` (default ``r0``, ``r1``... in order).
        """
        if self._input is not None:
            return self._input.request(method, params, key)
        if self._client is None or self.session_id is None:
            raise cannot_ask(self.method)
        return self._client.request(self.session_id, self.client_capabilities, self.send, method, params, timeout)

    def request_all(
        self, requests: Mapping[str, tuple[str, dict[str, Any] | None]], *, timeout: float = DEFAULT_REQUEST_TIMEOUT
    ) -> dict[str, dict[str, Any]]:
        """Several requests to the client at once, ``{key: (method, params)}``; their results by key.

        In a session they all go out, then each is waited for; in a
        stateless request they form one ``input_required`` round.
        """
        requests = dict(requests)
        if self._input is not None:
            return self._input.request_all(requests)
        if self._client is None or self.session_id is None:
            raise cannot_ask(self.method)
        return {key: self.request(method, params, timeout=timeout) for key, (method, params) in requests.items()}

    def close_stream(self, retry: int | None = None) -> bool:
        """End the current request's SSE stream now, with a ``retry`` hint; the handler keeps running.

        What the handler sends afterwards, its response included, is stored:
        the client comes back with ``GET`` and ``Last-Event-ID`` (on any
        process) and gets it. *retry* is in milliseconds (default: the
        transport's ``retry`` option). Returns False, changing nothing,
        when the stream could not be resumed: no event store, or the
        request has no stream of its own (a JSON answer, the legacy
        transport, a stateless request).
        """
        if retry is not None and (type(retry) is not int or retry < 0):
            raise ValueError(f"retry must be a non-negative int (milliseconds), got {retry!r}")
        return self._close_stream is not None and self._close_stream(retry)

    def __repr__(self) -> str:
        return f"<RequestContext session={self.session_id!r} method={self.method!r} id={self.request_id!r}>"


class RunningRequests:
    """The session requests running in this process, by session key and request id: how each is cancelled.

    One per transport. :meth:`add` registers a request's context when the
    request starts, :meth:`discard` when it ends: a dict insert and a
    delete under a lock, nothing else (the context's cancellation signal
    is made only when someone waits for it or sets it). In between
    :meth:`cancel` (the client's ``notifications/cancelled``),
    :meth:`cancel_session` (the session deleted here) and :meth:`cancel_all`
    (shutdown) cancel it, and :attr:`session_exists` lets a waiting handler
    notice that its session ended in another process
    (:attr:`RequestContext.cancelled`).

    Nothing is shared between processes: a ``notifications/cancelled`` that
    lands on a process not running its request is ignored there (no
    backend round trip per request to route it).
    """

    __slots__ = ("_lock", "_sessions", "_stopped", "session_exists")

    def __init__(self, session_exists: Callable[[str], bool] | None = None) -> None:
        #: Whether a session exists (in any process): how a waiting handler learns its session ended elsewhere.
        self.session_exists = session_exists
        self._lock = threading.Lock()
        self._stopped = False
        #: session key -> request id -> the running request's context
        self._sessions: dict[str, dict[str | int, RequestContext]] = {}

    def add(self, ctx: RequestContext) -> None:
        """Make *ctx*'s request cancellable until :meth:`discard` (a no-op for a notification or a stateless request).

        A client reusing the id of one of its running requests makes the
        newer one the one its ``notifications/cancelled`` names.
        """
        key, request_id = ctx.session_id, ctx.request_id
        if key is None or request_id is None:
            return
        ctx._running = self
        ctx._next_check = time.monotonic() + _SESSION_CHECK_INTERVAL  # the session was there when the request started
        with self._lock:
            running = self._sessions.get(key)
            if running is None:
                running = self._sessions[key] = {}
            running[request_id] = ctx
            stopped = self._stopped
        if stopped:
            self.signal(ctx).set()

    def discard(self, ctx: RequestContext) -> None:
        """*ctx*'s request is over: forget it."""
        key, request_id = ctx.session_id, ctx.request_id
        if key is None or request_id is None:
            return
        with self._lock:
            running = self._sessions.get(key)
            if running is not None and running.get(request_id) is ctx:
                del running[request_id]
                if not running:
                    del self._sessions[key]

    def signal(self, ctx: RequestContext) -> threading.Event:
        """*ctx*'s cancellation signal, made on first use."""
        cancel = ctx._cancel
        if cancel is None:
            with self._lock:
                cancel = ctx._cancel
                if cancel is None:
                    cancel = ctx._cancel = threading.Event()
        return cancel

    @contextlib.contextmanager
    def running(self, ctx: RequestContext) -> Iterator[RequestContext]:
        """:meth:`add` *ctx* for the duration of a ``with`` block (a request answered in the caller's thread)."""
        self.add(ctx)
        try:
            yield ctx
        finally:
            self.discard(ctx)

    def notice(self, key: str, method: str | None, params: Mapping[str, Any]) -> None:
        """A client notification of session *key*: ``notifications/cancelled`` cancels the request it names."""
        if method == CANCELLED:
            self.cancel(key, params)

    def cancel(self, key: str, params: Mapping[str, Any]) -> bool:
        """The client of session *key* sent ``notifications/cancelled`` with *params*: cancel the request it names.

        False, changing nothing, if no request with that ``requestId`` runs
        here for the session (unknown, over, another session's, or running
        in another process) or the params are malformed: a notification has
        no answer, so these are only logged (debug).
        """
        request_id, reason = params.get("requestId"), params.get("reason")
        # JSON true is no id: bool is excluded though it is an int to Python
        if (
            isinstance(request_id, bool)
            or not isinstance(request_id, (str, int))
            or not isinstance(reason, (str, type(None)))
        ):
            logger.debug(
                "ignored a malformed notifications/cancelled (requestId %.80r, reason %.80r)", request_id, reason
            )
            return False
        with self._lock:
            ctx = self._sessions.get(key, {}).get(request_id)
        if ctx is None:
            logger.debug("ignored notifications/cancelled for request %.80r: no such request runs here", request_id)
            return False
        logger.debug("request %.80r cancelled by its client: %.200s", request_id, reason or "no reason given")
        self.signal(ctx).set()
        return True

    def cancel_session(self, key: str) -> int:
        """Session *key* ended: cancel its requests running here; returns how many."""
        with self._lock:
            cancelled = list(self._sessions.get(key, {}).values())
        for ctx in cancelled:
            self.signal(ctx).set()
        return len(cancelled)

    def cancel_all(self) -> int:
        """The server shuts down: cancel every running request, and any that starts from now on; returns how many."""
        with self._lock:
            self._stopped = True
            cancelled = [ctx for running in self._sessions.values() for ctx in running.values()]
        for ctx in cancelled:
            self.signal(ctx).set()
        return len(cancelled)

    def __len__(self) -> int:
        """How many session requests run (registered) in this process."""
        with self._lock:
            return sum(len(running) for running in self._sessions.values())
