"""A client of resumable streams for the manager-level suites (memory and Redis)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from session_manager import StreamController

from .sse_parser import SSEParser


def msg(n: object) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}})


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll *predicate* until true or *timeout*; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


class Client:
    """Reads a stream on a thread as an SSE client (like the MCP client) would.

    It records ``(event id, data)`` of message events; an event with empty
    data (the priming event) only moves the last event id. :meth:`drop`
    models a connection that died unnoticed by the server: the client
    receives nothing more, and the stream stays open until the server ends
    it. With ``stall=True`` the reader also stops reading (a client whose
    socket buffers are full: the stream's queue fills up); otherwise it
    keeps draining what the server still writes, unread.
    """

    def __init__(self, controller: StreamController) -> None:
        self.controller = controller
        self.events: list[tuple[str, str]] = []
        self.last_event_id = ""
        self.dropped = threading.Event()
        self.stalled = threading.Event()
        self.ended = threading.Event()
        self._lock = threading.Lock()
        # Held here, so leaving the loop does not close the stream.
        self._frames = iter(controller)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        parser = SSEParser()
        try:
            for chunk in self._frames:
                if self.stalled.is_set():
                    return
                if self.dropped.is_set():
                    continue  # never reaches the client
                events = parser.feed(chunk)
                with self._lock:
                    self.events.extend((e.id, e.data) for e in events if e.data)
                    self.last_event_id = parser.last_event_id
        finally:
            self.ended.set()

    def drop(self, *, stall: bool = False) -> str:
        """Stop receiving; return the last event id received."""
        with self._lock:
            if stall:
                self.stalled.set()
            self.dropped.set()
            return self.last_event_id

    def snapshot(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.events)

    def ns(self) -> list[object]:
        return [json.loads(data)["params"]["n"] for _, data in self.snapshot()]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[tuple[str, str]]:
        """The events received, once there are at least *count*."""
        if not wait_until(lambda: len(self.snapshot()) >= count, timeout=timeout):
            pytest.fail(f"expected {count} events, got {len(self.snapshot())}")
        return self.snapshot()

    def wait_primed(self, timeout: float = 10.0) -> str:
        if not wait_until(lambda: bool(self.last_event_id), timeout=timeout):
            pytest.fail("the stream sent no priming event id")
        return self.last_event_id


@contextlib.contextmanager
def stream_readers(reader: Callable[[StreamController], Any]) -> Iterator[Callable[..., Any]]:
    """``open(manager, sid, last_event_id=None, **controller_kwargs)``: create a stream, read it with *reader*.

    *reader* wraps the controller and reads it on a thread (``.controller``,
    ``.thread``); every stream is closed and its reader joined on exit.
    """
    made: list[Any] = []

    def open_on(manager: Any, sid: str, last_event_id: str | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("keepalive", 0.2)
        controller = StreamController(**kwargs)
        manager.create(sid, controller, last_event_id=last_event_id)
        made.append(reader(controller))
        return made[-1]

    try:
        yield open_on
    finally:
        for opened in made:
            opened.controller.close()
            opened.thread.join(5)
