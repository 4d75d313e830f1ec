"""Listen streams of MCP 2026-07-28 ``subscriptions/listen``, and the notifications that reach them.

A client opens a listen stream with a ``subscriptions/listen`` request whose
``params.notifications`` says what it wants (:class:`ListenFilter`); the
server answers with a long-lived SSE stream that carries, tagged with the
listen request's id in ``params._meta["io.modelcontextprotocol/subscriptionId"]``:

============================================  =============================================
notification                                  reaches the listen streams that asked for
============================================  =============================================
``notifications/tools/list_changed``          ``toolsListChanged: true``
``notifications/prompts/list_changed``        ``promptsListChanged: true``
``notifications/resources/list_changed``      ``resourcesListChanged: true``
``notifications/resources/updated {uri}``     *uri*, exactly, in ``resourceSubscriptions``
============================================  =============================================

A :class:`SubscriptionManager` holds a process's listen streams and delivers
those notifications: :class:`InMemorySubscriptionManager` within one
process, :class:`~session_manager.redis.RedisSubscriptionManager` across
every process sharing a Redis.

Costs: the streams are indexed by kind and by URI, kept up to date as
streams open and close, so a ``resource_updated`` touches only the streams
watching that URI and a ``*_list_changed`` only those of its kind, never a
scan of every stream. A notification is JSON-encoded once: each stream's
message is the same pre-encoded text with that stream's (pre-encoded)
subscription id spliced in, then SSE-framed.

Delivery: at most once, FIFO per stream. MCP 2026-07-28 has no resumability:
a listen stream carries no event ids, and what a stream misses (its client
reconnecting, a slow consumer dropped) is gone; a client that reconnects
should re-read the lists it cares about. A slow consumer (a stream whose
queue is full, see :class:`~session_manager.StreamController`) is closed and
forgotten; the others are unaffected.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _validate
from .sse import encode_message
from .stream import StreamController

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11 on

__all__ = [
    "DEFAULT_MAX_URIS",
    "SUBSCRIPTION_ID_META",
    "InMemorySubscriptionManager",
    "ListenFilter",
    "SubscriptionId",
    "SubscriptionManager",
    "acknowledged_message",
    "listen_result",
]

logger = logging.getLogger(__name__)

#: The ``_meta`` key tagging every message of a listen stream with the listen request's id.
SUBSCRIPTION_ID_META = "io.modelcontextprotocol/subscriptionId"
#: Most ``resourceSubscriptions`` a listen request may name, by default.
DEFAULT_MAX_URIS = 1000

#: A listen request's JSON-RPC id, as the request carried it (a number stays a number on the wire).
SubscriptionId = str | int

#: ``ListenFilter`` field -> its camelCase name in ``params.notifications``.
_FLAGS = {
    "tools_list_changed": "toolsListChanged",
    "prompts_list_changed": "promptsListChanged",
    "resources_list_changed": "resourcesListChanged",
}
_URIS = "resourceSubscriptions"

# -- kinds of notification -------------------------------------------------------------

#: The three list kinds, by the one-letter code the indexes (and the Redis wire) use.
TOOLS, PROMPTS, RESOURCES = "t", "p", "r"
_LIST_METHODS = {
    TOOLS: "notifications/tools/list_changed",
    PROMPTS: "notifications/prompts/list_changed",
    RESOURCES: "notifications/resources/list_changed",
}
RESOURCE_UPDATED = "notifications/resources/updated"


def _template(method: str, params: dict[str, Any] | None = None) -> tuple[str, str]:
    """The message of *method* as ``(head, tail)``: ``head + <JSON subscription id> + tail`` is the tagged message.

    One ``json.dumps`` per notification: ``_meta`` is the last member of
    ``params``, and ``params`` of the message, so the id is followed by
    exactly three closing braces.
    """
    marker = {SUBSCRIPTION_ID_META: None}
    text = json.dumps(
        {"jsonrpc": "2.0", "method": method, "params": {**(params or {}), "_meta": marker}},
        separators=(",", ":"),
    )
    tail = "}}}"
    assert text.endswith("null" + tail), text
    return text[: -len("null" + tail)], tail


#: The list_changed templates never change: encoded once, at import.
_LIST_TEMPLATES = {kind: _template(method) for kind, method in _LIST_METHODS.items()}
#: resources/updated around its URI: ``_UPDATED[0] + json.dumps(uri) + _UPDATED[1]`` is its head.
_UPDATED = _template(RESOURCE_UPDATED, {"uri": ""})[0].split('""', 1)


def _updated_template(uri: str) -> tuple[str, str]:
    """:func:`_template` of ``resources/updated`` for *uri*, with one ``json.dumps`` of the URI alone."""
    return _UPDATED[0] + json.dumps(uri) + _UPDATED[1], "}}}"


def _encoded_id(subscription_id: object) -> str:
    """The JSON text of a listen request id: a str or an int (not a bool); TypeError otherwise."""
    if type(subscription_id) is str or type(subscription_id) is int:
        return json.dumps(subscription_id)
    raise TypeError(
        "subscription_id must be the listen request's JSON-RPC id, a str or an int, "
        f"not {type(subscription_id).__name__}"
    )


def acknowledged_message(subscription_id: SubscriptionId, filter: ListenFilter) -> str:
    """The ``notifications/subscriptions/acknowledged`` message a listen stream starts with (serialized).

    Prime it on the controller (``controller.prime([encode_message(...)])``)
    before :meth:`SubscriptionManager.create`: it is then the stream's first
    message, before any notification, as the spec requires.
    """
    if not isinstance(filter, ListenFilter):
        raise TypeError(f"filter must be a ListenFilter, not {type(filter).__name__}")
    head, tail = _template("notifications/subscriptions/acknowledged", {"notifications": filter.to_params()})
    return head + _encoded_id(subscription_id) + tail


def listen_result(subscription_id: SubscriptionId) -> str:
    """The response that ends a listen stream the server closes: ``{resultType: "complete", _meta: {subscriptionId}}``."""
    encoded = _encoded_id(subscription_id)
    return (
        f'{{"jsonrpc":"2.0","id":{encoded},"result":{{"resultType":"complete",'
        f'"_meta":{{"{SUBSCRIPTION_ID_META}":{encoded}}}}}}}'
    )


# -- the filter ------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenFilter:
    """What one listen stream asked for: the honoured subset of its ``params.notifications``."""

    tools_list_changed: bool = False
    prompts_list_changed: bool = False
    resources_list_changed: bool = False
    resource_subscriptions: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in _FLAGS:
            if type(getattr(self, name)) is not bool:
                raise TypeError(f"{name} must be a bool, not {type(getattr(self, name)).__name__}")
        uris = self.resource_subscriptions
        if not isinstance(uris, frozenset):
            raise TypeError(f"resource_subscriptions must be a frozenset of str, not {type(uris).__name__}")
        for uri in uris:
            _validate.text(uri, "each resource subscription URI")

    @classmethod
    def parse(cls, notifications: object, *, max_uris: int = DEFAULT_MAX_URIS) -> ListenFilter:
        """Read a listen request's ``params.notifications`` (decoded JSON).

        Raises ``ValueError`` saying what is wrong for a malformed filter:
        not an object, a flag that is not a boolean, ``resourceSubscriptions``
        that is not a list of non-empty strings or names more than
        *max_uris* URIs. Unknown members are ignored (later revisions may add
        kinds); a URI listed twice counts once.
        """
        if not isinstance(notifications, dict):
            # ValueError: a malformed request (-32602), not a caller's bug
            raise ValueError(f"params.notifications must be an object, not {_json_type(notifications)}")  # noqa: TRY004
        flags: dict[str, bool] = {}
        for name, member in _FLAGS.items():
            value = notifications.get(member, False)
            if type(value) is not bool:
                raise ValueError(f"params.notifications.{member} must be a boolean, not {_json_type(value)}")
            flags[name] = value
        raw = notifications.get(_URIS, [])
        if not isinstance(raw, list):
            raise ValueError(  # noqa: TRY004 - as above
                f"params.notifications.{_URIS} must be an array of strings, not {_json_type(raw)}"
            )
        if len(raw) > max_uris:
            raise ValueError(
                f"params.notifications.{_URIS} names {len(raw)} resources; at most {max_uris} are accepted"
            )
        for index, uri in enumerate(raw):
            if type(uri) is not str or not uri:
                shown = "an empty string" if uri == "" else _json_type(uri)
                raise ValueError(f"params.notifications.{_URIS}[{index}] must be a non-empty string, not {shown}")
        return cls(**flags, resource_subscriptions=frozenset(raw))

    def honoured(
        self, *, tools: bool = True, prompts: bool = True, resources: bool = True, subscribe: bool = True
    ) -> ListenFilter:
        """The part of this filter a server honours: its ``tools``/``prompts``/``resources`` lists
        change (``listChanged``), and it sends resource updates (``resources.subscribe``)."""
        return ListenFilter(
            tools_list_changed=self.tools_list_changed and tools,
            prompts_list_changed=self.prompts_list_changed and prompts,
            resources_list_changed=self.resources_list_changed and resources,
            resource_subscriptions=self.resource_subscriptions if subscribe else frozenset(),
        )

    def __and__(self, other: ListenFilter) -> ListenFilter:
        """What both filters ask for: a grant never wider than the request it answers."""
        return self.honoured(
            tools=other.tools_list_changed,
            prompts=other.prompts_list_changed,
            resources=other.resources_list_changed,
        ).within(other.resource_subscriptions)

    def within(self, uris: frozenset[str]) -> ListenFilter:
        """This filter, watching only those of its URIs that are in *uris*."""
        return dataclasses.replace(self, resource_subscriptions=self.resource_subscriptions & uris)

    def to_params(self) -> dict[str, Any]:
        """The filter as the spec's camelCase ``notifications`` object: only what it asks for (URIs sorted)."""
        params: dict[str, Any] = {member: True for name, member in _FLAGS.items() if getattr(self, name)}
        if self.resource_subscriptions:
            params[_URIS] = sorted(self.resource_subscriptions)
        return params

    def kinds(self) -> list[str]:
        """The list kinds (:data:`TOOLS`, :data:`PROMPTS`, :data:`RESOURCES`) this filter asks for."""
        asked = (self.tools_list_changed, self.prompts_list_changed, self.resources_list_changed)
        return [kind for kind, wanted in zip((TOOLS, PROMPTS, RESOURCES), asked) if wanted]


def _json_type(value: object) -> str:
    """How JSON would name the type of a decoded *value*, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# -- the contract ----------------------------------------------------------------------


class SubscriptionManager(abc.ABC):
    """Where the listen streams live, and how list-changed and resource-updated notifications reach them.

    Every method is safe to call from any thread or greenlet. A stream only
    ever gets the kinds it asked for (a resource update only if its filter
    names that exact URI), each message tagged with its own subscription id.
    """

    @abc.abstractmethod
    def create(self, subscription_id: SubscriptionId, filter: ListenFilter, controller: StreamController) -> None:
        """Register a listen stream: *subscription_id* is the listen request's JSON-RPC id.

        Pass the id as the request carried it (a str, or an int for a
        numeric id): messages are tagged with it as is. A client may hold
        several listen streams (even with the same id: each stream is its
        own registration). The manager forgets the stream when *controller*
        closes. Prime the acknowledgement (:func:`acknowledged_message`)
        before calling this, so it is the stream's first message.
        """

    def _check_create(self, subscription_id: object, filter: object, controller: object) -> str:
        """The argument checks of every :meth:`create`; returns the JSON text of the id."""
        encoded = _encoded_id(subscription_id)
        if not isinstance(filter, ListenFilter):
            raise TypeError(f"filter must be a ListenFilter, not {type(filter).__name__}")
        if not isinstance(controller, StreamController):
            raise TypeError(f"controller must be a StreamController, not {type(controller).__name__}")
        return encoded

    @abc.abstractmethod
    def tools_list_changed(self) -> None:
        """Send ``notifications/tools/list_changed`` to every listen stream that asked for it (every process)."""

    @abc.abstractmethod
    def prompts_list_changed(self) -> None:
        """Send ``notifications/prompts/list_changed`` to every listen stream that asked for it."""

    @abc.abstractmethod
    def resources_list_changed(self) -> None:
        """Send ``notifications/resources/list_changed`` to every listen stream that asked for it."""

    @abc.abstractmethod
    def resource_updated(self, uri: str) -> None:
        """Send ``notifications/resources/updated {uri}`` to the listen streams subscribed to exactly *uri*.

        ``TypeError`` unless *uri* is a str, ``ValueError`` if it is empty.
        """

    @abc.abstractmethod
    def close_all(self, reason: str | None = None) -> None:
        """End every listen stream of this process: each gets its listen request's result, then ends.

        *reason* (e.g. ``"shutdown"``) is logged.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """End every listen stream of this process (:meth:`close_all`) and release threads and connections."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of listen streams of this process."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- local fan-out, shared by every backend (internal: the Redis backend uses it too) -----


class Listener:
    """One registered listen stream: its controller, filter and pre-encoded subscription id."""

    __slots__ = ("controller", "encoded_id", "filter", "subscription_id")

    def __init__(
        self, subscription_id: SubscriptionId, encoded_id: str, filter: ListenFilter, controller: StreamController
    ) -> None:
        self.subscription_id = subscription_id
        self.encoded_id = encoded_id
        self.filter = filter
        self.controller = controller


class Registry:
    """A process's listen streams, indexed by list kind and by resource URI, under one lock.

    Dicts serve as ordered sets (delivery order follows registration).
    Targets are copied under the lock and messages queued outside it, so a
    stream closing (its close callback unregisters it) never waits on a
    delivery, nor a delivery on a slow stream.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all: dict[Listener, None] = {}
        #: Per list kind, each listener that asked for it with its tagged frame of that kind, framed once.
        self._kinds: dict[str, dict[Listener, bytes]] = {kind: {} for kind in _LIST_METHODS}
        self._uris: dict[str, dict[Listener, None]] = {}
        #: Streams closed because their consumer fell behind.
        self.slow_consumers_dropped = 0

    def add(self, listener: Listener) -> None:
        """Index *listener* under every kind and URI its filter names."""
        wanted = listener.filter
        with self._lock:
            self._all[listener] = None
            for kind in wanted.kinds():
                head, tail = _LIST_TEMPLATES[kind]
                self._kinds[kind][listener] = encode_message(head + listener.encoded_id + tail)
            for uri in wanted.resource_subscriptions:
                self._uris.setdefault(uri, {})[listener] = None

    def discard(self, listener: Listener) -> bool:
        """Unindex *listener* (a URI goes with its last listener); False if it was not registered."""
        with self._lock:
            if listener not in self._all:
                return False
            del self._all[listener]
            for kind in listener.filter.kinds():
                self._kinds[kind].pop(listener, None)
            uris = self._uris
            for uri in listener.filter.resource_subscriptions:
                watchers = uris.get(uri)
                if watchers is not None:
                    watchers.pop(listener, None)
                    if not watchers:
                        del uris[uri]
            self.slow_consumers_dropped += listener.controller.overflowed
        return True

    def register(self, listener: Listener) -> None:
        """:meth:`add`, then forget the listener when its stream closes (at once if it already has)."""
        self.add(listener)
        listener.controller.add_close_callback(lambda: self.discard(listener))

    def list_changed(self, kind: str) -> None:
        """Queue the list_changed notification of *kind* on the streams that asked for it."""
        with self._lock:
            targets = self._kinds[kind].copy()  # a listener's list_changed frame never changes: framed at add()
        for listener, frame in targets.items():
            if not listener.controller.enqueue_frame(frame):
                self.discard(listener)  # closed, or overflowed (it closed itself)

    def resource_updated(self, uri: str) -> None:
        """Queue ``notifications/resources/updated`` of *uri* on the streams watching it."""
        with self._lock:
            watchers = self._uris.get(uri)
            targets = list(watchers) if watchers else None
        if targets:
            self._deliver(_updated_template(uri), targets)

    def _deliver(self, template: tuple[str, str], targets: Iterable[Listener]) -> None:
        """Splice each target's id into *template*, frame it, queue it; drop a closed or slow stream."""
        head, tail = template
        for listener in targets:
            if not listener.controller.enqueue_frame(encode_message(head + listener.encoded_id + tail)):
                self.discard(listener)  # closed, or overflowed (it closed itself)

    def close_all(self, reason: str | None) -> int:
        """Unregister every stream, send each its listen result and end it (queued frames first); return how many."""
        with self._lock:
            listeners = list(self._all)
        for listener in listeners:
            self.discard(listener)
            controller = listener.controller
            controller.enqueue_frame(encode_message(listen_result(listener.subscription_id)))
            controller.close(drain=True)
        if listeners:
            logger.info("closed %d listen streams%s", len(listeners), f" ({reason})" if reason else "")
        return len(listeners)

    def __len__(self) -> int:
        return len(self._all)

    @property
    def watched_uris(self) -> int:
        """Distinct resource URIs at least one stream watches (the size of the URI index)."""
        return len(self._uris)


def checked_uri(uri: object) -> str:
    """The *uri* of a ``resource_updated``: ``TypeError`` unless a str, ``ValueError`` if empty."""
    return _validate.text(uri, "uri")


# -- in-memory backend -----------------------------------------------------------------


class InMemorySubscriptionManager(SubscriptionManager):
    """Listen streams of this process; notifications reach them synchronously, from the caller's thread.

    Right for one process (several processes: use
    :class:`~session_manager.redis.RedisSubscriptionManager`). Once
    :meth:`close` has run, :meth:`create` raises ``RuntimeError`` and
    notifications reach nobody.
    """

    def __init__(self) -> None:
        self._registry = Registry()
        self._closed = False

    def create(self, subscription_id: SubscriptionId, filter: ListenFilter, controller: StreamController) -> None:
        encoded = self._check_create(subscription_id, filter, controller)
        if self._closed:
            raise RuntimeError("this InMemorySubscriptionManager is closed")
        self._registry.register(Listener(subscription_id, encoded, filter, controller))

    def tools_list_changed(self) -> None:
        self._registry.list_changed(TOOLS)

    def prompts_list_changed(self) -> None:
        self._registry.list_changed(PROMPTS)

    def resources_list_changed(self) -> None:
        self._registry.list_changed(RESOURCES)

    def resource_updated(self, uri: str) -> None:
        self._registry.resource_updated(checked_uri(uri))

    def close_all(self, reason: str | None = None) -> None:
        self._registry.close_all(reason)

    def close(self) -> None:
        self._closed = True
        self.close_all("manager closed")

    def __len__(self) -> int:
        return len(self._registry)

    @property
    def watched_uris(self) -> int:
        """Distinct resource URIs the listen streams of this process watch (the URI index's size)."""
        return self._registry.watched_uris

    @property
    def slow_consumers_dropped(self) -> int:
        """Listen streams closed because their consumer fell behind."""
        return self._registry.slow_consumers_dropped

    def __repr__(self) -> str:
        return f"<InMemorySubscriptionManager streams={len(self)} uris={self.watched_uris}>"
