"""Calling the application's handler: every outcome becomes one JSON-RPC reply.

A request's handler either runs inline (its reply returned) or on its own
thread, its reply handed to a sink: the POST's SSE stream (Streamable HTTP,
see :class:`~session_manager.flask._streams.PostStream`), or the session's
stream (legacy HTTP+SSE), so what it emits reaches the client live.
Under gevent's monkey-patching ``threading.Thread`` is a greenlet, so the
same code serves both worlds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flask import copy_current_request_context

from .._jsonrpc import INTERNAL_ERROR, JsonRpcError, Message, error_response, result_response
from ..errors import SessionManagerError
from ._context import RequestContext

__all__ = ["Handler", "OnSuccess", "invoke", "notify_handler", "run_in_background"]

logger = logging.getLogger(__name__)

#: ``handler(message, ctx) -> result``: the application's entry point.
Handler = Callable[[dict[str, Any], RequestContext], dict[str, Any] | None]
#: Runs after the handler succeeded, before the reply is sent; may adjust the result.
OnSuccess = Callable[[dict[str, Any]], dict[str, Any]]

_INTERNAL = JsonRpcError(INTERNAL_ERROR, "Internal error")


def invoke(handler: Handler, message: Message, ctx: RequestContext, on_success: OnSuccess | None = None) -> tuple[str, bool]:
    """Run *handler* on a request; return ``(serialized reply, succeeded)``. Never raises.

    A :class:`JsonRpcError` becomes its error response; any other exception
    is logged with its traceback and answered with a bare internal error.
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
    except JsonRpcError as error:
        return error_response(message.id, error), False
    except SessionManagerError as exc:
        logger.warning("MCP %s failed in the session backend: %s", message.method, exc)
        return error_response(message.id, _INTERNAL), False
    except Exception:
        logger.exception("MCP handler failed on %s", message.method)
        return error_response(message.id, _INTERNAL), False


def notify_handler(handler: Handler, message: Message, ctx: RequestContext) -> None:
    """Hand a client notification or response to *handler*; its result is ignored, errors logged."""
    try:
        handler(message.raw, ctx)
    except Exception:
        logger.exception("MCP handler failed on %s", message.method or "a client response")


def run_in_background(
    handler: Handler,
    message: Message,
    ctx: RequestContext,
    deliver: Callable[[str], object],
    on_success: OnSuccess | None = None,
    done: Callable[[], object] | None = None,
    track: Callable[[threading.Thread], object] | None = None,
) -> None:
    """Run the request on a new thread (greenlet under gevent); hand its reply to *deliver*.

    Must be called inside the Flask request context, which the thread gets a
    copy of. *done* runs last, whatever happened. *track* gets the thread
    before it starts (so a shutdown can wait for it). The HTTP request may
    end before the handler does: a client that went away does not cancel it.
    """

    def reply() -> None:
        deliver(invoke(handler, message, ctx, on_success)[0])

    in_request_context = copy_current_request_context(reply)

    def run() -> None:
        try:
            in_request_context()
        except Exception:
            logger.exception("MCP request thread failed on %s", message.method)
        finally:
            if done is not None:
                done()

    thread = threading.Thread(target=run, name=f"mcp-{(message.method or 'request')[:40]}", daemon=True)
    if track is not None:
        track(thread)
    thread.start()

