"""Server-to-client requests: a handler asks its client (sampling, elicitation, roots) in one call.

:meth:`ClientRequests.request` registers the request with the stream
manager (:meth:`~session_manager.StreamSessionManager.expect_reply`), sends
it where the handler's messages go (the request's own SSE stream, or the
session's GET stream), then waits. The client POSTs its reply as a new HTTP
request, to any process: :meth:`ClientRequests.take_reply` hands it to the
stream manager, which routes it to the waiting handler (across processes
with Redis). A reply is matched by session and by an unguessable request id,
so a reply for a request that is not pending, or presented by another
session or principal, reaches no handler.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from .._jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, RESPONSE, JsonRpcError, Message, encode
from ..base import SessionManagers
from ..replies import is_request_id, new_request_id

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "REQUEST_TIMEOUT", "ClientRequestError", "ClientRequests"]

logger = logging.getLogger(__name__)

#: Seconds ``ctx.request`` waits for the client's reply by default.
DEFAULT_REQUEST_TIMEOUT = 60.0
#: The JSON-RPC code of a request the client did not answer in time (as the official SDKs use it).
REQUEST_TIMEOUT = -32001
#: How often a waiting handler checks that its session still exists, in seconds.
_SESSION_CHECK_INTERVAL = 1.0
#: The client capability each server-to-client method needs.
_CAPABILITIES = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}


class ClientRequestError(JsonRpcError):
    """A server-to-client request that got no result: the client's error, a timeout, or no way to ask.

    *reason* says which: ``"error"`` (the client answered with a JSON-RPC
    error: *code*, *message* and *data* are the client's), ``"timeout"``,
    ``"capability"`` (the client did not declare what the method needs),
    ``"undelivered"`` (no open stream to send the request on),
    ``"session"`` (the session ended while waiting) or ``"closing"`` (the
    server shuts down). Left uncaught in a
    handler, it answers the handler's own request with that error.
    """

    def __init__(self, reason: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.reason = reason


Emit = Callable[[str], object]


class ClientRequests:
    """The server-to-client requests of one transport, on its managers."""

    __slots__ = ("_closing", "_managers")

    def __init__(self, managers: SessionManagers, closing: Callable[[], bool] = lambda: False) -> None:
        self._managers = managers
        self._closing = closing  # the transport shuts down: waiting handlers give up

    def request(
        self,
        session_id: str,
        capabilities: dict[str, Any] | None,
        emit: Emit,
        method: str,
        params: dict[str, Any] | None,
        timeout: float,
    ) -> dict[str, Any]:
        """Send *method* to the client with *emit*, wait for its reply; return its ``result``.

        Raises :class:`ClientRequestError`; ``TypeError``/``ValueError`` for
        bad arguments.
        """
        if type(method) is not str or not method:
            raise TypeError(f"method must be a non-empty str, not {method!r:.80}")
        if params is not None and not isinstance(params, dict):
            raise TypeError(f"params must be a dict or None, not {type(params).__name__}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        needed = _CAPABILITIES.get(method)
        if needed is not None and capabilities is not None and needed not in capabilities:
            raise ClientRequestError(
                "capability", INVALID_REQUEST, f"the client did not declare the {needed!r} capability {method} needs"
            )
        request_id = new_request_id()
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        data = encode(message)
        streams = self._managers.streams
        pending = streams.expect_reply(session_id, request_id, timeout)
        try:
            if emit(data) is False:
                raise ClientRequestError(
                    "undelivered", INTERNAL_ERROR, f"{method} could not be sent: no open stream to the client"
                )
            reply = self._wait(pending.wait, session_id, method, timeout)
        finally:
            pending.cancel()
        return _result(method, reply)

    def _wait(self, wait: Callable[[float], str | None], session_id: str, method: str, timeout: float) -> str:
        """The reply, waiting at most *timeout* seconds and no longer than the session lives."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientRequestError(
                    "timeout", REQUEST_TIMEOUT, f"Request timed out: the client did not answer {method} in {timeout:g} s"
                )
            reply = wait(min(left, _SESSION_CHECK_INTERVAL))
            if reply is not None:
                return reply
            if self._closing():
                raise ClientRequestError("closing", INTERNAL_ERROR, f"the server is shutting down: {method} abandoned")
            if not self._managers.info.exists(session_id):
                raise ClientRequestError("session", INTERNAL_ERROR, f"the session ended while waiting for {method}")

    def take_reply(self, session_id: str, message: Message) -> bool:
        """Route a client's response to the handler waiting for it; False if it is not a reply to one.

        A response whose id is one of ours is always taken (True), whether a
        request still waits for it or not (a late or duplicate reply is
        logged and dropped): it never reaches the application's handler.
        """
        if message.kind != RESPONSE or not is_request_id(message.id):
            return False
        assert isinstance(message.id, str)
        if not self._managers.streams.deliver_reply(session_id, message.id, encode(message.raw)):
            logger.warning("dropped a client reply to %s: no request with that id is pending in the session", message.id)
        return True


def _result(method: str, reply: str) -> dict[str, Any]:
    """The ``result`` of a client's reply, or its error raised."""
    response = json.loads(reply)
    error = response.get("error")
    if error is not None:
        raise ClientRequestError("error", error["code"], error["message"], error.get("data"))
    result: dict[str, Any] = response["result"]
    return result
