"""Replies to server-to-client requests: where a handler waits for one, and how it finds it.

A handler that asks the client something (``sampling/createMessage``,
``elicitation/create``, ``roots/list``) registers the request before sending
it, then waits. The client POSTs its reply as a new HTTP request, which may
land on any process: the stream manager routes it to the process that waits
(:meth:`~session_manager.StreamSessionManager.expect_reply` and
:meth:`~session_manager.StreamSessionManager.deliver_reply`). This module
is the in-process half: a registry of pending requests, each resolved at
most once.

A reply is matched by session *and* request id, so a reply presented by
another session (or principal) never reaches a waiter; request ids are
random, so they cannot be guessed either.
"""

from __future__ import annotations

import re
import secrets
import threading

__all__ = ["REQUEST_ID_PREFIX", "PendingReplies", "PendingReply", "is_request_id", "new_request_id"]

#: What every server-to-client request id starts with: how a POSTed reply is told from others.
REQUEST_ID_PREFIX = "s2c-"


_REQUEST_ID = re.compile(re.escape(REQUEST_ID_PREFIX) + "[0-9a-f]{16}")


def new_request_id() -> str:
    """A fresh id for a server-to-client request: unguessable, unique per session in practice."""
    return REQUEST_ID_PREFIX + secrets.token_hex(8)


def is_request_id(value: object) -> bool:
    """Whether *value* could be an id :func:`new_request_id` made."""
    return type(value) is str and _REQUEST_ID.fullmatch(value) is not None


class PendingReply:
    """One server-to-client request waiting for its reply (a serialized JSON-RPC response)."""

    # A held lock, released by the reply, is the cheapest waitable (an Event is a
    # Condition, a lock and a deque); gevent patches it like any lock.
    __slots__ = ("_registry", "_reply", "_signal", "request_id", "session_id")

    def __init__(self, registry: PendingReplies, session_id: str, request_id: str) -> None:
        self.session_id = session_id
        self.request_id = request_id
        self._registry = registry
        self._reply: str | None = None
        self._signal = threading.Lock()
        self._signal.acquire()

    def wait(self, timeout: float | None) -> str | None:
        """The reply, once it came; None if it did not within *timeout* seconds."""
        if self._reply is None and self._signal.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            self._signal.release()  # answered: every later wait returns at once
        return self._reply

    def resolve(self, reply: str) -> None:
        """Hand over *reply*; the registry made sure this happens at most once."""
        self._reply = reply
        self._signal.release()

    def cancel(self) -> None:
        """Stop waiting (answered, timed out, given up): a later reply finds nothing. Idempotent."""
        self._registry.discard(self)

    def __repr__(self) -> str:
        state = "pending" if self._reply is None else "answered"
        return f"<PendingReply {self.request_id} session={self.session_id!r} {state}>"


class PendingReplies:
    """The server-to-client requests of this process awaiting a reply, by session and request id."""

    __slots__ = ("_lock", "_pending")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], PendingReply] = {}

    def add(self, session_id: str, request_id: str) -> PendingReply:
        """Register a request before it is sent; ValueError if the id is already pending in the session."""
        pending = PendingReply(self, session_id, request_id)
        with self._lock:
            if (session_id, request_id) in self._pending:
                raise ValueError(f"request id {request_id!r} is already pending in this session")
            self._pending[session_id, request_id] = pending
        return pending

    def resolve(self, session_id: str, request_id: str, reply: str) -> bool:
        """Hand *reply* to the request waiting for it; False if none is (unknown, answered or given up)."""
        with self._lock:
            pending = self._pending.pop((session_id, request_id), None)
        if pending is None:
            return False
        pending.resolve(reply)
        return True

    def discard(self, pending: PendingReply) -> None:
        """Forget *pending* (if it is still the registered one)."""
        key = (pending.session_id, pending.request_id)
        with self._lock:
            if self._pending.get(key) is pending:
                del self._pending[key]

    def __len__(self) -> int:
        """Number of requests awaiting a reply."""
        return len(self._pending)
