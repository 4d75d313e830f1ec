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
import time
from collections.abc import Callable
from typing import Any

from .._jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, RESPONSE, JsonRpcError, Message, encode
from .._validate import positive_seconds
from ..base import SessionManagers
from ..replies import is_request_id, new_request_id
from ._request_state import StateSealer, params_digest

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "INPUT_METHODS",
    "MISSING_CLIENT_CAPABILITY",
    "REQUEST_TIMEOUT",
    "ClientRequestError",
    "ClientRequests",
    "InputRequired",
    "InputRounds",
    "cannot_ask",
    "check_request",
]

logger = logging.getLogger(__name__)

#: Seconds ``ctx.request`` waits for the client's reply by default.
DEFAULT_REQUEST_TIMEOUT = 60.0
#: The JSON-RPC code of a request the client did not answer in time (as the official SDKs use it).
REQUEST_TIMEOUT = -32001
#: The JSON-RPC code of a stateless request that needs a capability its client did not declare.
MISSING_CLIENT_CAPABILITY = -32021
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
    ``"session"`` (the session ended while waiting), ``"closing"`` (the
    server shuts down) or ``"unsupported"`` (a stateless request other than
    ``tools/call``, ``prompts/get`` and ``resources/read``). Left uncaught in a
    handler, it answers the handler's own request with that error.
    """

    def __init__(self, reason: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.reason = reason


Emit = Callable[[str], object]


def check_request(method: object, params: object) -> None:
    """``TypeError`` unless *method* and *params* can make a request."""
    if type(method) is not str or not method:
        raise TypeError(f"method must be a non-empty str, not {method!r:.80}")
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params must be a dict or None, not {type(params).__name__}")


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
        check_request(method, params)
        timeout = positive_seconds(timeout, "timeout")
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
            # Late and duplicate replies are normal (a timeout, a retrying client); any client can send them: debug.
            logger.debug("dropped a client reply to %s: no request with that id is pending in the session", message.id)
        return True


def _result(method: str, reply: str) -> dict[str, Any]:
    """The ``result`` of a client's reply, or its error raised."""
    response = json.loads(reply)
    error = response.get("error")
    if error is not None:
        raise ClientRequestError("error", error["code"], error["message"], error.get("data"))
    result: dict[str, Any] = response["result"]
    return result


# -- the stateless era: multi round-trip requests ---------------------------------------

#: The only requests that may answer "input required" (2026-07-28).
INPUT_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})


def cannot_ask(method: str | None) -> ClientRequestError:
    """The error of a request that cannot ask its client anything (reason ``"unsupported"``).

    In 2026-07-28 only ``tools/call``, ``prompts/get`` and ``resources/read``
    may ask (by input rounds); a notification never can.
    """
    return ClientRequestError(
        "unsupported", INVALID_REQUEST, f"{method or 'a notification'} cannot ask the client for input"
    )


class InputRequired(BaseException):
    """Raised by ``ctx.request`` in a stateless request that lacks an answer: the round ends here.

    The transport answers with :attr:`result` (an ``input_required``
    result); the client retries with the answers and the handler runs
    again from the start, this time getting them. A ``BaseException``, so
    that a handler's ``except Exception`` does not swallow it.
    """

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("input required")
        self.result = result


class InputRounds:
    """The answers a stateless request brought (sealed state, ``inputResponses``), and how to ask for more."""

    __slots__ = ("_answers", "_capabilities", "_count", "_method", "_params", "_principal", "_sealer")

    def __init__(
        self,
        sealer: StateSealer,
        principal: str | None,
        message: Message,
        capabilities: dict[str, Any],
        claim: Callable[[str, float], bool],
    ) -> None:
        params = message.params
        method = message.method or ""
        self._sealer, self._principal, self._method = sealer, principal, method
        self._params = params  # digested only when a state is opened or sealed: most calls never ask
        self._capabilities = capabilities
        self._count = 0
        answers: dict[str, Any] = {}
        if params.get("requestState") is not None:
            opened = sealer.open(params["requestState"], principal, self._digest())
            if not claim(f"request-state:{opened.nonce}", opened.ttl):
                raise JsonRpcError(
                    INVALID_PARAMS, "Invalid params: requestState was already used; send the request again without it"
                )
            answers.update(opened.answers)
        responses = params.get("inputResponses")
        if responses is not None:
            if not isinstance(responses, dict):
                raise JsonRpcError(INVALID_PARAMS, "Invalid params: inputResponses must be an object")
            # An answer sealed in an earlier round stands: the client may add answers, never replace one.
            answers = {**responses, **answers}
        self._answers = answers

    def _digest(self) -> str:
        return params_digest(self._method, self._params)

    def request(self, method: str, params: dict[str, Any] | None, key: str | None) -> dict[str, Any]:
        """The client's answer to one request (keyed by *key*, or by its rank among the handler's requests)."""
        if key is None:
            key = f"r{self._count}"
        self._count += 1
        return self.request_all({key: (method, params)})[key]

    def request_all(self, requests: dict[str, tuple[str, dict[str, Any] | None]]) -> dict[str, dict[str, Any]]:
        """The client's answers to every request of *requests*; the round ends with all those it lacks."""
        missing: dict[str, dict[str, Any]] = {}
        for key, (method, params) in requests.items():
            check_request(method, params)
            needed = _CAPABILITIES.get(method)
            if needed is not None and needed not in self._capabilities:
                raise ClientRequestError(
                    "capability",
                    MISSING_CLIENT_CAPABILITY,
                    f"Missing required client capability: {needed} (for {method})",
                    {"requiredCapabilities": {needed: {}}},
                )
            if key not in self._answers:
                missing[key] = {"method": method, "params": params or {}}
        if missing:
            state = self._sealer.seal(self._principal, self._digest(), self._answers)
            raise InputRequired({"resultType": "input_required", "inputRequests": missing, "requestState": state})
        results = {}
        for key in requests:
            answer = self._answers[key]
            if not isinstance(answer, dict):
                raise JsonRpcError(INVALID_PARAMS, f"Invalid params: inputResponses[{key!r}] must be an object")
            results[key] = answer
        return results
