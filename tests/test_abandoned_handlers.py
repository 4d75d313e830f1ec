"""A flood of slow tool calls whose clients hang up, on gevent.pywsgi and werkzeug's threaded server.

Issue 15 found 1,000 abandoned slow calls holding 1,001 OS threads on
werkzeug. Here the server runs with ``max_handlers`` = :data:`MAX_HANDLERS`
and a handler that counts how many of its calls run at once. Waves of
:data:`FLOOD` stateless (2026-07-28) tool calls arrive together over SSE:
exactly ``max_handlers`` are taken, every other one gets 503 with
``Retry-After`` and a JSON-RPC error naming its id, and the handler never
runs more than the bound at once. Then every client hangs up: each handler,
polling ``ctx.cancelled``, stops (the test polls, bounded in time), the
slots come back for the next wave, and afterwards the server's threads
and memory are back near where they started.

Run as ``python -m tests.test_abandoned_handlers --server gevent|werkzeug --port N``.
"""

if __name__ == "__main__":
    import sys

    if "gevent" in sys.argv:  # patch before anything else is imported, and only for the gevent server
        from gevent import monkey

        monkey.patch_all()

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from session_manager.wsgi import INTERNAL_ERROR, METHOD_NOT_FOUND, JsonRpcError, McpApp, RequestContext

from .flask_support import PYTHON, RawStream, wait_until
from .stateless_support import app_options, modern_headers, tool_call
from .test_hostile_bodies import POST_HEADERS, LoggedServer, serve_forever, server_arguments, start_server, with_state

MAX_HANDLERS = 20
#: Tool calls per wave, all sent at once.
FLOOD = 200
WAVES = 2
#: Seconds a slow call works unless its client leaves first: far longer than the test waits for it.
SLOW = 60.0
#: Seconds between keepalive pings: how soon a server writing to a gone client learns it left.
KEEPALIVE = 0.2
#: Client threads sending one wave.
SENDERS = 50
#: Extra server threads (OS, or greenlets under gevent) and memory tolerated once the flood is over.
THREAD_SLACK = 4
RSS_SLACK_KB = 32 * 1024


class SlowTool:
    """A tool call that reports progress, then works until its client leaves; it counts the calls running at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = self.peak = self.started = self.cancelled = self.finished = 0

    def __call__(self, message: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        if message.get("method") != "tools/call":
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {message.get('method')}")
        with self._lock:
            self.running += 1
            self.started += 1
            self.peak = max(self.peak, self.running)
        try:
            ctx.progress(1, 2, "working")  # the first message: the answer's head leaves at once
            deadline = time.monotonic() + SLOW
            while not ctx.wait_cancelled(0.05) and time.monotonic() < deadline:
                pass
            with self._lock:
                self.cancelled += ctx.cancelled
            return {"content": [{"type": "text", "text": "cancelled" if ctx.cancelled else "done"}]}
        finally:
            with self._lock:
                self.running -= 1
                self.finished += 1

    def state(self) -> dict[str, int]:
        """The counts, with the process's OS threads, Python threads (greenlets under gevent) and resident memory."""
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        with self._lock:
            counts = {
                "running": self.running,
                "peak": self.peak,
                "started": self.started,
                "cancelled": self.cancelled,
                "finished": self.finished,
            }
        return {
            **counts,
            "os_threads": int(fields["Threads"]),
            "py_threads": threading.active_count(),
            "rss_kb": int(fields["VmRSS"].split()[0]),
        }


def main() -> None:
    """``python -m tests.test_abandoned_handlers --server gevent|werkzeug --port N``."""
    args = server_arguments(main.__doc__ or "").parse_args()
    tool = SlowTool()
    app = McpApp(tool, **app_options(max_handlers=MAX_HANDLERS, keepalive=KEEPALIVE))
    serve_forever(args.server, args.port, with_state(app, tool.state))  # type: ignore[arg-type]


# -- the test ------------------------------------------------------------------------------------


@pytest.fixture(params=["gevent", "werkzeug"])
def server(request: pytest.FixtureRequest) -> Iterator[LoggedServer]:
    started = start_server(
        [PYTHON, "-m", "tests.test_abandoned_handlers", "--server", request.param, "--port", "{port}"]
    )
    yield started
    started.close()


def call(port: int, id: int) -> RawStream:
    """One slow tool call on a socket of its own; the answer's head read, its body left unread."""
    message = tool_call("slow", {"n": id}, id=id, progress_token=id)
    return RawStream(port, "POST", "/mcp", {**POST_HEADERS, **modern_headers(message)}, json.dumps(message).encode())


def flood(port: int) -> tuple[list[RawStream], list[tuple[int, dict[str, str], dict[str, Any]]]]:
    """:data:`FLOOD` calls at once: the streams that were taken (left open) and the refusals (status, headers, body)."""
    with ThreadPoolExecutor(SENDERS) as senders:
        answers = list(senders.map(lambda id: call(port, id), range(FLOOD)))
    taken = [answer for answer in answers if answer.status == 200]
    refused = []
    for answer in answers:
        if answer.status != 200:
            refused.append((answer.status, answer.headers, json.loads(answer.read_all())))
            answer.close()
    return taken, refused


def test_abandoned_slow_calls_stay_bounded_stop_and_leave_nothing(server: LoggedServer) -> None:
    baseline = server.state()
    for wave in range(WAVES):
        taken, refused = flood(server.port)
        assert len(taken) == MAX_HANDLERS, (len(taken), [status for status, _, _ in refused][:5], server.stderr())
        assert len(refused) == FLOOD - MAX_HANDLERS
        for status, headers, body in refused:
            assert status == 503 and headers["retry-after"] == "1", (status, headers)
            assert headers["content-type"] == "application/json", headers
            assert body["jsonrpc"] == "2.0" and body["error"]["code"] == INTERNAL_ERROR, body
            assert type(body["id"]) is int and 0 <= body["id"] < FLOOD, body  # the refused request's own id
        during = server.state()
        assert during["running"] == MAX_HANDLERS and during["peak"] == MAX_HANDLERS, during
        for stream in taken:  # every client hangs up at once
            stream.close()
        wait_until(
            lambda wave=wave: server.state()["cancelled"] == MAX_HANDLERS * (wave + 1),
            timeout=20,
            what=f"the {MAX_HANDLERS} abandoned handlers of wave {wave} to see ctx.cancelled",
        )
    after = server.state()
    assert after["peak"] == MAX_HANDLERS, after  # never more at once, in any wave
    assert after["started"] == after["finished"] == after["cancelled"] == MAX_HANDLERS * WAVES, after
    assert after["running"] == 0, after

    def settled() -> bool:
        state = server.state()
        return all(state[name] <= baseline[name] + THREAD_SLACK for name in ("os_threads", "py_threads"))

    wait_until(settled, timeout=20, what=f"the server's threads to come back near {baseline}")
    final = server.state()
    assert final["rss_kb"] <= baseline["rss_kb"] + RSS_SLACK_KB, (baseline, final)
    assert "Traceback" not in "\n".join(server.lines()), server.stderr()


if __name__ == "__main__":
    main()
