"""Calling the application's handler: every outcome of a request becomes one JSON-RPC reply.

:func:`invoke` runs the handler on a request and returns the serialized
reply, never raising: inline (a plain JSON answer), or on the request's own
thread (:meth:`~session_manager.wsgi._lifecycle.Lifecycle.start`), the reply
then handed to the POST's SSE stream or the session's stream.
:func:`notify_handler` hands it a client notification or response, whose
result nobody waits for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._jsonrpc import INTERNAL_ERROR, JsonRpcError, Message, error_response, result_response
from ..errors import MessageTooLargeError, SessionManagerError
from ._client_requests import InputRequired
from ._context import RequestContext

__all__ = ["Handler", "OnSuccess", "invoke", "notify_handler", "send_reply"]

logger = logging.getLogger(__name__)

#: ``handler(message, ctx) -> result``: the application's entry point.
Handler = Callable[[dict[str, Any], RequestContext], dict[str, Any] | None]
#: Runs after the handler succeeded, before the reply is sent; may adjust the result.
OnSuccess = Callable[[dict[str, Any]], dict[str, Any]]

_INTERNAL = JsonRpcError(INTERNAL_ERROR, "Internal error")


def invoke(
    handler: Handler, message: Message, ctx: RequestContext, on_success: OnSuccess | None = None
) -> tuple[str, bool]:
    """Run *handler* on a request; return ``(serialized reply, succeeded)``. Never raises.

    A :class:`JsonRpcError` becomes its error response; any other exception
    is logged with its traceback and answered with a bare internal error.
    :class:`InputRequired` (a stateless request asking its client for
    input) becomes its ``input_required`` result.
    """
    assert message.id is not None
    try:
        result = handler(message.raw, ctx)
        if result is None:
            result = {}
        elif not isinstance(result, dict):
            raise TypeError(f"the handler must return a dict or None, not {type(result).__name__}")
        if on_success is not None:
            result = on_success(result)
        return result_response(message.id, result), True
    except InputRequired as need:  # a stateless request's round ends: the client answers, then retries
        return result_response(message.id, need.result), False
    except JsonRpcError as error:
        return error_response(message.id, error), False
    except SessionManagerError as exc:
        logger.warning("MCP %s failed in the session backend: %s", message.method, exc)
        return error_response(message.id, _INTERNAL), False
    except Exception:
        logger.exception("MCP handler failed on %s", message.method)
        return error_response(message.id, _INTERNAL), False


def send_reply(send: Callable[[str], object], message: Message, reply: str) -> None:
    """Send *reply* with *send*; one larger than the stream can hold goes as an internal error with its id.

    The client still gets an answer to its request, whichever transport
    carries it.
    """
    try:
        send(reply)
    except MessageTooLargeError as exc:
        logger.warning("MCP %s: the response cannot be sent: %s", message.method, exc)
        too_large = f"Internal error: the response takes {exc.size} bytes; this server's streams hold at most {exc.limit}"
        send(error_response(message.id, JsonRpcError(INTERNAL_ERROR, too_large)))


def notify_handler(handler: Handler, message: Message, ctx: RequestContext) -> None:
    """Hand a client notification or response to *handler*; its result is ignored, errors logged."""
    try:
        handler(message.raw, ctx)
    except Exception:
        logger.exception("MCP handler failed on %s", message.method or "a client response")
