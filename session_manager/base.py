"""The two manager contracts (streams and info) and the pair that holds them."""

from __future__ import annotations

import abc
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _validate
from ._validate import LOG_LEVELS
from .errors import BackendUnavailableError
from .replies import PendingReplies, PendingReply
from .stream import StreamController

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11 on

    from .events import EventStore
    from .subscriptions import SubscriptionManager

__all__ = [
    "DEFAULT_DEDUPE_TTL",
    "LOG_LEVELS",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "CheckedMessage",
    "InfoSessionManager",
    "Message",
    "SessionInfo",
    "SessionManagers",
    "SessionQuota",
    "StreamSessionManager",
    "batch_error",
    "checked_batch",
    "idempotency_key",
]

#: One message of :meth:`StreamSessionManager.send_many`: ``(sessions, data)``, or
#: ``(sessions, data, idempotency_key)``, as :meth:`~StreamSessionManager.send` takes them.
Message = tuple[Iterable[str] | None, str] | tuple[Iterable[str] | None, str, str | None]
#: A message of a batch once checked: session ids materialized, the key checked (or ``None``).
CheckedMessage = tuple[Sequence[str] | None, str, str | None]

#: Seconds a stream manager remembers the idempotency key of a send (its ``dedupe_ttl``) by default.
DEFAULT_DEDUPE_TTL = 300.0
#: Longest idempotency key accepted (visible ASCII, as session ids).
MAX_IDEMPOTENCY_KEY_LENGTH = 256


def idempotency_key(value: Any) -> str:
    """Return *value* if it is a valid idempotency key, else raise TypeError/ValueError (every backend's check)."""
    if type(value) is not str:
        raise TypeError(f"idempotency_key must be a str, not {type(value).__name__}")
    visible_ascii = value.isascii() and value.isprintable() and " " not in value
    if not 0 < len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH or not visible_ascii:
        raise ValueError(
            f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters "
            f"(0x21-0x7E, e.g. a UUID), got {value!r:.80}"
        )
    return value


def checked_batch(messages: Iterable[Message]) -> list[CheckedMessage]:
    """The messages of a ``send_many``, every one checked as ``send`` checks it, before any is sent.

    Session ids are materialized (a generator is read once, here), so a
    backend can walk them more than once.
    """
    batch: list[CheckedMessage] = []
    for item in messages:
        try:
            sessions, data, *rest = item
        except (TypeError, ValueError):
            rest = [None, None]
        if len(rest) > 1:
            raise TypeError(
                f"each message must be a (sessions, data) pair or a (sessions, data, idempotency_key) triple, "
                f"not {item!r:.80}"
            )
        key = rest[0] if rest else None
        ids = None if sessions is None else _validate.session_ids(sessions)
        batch.append((ids, _validate.message(data), None if key is None else idempotency_key(key)))
    return batch


def batch_error(reason: str, total: int, sent: int, unknown: int) -> BackendUnavailableError:
    """The error of a ``send_many`` that failed part way: *reason*, and what became of each message.

    Messages go out in order, so a failed batch is always: the first *sent*
    delivered to the backend, the next *unknown* perhaps (the backend may
    have run them before the failure was seen), the rest not sent at all.
    """
    rest = total - sent - unknown
    return BackendUnavailableError(
        f"{reason}; of a batch of {total} messages, the first {sent} were sent, "
        f"the next {unknown} may or may not have been (unknown), and the other {rest} were not"
    )



class StreamSessionManager(abc.ABC):
    """Where the open SSE streams live, and how messages reach them.

    Every method is safe to call from any thread or greenlet.
    """

    @abc.abstractmethod
    def create(self, session_id: str, controller: StreamController, *, last_event_id: str | None = None) -> None:
        """Register the open stream of *session_id*.

        Raises :class:`~session_manager.StreamConflictError` if the session
        already has an open stream (which is left untouched). The manager
        forgets the stream by itself when the stream ends.

        With an :attr:`event_store`, the session's messages are stored from
        its first stream on (until :meth:`delete`), every event carries an
        id, and the stream starts with a priming event holding the id of the
        latest stored event. *last_event_id* (a client's ``Last-Event-ID``)
        resumes: the events stored after it are replayed, in order, before
        anything live, with no gap or duplicate in between, and the new
        stream replaces any open stream of the session (a client resuming is
        the one that stream belonged to). A bad id raises
        :class:`~session_manager.InvalidEventIdError` or
        :class:`~session_manager.EventGoneError`; resuming without an event
        store raises ``ValueError``.
        """

    @property
    def event_store(self) -> EventStore | None:
        """The event store that makes this manager's streams resumable, if any."""
        return None

    def _check_create(self, session_id: str, controller: StreamController, last_event_id: str | None) -> None:
        """The argument checks of every :meth:`create`, so all backends refuse the same calls."""
        _validate.session_id(session_id)
        if not isinstance(controller, StreamController):
            raise TypeError(f"controller must be a StreamController, not {type(controller).__name__}")
        if last_event_id is not None and self.event_store is None:
            raise ValueError("resuming (last_event_id) needs an event store: pass event_store= to the manager")

    @abc.abstractmethod
    def delete(self, session_id: str) -> None:
        """Close the stream of *session_id* and forget it and its stored events; idempotent.

        Call it when the session ends (``SessionManagers.delete`` does).
        """

    @abc.abstractmethod
    def has(self, session_id: str) -> bool:
        """Return whether a stream is open for *session_id* (anywhere)."""

    @abc.abstractmethod
    def send(self, sessions: Iterable[str] | None, data: str, idempotency_key: str | None = None) -> None:
        """Deliver *data*, one serialized JSON-RPC message, to streams.

        *sessions* is an iterable of session ids, or ``None`` for every open
        stream. Ids without an open stream are ignored; an id that is not a
        ``str`` raises ``TypeError`` (the in-memory manager checks them as it
        goes: the ids before it were served). Delivery is FIFO per stream
        and at most once; a closed or slow stream never stops delivery to
        the others.

        *idempotency_key* (1 to :data:`MAX_IDEMPOTENCY_KEY_LENGTH` visible
        ASCII characters, e.g. a UUID) makes the send happen once: a send
        with a key that a send which ran used in the last ``dedupe_ttl``
        seconds (a manager option) does nothing and returns normally. Why:
        a send that raised :class:`~session_manager.BackendUnavailableError`
        may or may not have run; retried with the same key, its message is
        delivered (and stored) at most once. The key names one message:
        give each message its own. Backends check it with
        :func:`idempotency_key`; without one a send costs nothing more.
        Pass it by name: it is not keyword-only only because CPython does
        not specialize calls to functions with keyword-only parameters,
        which would cost every send about 3%.
        """

    def send_many(self, messages: Iterable[Message]) -> None:
        """Deliver several messages, as :meth:`send` would one after the other, at once where it can.

        *messages* is an iterable of ``(sessions, data)`` pairs, or of
        ``(sessions, data, idempotency_key)`` triples (a key, or ``None``,
        per message), each as :meth:`send` takes them. Each stream gets its messages in batch
        order, after anything sent before the call (FIFO per stream, as
        with :meth:`send`). Every pair is checked first: a bad one raises
        ``TypeError`` or ``ValueError`` and nothing is sent.

        Why: a backend with a network in between (Redis) sends the whole
        batch in one round trip instead of one per message, and the streams
        it reaches get the batch together (one wake-up of each reader).
        This default sends the messages one by one with :meth:`send`.

        Failure: messages go out in order, and never one after a message
        that was not sent. If the backend fails part way,
        :class:`~session_manager.BackendUnavailableError` says of how many
        messages it is known that they were sent, how many may or may not
        have been (a backend that timed out cannot know whether it ran
        them: as with a :meth:`send` that raises), and that the rest were
        not.
        """
        batch = checked_batch(messages)
        for index, (sessions, data, key) in enumerate(batch):
            try:
                if key is None:  # a backend of its own may not take the keyword
                    self.send(sessions, data)
                else:
                    self.send(sessions, data, idempotency_key=key)
            except BackendUnavailableError as exc:
                raise batch_error(str(exc), len(batch), index, 1) from exc

    def expect_reply(self, session_id: str, request_id: str, timeout: float) -> PendingReply:
        """Register a server-to-client request of *session_id* before it is sent; return what waits for its reply.

        The client POSTs its reply as a new HTTP request, perhaps to another
        process: :meth:`deliver_reply`, called there, hands it to this
        waiter. After *timeout* seconds (or :meth:`PendingReply.cancel`) a
        reply finds nothing. This default serves one process; a backend
        shared by several (Redis) routes replies between them.
        """
        _validate.session_id(session_id)
        return self._pending_replies().add(session_id, request_id)

    def deliver_reply(self, session_id: str, request_id: str, reply: str) -> bool:
        """Hand *reply* (a serialized JSON-RPC response) to the request of *session_id* awaiting it, wherever it waits.

        Returns False if no such request is pending: never sent, already
        answered, timed out, or sent to another session.
        """
        _validate.session_id(session_id)
        return self._pending_replies().resolve(session_id, request_id, _validate.message(reply))

    def _pending_replies(self) -> PendingReplies:
        """This manager's registry of requests awaiting a reply in this process (made on first use)."""
        registry: PendingReplies | None = getattr(self, "_replies", None)
        if registry is None:
            with _REPLIES_LOCK:
                registry = getattr(self, "_replies", None)
                if registry is None:
                    registry = self._replies = PendingReplies()
        return registry

    @abc.abstractmethod
    def close(self) -> None:
        """Close every stream and release background threads and connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: Guard the first use of a manager's reply registry and secrets (subclasses need not call a base __init__).
_REPLIES_LOCK = threading.Lock()
_SHARED_LOCK = threading.Lock()


@dataclass(frozen=True)
class SessionInfo:
    """Everything an info manager knows of one session, read in one call."""

    protocol_version: str | None = None
    client_info: dict[str, Any] | None = None
    client_capabilities: dict[str, Any] | None = None
    log_level: str | None = None


@dataclass(frozen=True)
class SessionQuota:
    """The caps a new session must fit within, checked and counted by :meth:`InfoSessionManager.create` atomically.

    - *max_sessions*: live sessions the manager may hold in all (every
      process of a shared backend; every session counts, created with a
      quota or not); ``None``: no cap.
    - *max_per_principal*: live sessions of *principal* (those created with
      a quota naming it); ``None``: no cap.
    - *principal*: the group the new session is counted in; ``None`` counts
      it only in the server-wide total.

    A session stops counting when it is deleted or expires. Past a cap,
    ``create`` raises :class:`~session_manager.SessionLimitError` and
    creates nothing.
    """

    max_sessions: int | None = None
    max_per_principal: int | None = None
    principal: str | None = None

    def __post_init__(self) -> None:
        _validate.positive_int(self.max_sessions, "max_sessions", optional=True)
        _validate.positive_int(self.max_per_principal, "max_per_principal", optional=True)
        if self.principal is not None and type(self.principal) is not str:
            raise TypeError(f"principal must be a str or None, not {type(self.principal).__name__}")


class InfoSessionManager(abc.ABC):
    """Per-session metadata that must outlive one request (and one process).

    A session exists from :meth:`create` until :meth:`delete`; setters on a
    session that does not exist raise
    :class:`~session_manager.SessionNotFoundError`, so no metadata can
    outlive its session. Getters return ``None`` where nothing is stored.
    Values are JSON data, copied in and out. Every method is safe to call
    from any thread or greenlet.
    """

    #: Whether :meth:`create` enforces a :class:`SessionQuota` (this package's backends do).
    #:
    #: False by default, so an info manager written before quotas existed
    #: keeps working unchanged: nothing passes it a quota. A transport asked
    #: for session caps refuses such a manager when it is built (``TypeError``
    #: naming the fix), rather than run uncapped while its options say
    #: otherwise, or fail at the first ``initialize``. Counting cannot be
    #: done for a manager from outside: the count must change in the same
    #: atomic step as the sessions (on every create, delete and expiry, in
    #: every process), which only the manager itself can do.
    enforces_quotas: bool = False

    @abc.abstractmethod
    def create(
        self,
        session_id: str,
        *,
        protocol_version: str | None = None,
        client_info: dict[str, Any] | None = None,
        client_capabilities: dict[str, Any] | None = None,
        quota: SessionQuota | None = None,
    ) -> None:
        """Start a session, optionally with its ``initialize`` parameters.

        Raises ``ValueError`` if the session already exists. With a *quota*
        (managers whose :attr:`enforces_quotas` is true), the session is
        counted against its caps in the same atomic step that creates it,
        across every process of a shared backend; past a cap
        :class:`~session_manager.SessionLimitError` is raised and nothing is
        created.
        """

    @abc.abstractmethod
    def exists(self, session_id: str) -> bool:
        """Return whether the session exists (created and not deleted)."""

    @abc.abstractmethod
    def get(self, session_id: str) -> SessionInfo | None:
        """Return all metadata of the session at once, or ``None`` if it does not exist."""

    @abc.abstractmethod
    def get_protocol_version(self, session_id: str) -> str | None:
        """Return the protocol version negotiated at ``initialize``."""

    @abc.abstractmethod
    def set_protocol_version(self, session_id: str, version: str) -> None:
        """Store the negotiated protocol version."""

    @abc.abstractmethod
    def get_client_info(self, session_id: str) -> dict[str, Any] | None:
        """Return the ``clientInfo`` the client sent at ``initialize``."""

    @abc.abstractmethod
    def set_client_info(self, session_id: str, info: dict[str, Any]) -> None:
        """Store the client's ``clientInfo``."""

    @abc.abstractmethod
    def get_client_capabilities(self, session_id: str) -> dict[str, Any] | None:
        """Return the client capabilities sent at ``initialize``."""

    @abc.abstractmethod
    def set_client_capabilities(self, session_id: str, capabilities: dict[str, Any]) -> None:
        """Store the client capabilities."""

    @abc.abstractmethod
    def get_log_level(self, session_id: str) -> str | None:
        """Return the level set by ``logging/setLevel``."""

    @abc.abstractmethod
    def set_log_level(self, session_id: str, level: str) -> None:
        """Store the log level; ``ValueError`` unless it is one of :data:`LOG_LEVELS`."""

    @abc.abstractmethod
    def get_subscriptions(self, uri: str) -> list[str]:
        """Return the ids of the sessions subscribed to resource *uri*."""

    @abc.abstractmethod
    def add_subscription(self, session_id: str, uri: str) -> None:
        """Subscribe the session to updates of resource *uri*."""

    @abc.abstractmethod
    def remove_subscription(self, session_id: str, uri: str) -> None:
        """Unsubscribe the session from *uri*; idempotent."""

    @abc.abstractmethod
    def delete(self, session_id: str) -> None:
        """Remove the session and all its metadata, subscriptions included; idempotent."""

    def close(self) -> None:
        """Release connections; the in-memory backend has none."""

    def track_streams(self, streams: StreamSessionManager) -> None:
        """Let *streams* keep sessions alive, and end a session's stream when it expires.

        A session expires after ``session_ttl`` seconds with no request and
        no open stream. :class:`SessionManagers` calls this for its pair.
        Backends whose stream manager refreshes the session by itself (Redis
        with Redis) need nothing, which is the default.
        """

    def shared_secret(self, name: str) -> bytes:
        """A random 32-byte secret named *name*, the same for every process on this backend (made on first use).

        What lets workers trust what another worker sealed (the
        ``requestState`` of a multi round-trip request) with no key to
        configure. This default keeps it in the manager, which is right for
        a backend of one process; a backend shared by several processes
        (Redis) must override it, or states sealed by one worker fail on
        another.
        """
        _validate.text(name, "name")
        with _SHARED_LOCK:
            made: dict[str, bytes] = self.__dict__.setdefault("_secrets", {})
            return made.setdefault(name, secrets.token_bytes(32))

    def claim(self, token: str, ttl: float) -> bool:
        """Record *token* for *ttl* seconds; True the first time, False while it is recorded: single use across processes.

        What makes a ``requestState`` good for one retry only. This default
        serves one process (a backend shared by several overrides it); it
        keeps at most what was claimed in the last *ttl* seconds.
        """
        _validate.text(token, "token")
        ttl = _validate.positive_seconds(ttl, "ttl")
        now = time.monotonic()
        with _SHARED_LOCK:
            claimed: dict[str, float] = self.__dict__.setdefault("_claimed", {})
            if len(claimed) > 64:  # forget the expired ones (insertion order is a fair guess at expiry order)
                for old in [t for t, until in itertools.islice(claimed.items(), 64) if until <= now]:
                    del claimed[old]
            until = claimed.get(token)
            if until is not None and until > now:
                return False
            claimed[token] = now + ttl
            return True

    def keep_alive_while(self, predicate: Callable[[str], bool]) -> None:
        """Also keep sessions for which ``predicate(session_id)`` is true (e.g. a request still running).

        Transports call this. The default does nothing: backends whose
        sessions expire by themselves (Redis key TTLs) refresh a session on
        every call naming it instead.
        """

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SessionManagers:
    """What a transport needs: ``.streams`` and ``.info`` (sessions), ``.subscriptions`` (2026-07-28 listen streams).

    All default to the in-memory backends, right for one process.
    """

    __slots__ = ("info", "streams", "subscriptions")

    def __init__(
        self,
        streams: StreamSessionManager | None = None,
        info: InfoSessionManager | None = None,
        subscriptions: SubscriptionManager | None = None,
    ) -> None:
        from .memory import InMemoryInfoSessionManager, InMemoryStreamSessionManager
        from .subscriptions import InMemorySubscriptionManager, SubscriptionManager

        if streams is not None and not isinstance(streams, StreamSessionManager):
            raise TypeError(f"streams must be a StreamSessionManager, not {type(streams).__name__}")
        if info is not None and not isinstance(info, InfoSessionManager):
            raise TypeError(f"info must be an InfoSessionManager, not {type(info).__name__}")
        if subscriptions is not None and not isinstance(subscriptions, SubscriptionManager):
            raise TypeError(f"subscriptions must be a SubscriptionManager, not {type(subscriptions).__name__}")
        self.streams: StreamSessionManager = InMemoryStreamSessionManager() if streams is None else streams
        self.info: InfoSessionManager = InMemoryInfoSessionManager() if info is None else info
        self.subscriptions: SubscriptionManager = (
            InMemorySubscriptionManager() if subscriptions is None else subscriptions
        )
        self.info.track_streams(self.streams)

    def delete(self, session_id: str) -> None:
        """End the session everywhere: all its metadata, its stream and its stored events.

        Metadata goes first: a stream opened concurrently (which checks that
        the session exists once it is registered) then sees the session gone
        and is closed, instead of outliving it.
        """
        self.info.delete(session_id)
        self.streams.delete(session_id)

    def close(self) -> None:
        """Close every manager."""
        try:
            self.subscriptions.close()
        finally:
            try:
                self.streams.close()
            finally:
                self.info.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SessionManagers(streams={self.streams!r}, info={self.info!r}, subscriptions={self.subscriptions!r})"
