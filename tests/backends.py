"""Factories for every backend the shared behaviour suites run against.

Each entry maps a backend name to a function ``(request) -> manager``; the
``request`` gives access to fixtures a backend needs (e.g. a Redis server).
Adding a backend here runs the whole behaviour suite against it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from session_manager import (
    EventStore,
    InfoSessionManager,
    InMemoryEventStore,
    InMemoryInfoSessionManager,
    InMemoryStreamSessionManager,
    StreamSessionManager,
)
from session_manager.redis import RedisEventStore
from session_manager.subscriptions import InMemorySubscriptionManager, SubscriptionManager

StreamFactory = Callable[..., StreamSessionManager]  # (request, **manager options)
StoreFactory = Callable[[pytest.FixtureRequest], EventStore]
InfoFactory = Callable[[pytest.FixtureRequest], InfoSessionManager]
SubscriptionFactory = Callable[[pytest.FixtureRequest], SubscriptionManager]

#: ``factory(request, **options)``: options (``dedupe_ttl=...``) go to the constructor.
STREAM_BACKENDS: dict[str, StreamFactory] = {
    "memory": lambda request, **options: InMemoryStreamSessionManager(**options),
    "redis": lambda request, **options: (
        request.getfixturevalue("node_factory")(**options) if options else request.getfixturevalue("redis_streams")
    ),  # tests/conftest_redis.py
}

INFO_BACKENDS: dict[str, InfoFactory] = {
    "memory": lambda request: InMemoryInfoSessionManager(),
    "redis": lambda request: request.getfixturevalue("redis_info"),  # tests/conftest_redis.py
}

SUBSCRIPTION_BACKENDS: dict[str, SubscriptionFactory] = {
    "memory": lambda request: InMemorySubscriptionManager(),
    "redis": lambda request: request.getfixturevalue("redis_subscriptions"),  # tests/conftest_redis.py
}

#: ``max_bytes`` of the event stores below: messages over 500 bytes (100,000 / (4 * 50)) are counted byte by byte.
EVENT_STORE_MAX_BYTES = 100_000

#: Event stores with small bounds: ``max_events`` = 50, ``max_streams`` = 3, ``max_bytes`` = 100,000.
EVENT_STORE_BACKENDS: dict[str, StoreFactory] = {
    "memory": lambda request: InMemoryEventStore(50, max_streams=3, max_bytes=EVENT_STORE_MAX_BYTES),
    "redis": lambda request: RedisEventStore(  # on the server and prefix of tests/conftest_redis.py
        request.getfixturevalue("redis_server").url,
        prefix=request.getfixturevalue("redis_prefix"),
        max_events=50,
        max_streams=3,
        max_bytes=EVENT_STORE_MAX_BYTES,
    ),
}


class DelegatingStore(EventStore):
    """A third-party store, as far as the managers can tell: they must use only the EventStore API."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner

    def open(self, session_id, stream_id):
        return self.inner.open(session_id, stream_id)

    def append(self, session_id, stream_id, message):
        return self.inner.append(session_id, stream_id, message)

    def replay(self, session_id, last_event_id):
        return self.inner.replay(session_id, last_event_id)

    def delete(self, session_id):
        self.inner.delete(session_id)


class BulkDelegatingStore(DelegatingStore):
    """A third-party store that also overrides the bulk calls, the managers' fast path."""

    def append_many(self, session_ids, message):
        return self.inner.append_many(session_ids, message)

    def append_broadcast(self, message):
        return self.inner.append_broadcast(message)


#: Stream managers with an event store (same bounds as above): resumable streams.
RESUMABLE_STREAM_BACKENDS: dict[str, StreamFactory] = {
    "memory": lambda request: InMemoryStreamSessionManager(event_store=InMemoryEventStore(50, max_streams=3)),
    "memory-custom-store": lambda request: InMemoryStreamSessionManager(
        event_store=DelegatingStore(InMemoryEventStore(50, max_streams=3))
    ),
    "memory-custom-bulk-store": lambda request: InMemoryStreamSessionManager(
        event_store=BulkDelegatingStore(InMemoryEventStore(50, max_streams=3))
    ),
    "redis": lambda request: request.getfixturevalue("redis_resumable_streams"),  # tests/conftest_redis.py
}
