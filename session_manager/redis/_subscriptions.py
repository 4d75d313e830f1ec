"""RedisSubscriptionManager: listen streams in every process, notified from any process.

A ``subscriptions/listen`` stream lives in the process holding its HTTP
connection. A notification (``tools_list_changed()``, ``resource_updated(uri)``
...) called in any process is **one PUBLISH** on one channel,
``<prefix>subscriptions``, whatever the number of listen streams and
processes. Each process that holds listen streams runs one listener (one
pub/sub connection, one thread or greenlet per manager) that decodes the
message and queues it on its own streams through their index (by kind, by
URI: :class:`~session_manager.subscriptions.Registry`), so a resource update
costs each process O(streams watching that URI). Every notification, local
or not, goes through the listener: delivery is FIFO per stream.

The listener starts with the first ``create`` of the process. A process that
only publishes (a cron job, ``examples/notify.py``) never starts one: it
uses the command pool only. Connections per process and manager: one
pub/sub connection (once a stream was created) plus the bounded command
pool, whatever the number of streams.

Wire format (the pub/sub message on ``<prefix>subscriptions``; built by
:func:`encode` and read by :func:`decode`, here and nowhere else):

=============  ==========================================  =======================================
message        means                                       delivered to the streams that asked for
=============  ==========================================  =======================================
``t``          ``notifications/tools/list_changed``        ``toolsListChanged``
``p``          ``notifications/prompts/list_changed``      ``promptsListChanged``
``r``          ``notifications/resources/list_changed``    ``resourcesListChanged``
``u <uri>``    ``notifications/resources/updated {uri}``   *uri* in ``resourceSubscriptions``
``x``          nothing: wakes listeners (a closing         nobody
               manager wakes its own listener to stop)
=============  ==========================================  =======================================

Anything else is logged and ignored (a newer version's kind, say).

Delivery semantics:

- **At most once.** A publish is never retried: after a timeout Redis may
  have run it already, and a second PUBLISH would be a doubled
  notification. A publish that fails raises
  :class:`~session_manager.BackendUnavailableError`; it may or may not
  have been delivered.
- **No resumability:** MCP 2026-07-28 has none for listen streams (no event
  ids, no ``Last-Event-ID``), so nothing is stored.
- **Outages lose notifications.** While a process's listener is
  disconnected (Redis down or restarting, a network fault), notifications
  published meanwhile never reach that process's streams; publishes made
  while Redis is down fail (``BackendUnavailableError``).
- **Open streams stay open** across a Redis restart or outage: the listener
  reconnects with exponential backoff (logging the outage once and the
  recovery), resubscribes, and the streams get every notification
  published from then on. ``create`` during an outage raises
  ``BackendUnavailableError`` (the stream could not be notified).

Fork: the listener, its thread and the streams' index belong to one process
(and to gevent, if it patched it): none is created at import or inherited
across ``fork`` (``gunicorn --preload``); :class:`_Slot` makes a fresh
per-process state on first use in each process, as the stream manager's
``NodeSlot`` does. A forked child starts with no streams and no listener.
"""

from __future__ import annotations

import logging
import os
import threading

import redis as redis_py

from .._validate import positive_seconds
from ..stream import StreamController
from ..subscriptions import (
    PROMPTS,
    RESOURCES,
    TOOLS,
    Listener,
    ListenFilter,
    Registry,
    SubscriptionId,
    SubscriptionManager,
    checked_uri,
)
from ._common import REDIS_DOWN, CallsFailed, RedisBacked, _connection, check_gevent, describe
from ._keys import Keys
from ._listener import POLL, keep_listening, messages

__all__ = ["WAKE", "RedisSubscriptionManager", "decode", "encode", "publish_once"]

logger = logging.getLogger(__name__)

#: The channel of every notification, under the prefix.
#: The message that only wakes listeners up.
WAKE = "x"
_UPDATED = "u"
_KINDS = frozenset((TOOLS, PROMPTS, RESOURCES))


# -- wire format -----------------------------------------------------------------------


def encode(kind: str, uri: str | None = None) -> bytes:
    """The pub/sub message of a notification: a list *kind* (``t``/``p``/``r``), or ``u`` with its *uri*.

    UTF-8 with ``surrogatepass``, as :func:`decode` reads it: any Python
    str a decoded JSON request can hold round-trips.
    """
    if kind == _UPDATED:
        assert uri is not None
        return f"{_UPDATED} {uri}".encode("utf-8", "surrogatepass")
    assert kind in _KINDS or kind == WAKE, kind
    return kind.encode()


def decode(data: bytes | str) -> tuple[str, str | None]:
    """``(kind, uri)`` of a message :func:`encode` built (``uri`` only for ``u``); unknown kinds come back as is."""
    payload = data.decode("utf-8", "surrogatepass") if isinstance(data, bytes) else data
    if payload[:2] == f"{_UPDATED} ":
        return _UPDATED, payload[2:]
    return payload, None


def publish_once(client: redis_py.Redis, channel: str, message: bytes) -> int:
    """PUBLISH *message* once, never retried; the number of subscribers that got it.

    Why not ``client.publish``: it goes through the client's retry policy,
    which sends the command again after a timeout although Redis may have
    run it (a doubled notification). Raises :class:`~._common.CallsFailed`
    (``unsure`` once the command may have been sent) or Redis's own error.
    """
    with _connection(client, 0) as connection:
        try:
            connection.send_command("PUBLISH", channel, message)
            return int(client.parse_response(connection, "PUBLISH"))  # type: ignore[no-untyped-call]
        except redis_py.exceptions.ResponseError:
            raise  # a refused command: its reply was read, the connection is fine
        except BaseException as exc:
            connection.disconnect()  # a reply may still be due on it: never reused
            if isinstance(exc, REDIS_DOWN):
                raise CallsFailed(0, exc, unsure=True) from exc
            raise


# -- per-process state -----------------------------------------------------------------


class _Local:
    """The manager's state in one process: its streams' index, its listener thread and its health."""

    def __init__(self, client: redis_py.Redis, channel: str, timeout: float, ping_interval: float) -> None:
        self.pid = os.getpid()
        self.client = client
        self.channel = channel
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.registry = Registry()
        self.stop = threading.Event()
        self.ready = threading.Event()  # the listener is subscribed
        self.thread: threading.Thread | None = None
        self.failures = 0  # failed listener connections in a row

    # -- listener ----------------------------------------------------------

    def listen(self) -> None:
        """Thread: the process's one subscription; reconnects with backoff until stopped."""
        keep_listening(self, self.client, (self.channel,), self.serve, self._name)

    def _name(self) -> str:
        """The listener in log lines, with what an outage costs (notifications meanwhile are lost)."""
        return f"Redis subscription listener (of {len(self.registry)} listen streams, which miss what is published meanwhile)"

    def serve(self, pubsub: redis_py.client.PubSub) -> None:
        """Deliver notifications until stopped; raises REDIS_DOWN when the connection is lost or silent."""
        confirmed = 0
        for message in messages(pubsub, self.stop, self.ping_interval, self.timeout):
            kind = message["type"]
            if kind == "message":
                self.dispatch(message["data"])
            elif kind == "subscribe":
                confirmed += 1
                self.on_subscribed(confirmed)

    def on_subscribed(self, confirmed: int) -> None:
        """The subscription is confirmed: the first time, after failed attempts, or redis-py reconnected by itself."""
        if confirmed > 1:
            logger.warning(
                "Redis subscription listener lost its connection; redis-py reconnected and resubscribed it "
                "(notifications published meanwhile are lost)"
            )
        elif self.failures:
            logger.info("Redis subscription listener resubscribed after %d failed attempts", self.failures)
        self.failures = 0
        self.ready.set()

    def dispatch(self, data: bytes | str) -> None:
        """Queue the notification of one pub/sub message on this process's streams that asked for it."""
        kind, uri = decode(data)
        if uri is not None:
            self.registry.resource_updated(uri)
        elif kind in _KINDS:
            self.registry.list_changed(kind)
        elif kind != WAKE:
            logger.warning("ignoring an unknown message on the subscriptions channel: %.80r", kind)

    def shutdown(self) -> None:
        """End this process's listen streams and stop its listener (woken by a ``x`` message)."""
        self.registry.close_all("manager closed")
        self.stop.set()
        thread = self.thread
        if thread is None:
            return
        try:
            publish_once(self.client, self.channel, encode(WAKE))
        except (CallsFailed, redis_py.exceptions.RedisError):
            pass  # Redis is down: the listener is backing off, or notices within its poll
        if thread is not threading.current_thread() and thread.ident is not None:
            thread.join(self.timeout + POLL)
            if thread.is_alive():
                logger.warning("%s did not stop in time", thread.name)


class _Slot:
    """Holds the state of the current process: made on first use, anew in a forked child."""

    def __init__(self, client: redis_py.Redis, channel: str, timeout: float, ping_interval: float) -> None:
        self._args = (client, channel, timeout, ping_interval)
        self._lock = threading.Lock()  # guards _local, its thread, and _closed
        self._local: _Local | None = None
        self.closed = False

    def local(self) -> _Local | None:
        """This process's state if it has one (never creates it)."""
        local = self._local
        return local if local is not None and local.pid == os.getpid() else None

    def started(self) -> _Local:
        """This process's state with its listener running (both made on first use)."""
        with self._lock:
            if self.closed:
                raise RuntimeError("this RedisSubscriptionManager is closed")
            local = self._local
            if local is None or local.pid != os.getpid():
                if local is not None:
                    logger.debug("process forked: starting afresh (listen streams of the parent stay there)")
                check_gevent()  # the child may have been patched after the parent built us
                local = self._local = _Local(*self._args)
            thread = local.thread
            if thread is None:
                thread = local.thread = threading.Thread(
                    target=local.listen, name="session_manager-redis-subscriptions", daemon=True
                )
            else:
                thread = None
        if thread is not None:
            thread.start()  # outside the lock: under gevent, start() may switch greenlets
        return local

    def close(self) -> tuple[bool, _Local | None]:
        """Mark the slot closed: ``(False, None)`` if it was already, else ``(True, this process's state)``."""
        with self._lock:
            if self.closed:
                return False, None
            self.closed = True
            return True, self.local()


# -- the manager -----------------------------------------------------------------------


class RedisSubscriptionManager(RedisBacked, SubscriptionManager):
    """Listen streams of every process sharing a Redis; a notification from any process reaches all of them.

    See the module documentation for the design, the wire format and the
    delivery semantics (at most once, no resumability, open streams survive
    Redis outages and restarts). Each notification is one PUBLISH, never
    retried: it raises :class:`~session_manager.BackendUnavailableError`
    when Redis cannot be used (it may or may not have been delivered then).

    :param url_or_client: a ``redis://`` URL, or a :class:`redis.Redis` client
        (used as configured, left open by :meth:`close`).
    :param prefix: namespace of the channel; the same as the other Redis
        components of the server.
    :param socket_timeout: seconds before a Redis call gives up (clients
        built from a URL), and longest ``create`` waits for the listener to
        subscribe.
    :param max_connections: size of the command pool of a client built from
        a URL (the listener takes one of them).
    :param ping_interval: seconds of silence after which the listener checks
        its connection with a PING (a dead one is replaced).
    """

    def __init__(
        self,
        url_or_client: str | redis_py.Redis,
        *,
        prefix: str = "mcp:",
        socket_timeout: float = 5.0,
        max_connections: int = 4,
        ping_interval: float = 10.0,
    ) -> None:
        interval = positive_seconds(ping_interval, "ping_interval")
        self._timeout = self._connect(
            url_or_client,
            prefix=prefix,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            role="subscriptions",
        )
        self._channel = Keys(self._prefix).subscriptions_channel
        self._slot = _Slot(self._client, self._channel, self._timeout, interval)

    @property
    def channel(self) -> str:
        """The pub/sub channel of every notification: ``<prefix>subscriptions``."""
        return self._channel

    # -- streams -----------------------------------------------------------

    def create(self, subscription_id: SubscriptionId, filter: ListenFilter, controller: StreamController) -> None:
        """See :meth:`SubscriptionManager.create`; the first call of a process starts its listener.

        Raises :class:`~session_manager.BackendUnavailableError` if the
        listener is not subscribed (within ``socket_timeout`` on the first
        call; at once while it is reconnecting): the stream could not be
        notified.
        """
        encoded = self._check_create(subscription_id, filter, controller)
        local = self._slot.started()
        if not local.ready.wait(0 if local.failures else self._timeout):
            raise self._errors.unavailable(
                "the subscription listener of this process is not connected, so the listen stream could not "
                "receive notifications; see the session_manager.redis log"
            )
        local.registry.register(Listener(subscription_id, encoded, filter, controller))

    # -- notifications -----------------------------------------------------

    def tools_list_changed(self) -> None:
        self._publish(encode(TOOLS))

    def prompts_list_changed(self) -> None:
        self._publish(encode(PROMPTS))

    def resources_list_changed(self) -> None:
        self._publish(encode(RESOURCES))

    def resource_updated(self, uri: str) -> None:
        self._publish(encode(_UPDATED, checked_uri(uri)))

    def _publish(self, message: bytes) -> None:
        """One PUBLISH, never retried; errors as BackendUnavailableError (Redis unusable) or Redis's own."""
        if self._slot.closed:
            raise RuntimeError("this RedisSubscriptionManager is closed")
        try:
            publish_once(self._client, self._channel, message)
        except CallsFailed as failed:
            raise failed.error(self._errors) from failed.cause

    # -- lifecycle ---------------------------------------------------------

    def close_all(self, reason: str | None = None) -> None:
        local = self._slot.local()
        if local is not None:
            local.registry.close_all(reason)

    def close(self) -> None:
        first, local = self._slot.close()
        if not first:
            return
        try:
            if local is not None:
                local.shutdown()
        finally:
            self._disconnect()

    def __len__(self) -> int:
        local = self._slot.local()
        return 0 if local is None else len(local.registry)

    @property
    def watched_uris(self) -> int:
        """Distinct resource URIs the listen streams of this process watch (the URI index's size)."""
        local = self._slot.local()
        return 0 if local is None else local.registry.watched_uris

    @property
    def slow_consumers_dropped(self) -> int:
        """Listen streams of this process closed because their consumer fell behind."""
        local = self._slot.local()
        return 0 if local is None else local.registry.slow_consumers_dropped

    @property
    def listening(self) -> bool:
        """Whether this process runs a listener (it does from its first :meth:`create` until :meth:`close`)."""
        local = self._slot.local()
        return local is not None and local.thread is not None and local.thread.is_alive()

    def __repr__(self) -> str:
        return (
            f"<RedisSubscriptionManager {describe(self._client)} channel={self._channel!r} "
            f"local_streams={len(self)}>"
        )
