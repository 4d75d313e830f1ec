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
from session_manager.subscriptions import InMemorySubscriptionManager, SubscriptionManager

StreamFactory = Callable[[pytest.FixtureRequest], StreamSessionManager]
StoreFactory = Callable[[pytest.FixtureRequest], EventStore]
InfoFactory = Callable[[pytest.FixtureRequest], InfoSessionManager]
SubscriptionFactory = Callable[[pytest.FixtureRequest], SubscriptionManager]

STREAM_BACKENDS: dict[str, StreamFactory] = {
    "memory": lambda request: InMemoryStreamSessionManager(),
    "redis": lambda request: request.getfixturevalue("redis_streams"),  # tests/conftest_redis.py
}

INFO_BACKENDS: dict[str, InfoFactory] = {
    "memory": lambda request: InMemoryInfoSessionManager(),
    "redis": lambda request: request.getfixturevalue("redis_info"),  # tests/conftest_redis.py
}

SUBSCRIPTION_BACKENDS: dict[str, SubscriptionFactory] = {
    "memory": lambda request: InMemorySubscriptionManager(),
    "redis": lambda request: request.getfixturevalue("redis_subscriptions"),  # tests/conftest_redis.py
}

#: Event stores with small bounds: ``max_events`` = 50, ``max_streams`` = 3.
EVENT_STORE_BACKENDS: dict[str, StoreFactory] = {
    "memory": lambda request: InMemoryEventStore(50, max_streams=3),
    "redis": lambda request: request.getfixturevalue("redis_event_store"),  # tests/conftest_redis.py
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
