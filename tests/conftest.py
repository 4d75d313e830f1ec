"""Fixtures shared by the whole suite."""

from __future__ import annotations

import itertools
import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from session_manager import EventStore, InfoSessionManager, StreamController, StreamSessionManager
from session_manager.subscriptions import SubscriptionManager

from .backends import (
    EVENT_STORE_BACKENDS,
    INFO_BACKENDS,
    RESUMABLE_STREAM_BACKENDS,
    STREAM_BACKENDS,
    SUBSCRIPTION_BACKENDS,
)
from .sse_parser import iter_events

pytest_plugins = ["tests.conftest_redis"]


def _made(table: dict[str, Callable[[pytest.FixtureRequest], Any]], request: pytest.FixtureRequest) -> Iterator[Any]:
    """Build the backend this parametrized fixture runs for, and close it afterwards."""
    made = table[request.param](request)
    yield made
    made.close()


@pytest.fixture(params=sorted(STREAM_BACKENDS))
def streams(request: pytest.FixtureRequest) -> Iterator[StreamSessionManager]:
    """A fresh stream manager, once per backend."""
    yield from _made(STREAM_BACKENDS, request)


@pytest.fixture(params=sorted(INFO_BACKENDS))
def info(request: pytest.FixtureRequest) -> Iterator[InfoSessionManager]:
    """A fresh info manager, once per backend."""
    yield from _made(INFO_BACKENDS, request)


@pytest.fixture(params=sorted(SUBSCRIPTION_BACKENDS))
def subscriptions(request: pytest.FixtureRequest) -> Iterator[SubscriptionManager]:
    """A fresh subscription manager (listen streams), once per backend."""
    yield from _made(SUBSCRIPTION_BACKENDS, request)


@pytest.fixture(params=sorted(EVENT_STORE_BACKENDS))
def event_store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    """A fresh event store (max_events=50, max_streams=3), once per backend."""
    yield from _made(EVENT_STORE_BACKENDS, request)


@pytest.fixture(params=sorted(RESUMABLE_STREAM_BACKENDS))
def resumable(request: pytest.FixtureRequest) -> Iterator[StreamSessionManager]:
    """A fresh stream manager with an event store (max_events=50), once per backend."""
    yield from _made(RESUMABLE_STREAM_BACKENDS, request)


_ids = itertools.count()


@pytest.fixture
def new_id() -> Callable[[], str]:
    """Make session ids unique within the run (backends may share a server)."""
    import secrets

    run = secrets.token_hex(4)
    return lambda: f"s-{run}-{next(_ids)}"


class Reader:
    """Drains a controller on a background thread and collects message data."""

    def __init__(self, controller: StreamController) -> None:
        self.controller = controller
        self.messages: queue.Queue[str] = queue.Queue()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in iter_events(self.controller):
                self.messages.put(event.data)
        finally:
            self.done.set()

    def take(self, count: int, timeout: float = 10.0) -> list[str]:
        """Return the next *count* messages; fail if they do not come in time."""
        got = []
        for _ in range(count):
            try:
                got.append(self.messages.get(timeout=timeout))
            except queue.Empty:
                pytest.fail(f"expected {count} messages, got {len(got)}: {got!r}")
        return got

    def take_json(self, count: int, timeout: float = 10.0) -> list[object]:
        return [json.loads(m) for m in self.take(count, timeout)]

    def pending(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out


@pytest.fixture
def open_stream(streams: StreamSessionManager, new_id) -> Iterator[Callable[..., tuple]]:
    """Register a controller for a new session and start reading it."""
    readers: list[Reader] = []

    def make(session_id: str = "", **kwargs) -> tuple[str, StreamController, Reader]:
        sid = session_id or new_id()
        kwargs.setdefault("keepalive", 0.2)
        controller = StreamController(**kwargs)
        streams.create(sid, controller)
        reader = Reader(controller)
        readers.append(reader)
        return sid, controller, reader

    yield make
    for reader in readers:
        reader.controller.close()
        reader.thread.join(5)
