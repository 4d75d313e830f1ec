"""Redis fixtures: a private redis-server per run (and per fault test), never skipped.

Registered by ``pytest_plugins`` in tests/conftest.py; tests/backends.py
runs the behaviour suites on the ``redis_streams`` and ``redis_info`` fixtures.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from session_manager.redis import (
    RedisEventStore,
    RedisInfoSessionManager,
    RedisStreamSessionManager,
    RedisSubscriptionManager,
)

from .redis_server import MISSING, RedisServer, find_binary

M = TypeVar("M")

#: Liveness settings of test managers: small, so dead processes vanish fast.
TEST_LIVENESS_TTL = 2.0
TEST_HEARTBEAT = 0.5


def _binary() -> str:
    binary = find_binary()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI run without redis-server: the Redis tests cannot run. {MISSING}", pytrace=False)
        pytest.fail(MISSING, pytrace=False)
    return binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server shared by the run; tests keep apart with unique prefixes."""
    server = RedisServer(_binary()).start()
    yield server
    server.cleanup()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test only, free to stop and restart."""
    server = RedisServer(_binary()).start()
    yield server
    server.cleanup()


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_prefix() -> str:
    """A key/channel namespace no other test uses."""
    return unique_prefix()


@pytest.fixture
def redis_streams(node_factory: Callable[..., RedisStreamSessionManager]) -> RedisStreamSessionManager:
    """A stream manager on the shared server with its own prefix and small liveness bounds."""
    return node_factory()


@contextlib.contextmanager
def closing_factory(kind: Callable[..., M], url: str, **defaults: Any) -> Iterator[Callable[..., M]]:
    """``make(url=None, **kwargs)``: managers of *kind* (as many "processes") with *defaults*; all closed at the end."""
    made: list[M] = []

    def make(other_url: str | None = None, **kwargs: Any) -> M:
        made.append(kind(other_url or url, **(defaults | kwargs)))
        return made[-1]

    try:
        yield make
    finally:
        for manager in made:
            manager.close()  # type: ignore[attr-defined]


@pytest.fixture
def node_factory(redis_server: RedisServer, redis_prefix: str) -> Iterator[Callable[..., RedisStreamSessionManager]]:
    """Make stream managers ("nodes": each has its own node id) sharing one prefix; all closed afterwards."""
    with closing_factory(
        RedisStreamSessionManager,
        redis_server.url,
        prefix=redis_prefix,
        liveness_ttl=TEST_LIVENESS_TTL,
        heartbeat_interval=TEST_HEARTBEAT,
    ) as make:
        yield make


@pytest.fixture
def redis_info(redis_server: RedisServer, redis_prefix: str) -> Iterator[RedisInfoSessionManager]:
    """An info manager on the shared server with its own prefix."""
    manager = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix)
    yield manager
    manager.close()


@pytest.fixture
def redis_subscriptions(redis_server: RedisServer, redis_prefix: str) -> Iterator[RedisSubscriptionManager]:
    """A subscription manager on the shared server with its own prefix."""
    manager = RedisSubscriptionManager(redis_server.url, prefix=redis_prefix)
    yield manager
    manager.close()


#: Bounds of test event stores (as the in-memory ones in tests/backends.py).
TEST_MAX_EVENTS = 50
TEST_MAX_STREAMS = 3


def make_event_store(url: str, prefix: str, **kwargs) -> RedisEventStore:
    """An event store with the test bounds (keyword arguments override them)."""
    kwargs.setdefault("max_events", TEST_MAX_EVENTS)
    kwargs.setdefault("max_streams", TEST_MAX_STREAMS)
    return RedisEventStore(url, prefix=prefix, **kwargs)


@pytest.fixture
def redis_event_store(redis_server: RedisServer, redis_prefix: str) -> Iterator[RedisEventStore]:
    """An event store on the shared server (max_events=50, max_streams=3) with its own prefix."""
    store = make_event_store(redis_server.url, redis_prefix)
    yield store
    store.close()


@pytest.fixture
def redis_resumable_streams(
    node_factory: Callable[..., RedisStreamSessionManager], redis_server: RedisServer, redis_prefix: str
) -> RedisStreamSessionManager:
    """A stream manager with a Redis event store (max_events=50, max_streams=3), small liveness bounds."""
    return node_factory(event_store=make_event_store(redis_server.url, redis_prefix))


