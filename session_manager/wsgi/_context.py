"""RequestContext: what a handler knows of its session, and how it talks back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .._jsonrpc import REQUEST, Message, notification
from .._mcp import log_enabled, log_notification, progress_notification
from ..errors import BackendUnavailableError
from ._client_requests import DEFAULT_REQUEST_TIMEOUT, cannot_ask

if TYPE_CHECKING:
    from ._client_requests import ClientRequests, InputRounds

__all__ = ["Declared", "RequestContext", "context_for", "progress_token"]

logger = logging.getLogger(__name__)

Emit = Callable[[str], object]


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
    request set a log level, :meth:`request` becomes a multi round-trip
    request, and :attr:`cancelled` turns true when the client closes the
    request's stream.

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
        self._cancel = cancel

    @property
    def stateless(self) -> bool:
        """Whether this is a stateless request (2026-07-28): no session, everything in the request."""
        return self.session_id is None

    @property
    def cancelled(self) -> bool:
        """Whether the client gave up on this request (it closed the request's stream); stop work then.

        Only a stateless request is ever cancelled this way: in a session,
        a dropped stream is resumed, not cancelled. The server learns that
        the client left when it next writes to the stream, so at the latest
        one ``keepalive`` interval later (pings are writes).
        """
        return self._cancel is not None and self._cancel.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to *timeout* seconds, waking early if the client gives up; return :attr:`cancelled`."""
        if self._cancel is None:
            if timeout is not None:
                time.sleep(timeout)
            return False
        return self._cancel.wait(timeout)

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
