"""Issue 16, item 3 and "Bad input": 10,000 and more open GET streams in one gevent process.

The server is the example app in its own monkey-patched process
(tests/scale_support.py); the clients are benchmarks/http_fanout.py's
asyncio load generator in this process, so both sides are real sockets.
One case opens N sessions with a GET stream each, broadcasts to all of
them, then closes every connection at once; another opens streams that are
never read, floods them until the server cuts them as slow consumers, and
vanishes. Then the server must notice (bounded wait) and be back where it
started: no stream, session, stored log, greenlet, thread or file
descriptor left, Python objects and C allocations back to their baseline,
and resident memory kept only for reuse (see RSS_KEPT and
test_streams_never_read_are_cut_and_their_memory_is_reused).

N is sized to the machine: each process holds one descriptor per stream,
so N = min(target, hard RLIMIT_NOFILE - FD_RESERVE) of either process (the
soft limits are raised to the hard ones). Nothing is skipped: a target the
limit does not allow runs at the largest N it does, and the N that ran is
logged. ``pytest -o log_cli=true -o log_cli_level=INFO`` shows the figures.
Correctness is checked, never wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from benchmarks.http_fanout import Run, Stream, http_request, open_sessions, post_once
from session_manager.events import DEFAULT_MAX_EVENTS

from .flask_support import PYTHON, ServerProcess, free_port
from .scale_support import BROADCAST_PATH, STATE_PATH

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.slow

State = dict[str, int]

#: Descriptors each process keeps for everything but the streams (listening socket, pools, logs, libraries).
FD_RESERVE = 200
#: Broadcasts in the delivery check. Streams are FIFO, so the last one is a fence: a duplicate of an
#: earlier one would arrive before it, and a stream that got exactly seq 0..K-1 got each exactly once.
BROADCASTS = 5
#: Bytes of each broadcast on the wire.
SIZE = 200
#: Sessions of the warm-up, whose clean-up sets the baseline.
WARMUP = 50
#: Seconds between keep-alive pings: a ping is what tells the server that a client it hears nothing from is
#: gone (the second one after a FIN, the first after a RST). Every open stream costs the server a wake-up
#: per interval, so a shorter one slows the setup of 20,000 streams down on two cores.
KEEPALIVE = 5.0
#: Seconds an unused session without a stream lives: clients that vanish never DELETE theirs.
SESSION_TTL = 3.0
#: Seconds the server may take to be clean once the clients left, on top of two pings and the session ttl.
SETTLE_TIMEOUT = 30.0
#: Seconds any single step (a broadcast's delivery, a state request) may take.
STEP_TIMEOUT = 60.0
#: What may stay above the baseline once everything is gone: descriptors and greenlets in flight (the state
#: request's own connection, one the server has not closed yet); no OS thread at all.
FD_MARGIN = 10
GREENLET_MARGIN = 10
#: Python objects that may outlive the streams: caches filled by a code path's first use, whatever N
#: (measured: 400 to 1,100). One object left per stream would exceed it at 10,000 streams.
BLOCKS_KEPT = 5_000
#: C allocations that may stay allocated: the tables of the dicts and sets that held every stream (the
#: managers', the event store's, the server's) keep their size once grown, about 400 bytes per stream
#: of the peak in all (measured at 5,000 and 19,800 streams; the same whatever the server). Allowed:
#: that much per stream with a margin, or a share of the growth where a stream costs more (gevent.pywsgi:
#: measured 4.5%). Round after round it stays where it is (test_streams_never_read_are_cut_...).
MALLOC_KEPT = 0.10
MALLOC_KEPT_PER_STREAM_KB = 0.625
#: Share of the RSS growth that may stay resident after a fan-out. What the allocators keep for reuse is not
#: given back to the OS: CPython's small-object allocator returns a 1 MB arena only once every block in it is
#: free, and the few objects that outlive the streams pin nearly all of them (measured with 3,000 streams: not
#: one of the 33 arenas they took was returned, 31 MB of free pools in them); glibc keeps freed chunks below
#: the top of its heap. With every object freed (the checks above), 57% (19,800 streams) to 79% (3,000) of
#: the growth was measured to stay resident. This bound still fails a leak the counts cannot see (in a C
#: extension, say); that what is kept gets reused is checked by
#: test_streams_never_read_are_cut_and_their_memory_is_reused.
RSS_KEPT = 0.90


@pytest.fixture(autouse=True)
def fd_limit() -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE raised to its hard limit (one descriptor per client stream), then restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def scale_server(*options: str) -> Iterator[ServerProcess]:
    """A fresh server process (tests/scale_support.py) for one case; it must not have logged a traceback."""
    port = free_port()
    args = ["--port", str(port), "--keepalive", str(KEEPALIVE), "--session-ttl", str(SESSION_TTL), *options]
    server = ServerProcess([PYTHON, "-m", "tests.scale_support", *args], port)
    try:
        yield server
    finally:
        server.close()
    assert "Traceback" not in server.stderr(), server.stderr()


def sized(target: int, server: State | None = None) -> int:
    """The N this machine allows for *target*: each process keeps FD_RESERVE descriptors for the rest."""
    limits = [resource.getrlimit(resource.RLIMIT_NOFILE)[1]] + ([server["fd_limit"]] if server else [])
    return min(target, *(limit - FD_RESERVE for limit in limits))


def case_timeout(target: int) -> float:
    """Seconds a case of *target* streams may take: five times what this 2-core machine takes per session.

    Setting a session up costs the server about 2 ms of CPU (three requests), and N is sized here as in
    :func:`sized` (the server inherits this process's limits).
    """
    return 60.0 + sized(target) * 0.015


def scale_case(target: int) -> Any:
    """A parameter of *target* streams, with a pytest timeout to match (the default is 300 s)."""
    return pytest.param(target, marks=pytest.mark.timeout(case_timeout(target) + 60), id=str(target))


async def state(port: int) -> State:
    """The server's figures (tests/scale_support.py ``state``), on a connection of their own."""

    def get() -> State:
        response = requests.get(f"http://127.0.0.1:{port}{STATE_PATH}", timeout=STEP_TIMEOUT)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    return await asyncio.to_thread(get)


async def broadcast(port: int, k: int, size: int) -> None:
    """K broadcasts of ~*size* bytes; answered once they are queued on every stream."""
    request = http_request("POST", f"{BROADCAST_PATH}?k={k}&size={size}", port)
    assert await post_once(port, request, STEP_TIMEOUT) == 200


def clean(now: State, baseline: State | None = None) -> bool:
    """No stream, session or log left, and (against a *baseline*) descriptors, greenlets and threads back."""
    if now["streams"] or now["sessions"] or now["logged"]:
        return False
    return baseline is None or (
        now["fds"] <= baseline["fds"] + FD_MARGIN
        and now["greenlets"] <= baseline["greenlets"] + GREENLET_MARGIN
        and now["threads"] <= baseline["threads"]
    )


async def settled(port: int, baseline: State | None = None) -> State:
    """The server's state once it is clean and its descriptor and greenlet counts stopped moving.

    Polled every half second, for at most two pings, the session ttl and SETTLE_TIMEOUT; the last state is
    returned either way (the caller's assertions say what is left).
    """
    deadline = time.monotonic() + 2 * KEEPALIVE + SESSION_TTL + SETTLE_TIMEOUT
    before = await state(port)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = await state(port)
        if clean(now, baseline) and (now["fds"], now["greenlets"]) == (before["fds"], before["greenlets"]):
            return now
        before = now
    return before


def close_all(sessions: list[tuple[str, Stream]], *, abort: bool = False) -> None:
    """Every client connection at once: FIN (close), or RST (abort) as from a client that vanished."""
    for _, stream in sessions:
        if stream.transport is not None:
            if abort:
                stream.transport.abort()
            else:
                stream.transport.close()


async def delete_all(port: int, sessions: list[tuple[str, Stream]]) -> None:
    """DELETE every session, as a client that leaves politely does."""
    for sid, _ in sessions:
        assert await post_once(port, http_request("DELETE", "/mcp", port, sid)) in (200, 204)


async def deliver(port: int, n: int, k: int = BROADCASTS) -> list[tuple[str, Stream]]:
    """Open *n* sessions with a GET stream each, broadcast *k* messages; each stream must get seq 0..k-1."""
    run = Run(k)
    run.expected = n
    sessions = await open_sessions(port, n, run, "scale")
    try:
        await broadcast(port, k, SIZE)
        await asyncio.wait_for(asyncio.shield(run.all_done), STEP_TIMEOUT)
        wrong = sum(not stream.check([]) for _, stream in sessions)
        assert wrong == 0, f"{wrong} of {n} streams did not get each of the {k} broadcasts exactly once"
    except BaseException:
        close_all(sessions)
        raise
    return sessions


class Unread(Stream):
    """A GET stream whose client reads the response head, then nothing: the server's writes block."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head.done() and self.transport is not None:
            self.transport.pause_reading()


#: Messages an unread stream may hold (the default is 1024), and the server's send buffer per connection:
#: small, so that a stream is cut after hundreds of broadcasts rather than thousands.
SLOW_MAXSIZE = 64
SLOW_SNDBUF = 65536
#: Bytes of each broadcast to unread streams, and how many go out per request: fewer than SLOW_MAXSIZE, so
#: a stream is cut only once its writes block (socket buffers full) and its queue fills behind them.
FLOOD_SIZE = 1000
FLOOD_BATCH = SLOW_MAXSIZE // 2
#: Broadcasts an unread stream may be sent before the test gives up on its cut (8 MB: far beyond what
#: SLOW_SNDBUF, the client's receive buffer and SLOW_MAXSIZE messages hold).
FLOOD_LIMIT = 8000
#: RSS a second round may add to the first round's peak and remains: a share of the first round's growth.
REUSE_MARGIN = 0.10


async def open_unread(port: int, n: int) -> tuple[list[tuple[str, Stream]], State]:
    """*n* unread streams, flooded until the server cut them all (or FLOOD_LIMIT); and the highest figures seen."""
    sessions = await open_sessions(port, n, Run(1), "unread", Unread)
    try:
        peak, sent = await state(port), 0
        assert (peak["streams"], peak["sessions"]) == (n, n), peak
        while sent < FLOOD_LIMIT and peak["streams"]:
            await broadcast(port, FLOOD_BATCH, FLOOD_SIZE)
            sent += FLOOD_BATCH
            now = await state(port)
            peak = {key: max(value, now[key]) for key, value in peak.items()}
            peak["streams"] = now["streams"]
    except BaseException:
        close_all(sessions, abort=True)
        raise
    logger.info("%d unread streams: %d broadcasts sent, %d streams left", n, sent, peak["streams"])
    return sessions, peak


async def warm_up(port: int, size: int, unread: int = 0) -> State:
    """A small round of what a case does, then the clean server's state: the baseline.

    First-request costs (imports, caches) are not per-stream memory. The warm-up sessions are deleted (a
    client that vanishes takes a ping and a ttl to be noticed). Then the event store's shared broadcast log
    (DEFAULT_MAX_EVENTS entries, kept whether or not a stream is open) is filled with messages of the size
    the case sends: the case's broadcasts replace entries instead of growing it, so what the log keeps is
    part of the baseline, not memory the streams left behind.
    """
    sessions = await deliver(port, WARMUP)
    await delete_all(port, sessions)
    close_all(sessions)
    if unread:
        sessions, _ = await open_unread(port, unread)
        await delete_all(port, sessions)
        close_all(sessions, abort=True)
    await broadcast(port, DEFAULT_MAX_EVENTS, size)
    baseline = await settled(port)
    assert clean(baseline), baseline
    return baseline


def check_returned(name: str, n: int, baseline: State, peak: State, after: State) -> None:
    """Nothing the *n* streams held is left: counts, Python objects and C allocations back to the baseline."""
    growth, kept = peak["rss_kb"] - baseline["rss_kb"], after["rss_kb"] - baseline["rss_kb"]
    logger.info(
        "%s: N=%d, %.1f KB RSS per stream, %d of %d KB still resident after (%.0f%%); C malloc %d -> %d -> %d KB, "
        "Python blocks %d -> %d -> %d, fds %d -> %d -> %d, greenlets %d -> %d -> %d",
        name,
        n,
        growth / n,
        kept,
        growth,
        100 * kept / max(growth, 1),
        *(figures[key] for key in ("malloc_kb", "blocks", "fds", "greenlets") for figures in (baseline, peak, after)),
    )
    assert clean(after, baseline), {"baseline": baseline, "after": after}
    assert after["blocks"] - baseline["blocks"] <= BLOCKS_KEPT, (baseline, after)
    allowed = max(MALLOC_KEPT * (peak["malloc_kb"] - baseline["malloc_kb"]), MALLOC_KEPT_PER_STREAM_KB * n)
    assert after["malloc_kb"] - baseline["malloc_kb"] <= allowed, (baseline, peak, after)


async def fan_out_and_close(port: int, target: int) -> None:
    n = sized(target, await state(port))
    baseline = await warm_up(port, SIZE)
    started = time.monotonic()
    sessions = await deliver(port, n)
    setup_s = time.monotonic() - started
    peak = await state(port)
    close_all(sessions)
    del sessions
    after = await settled(port, baseline)
    logger.info("target %d streams: ran N=%d, opened and delivered to in %.1f s", target, n, setup_s)
    assert (peak["streams"], peak["sessions"], peak["logged"]) == (n, n, n), peak
    check_returned(f"{n} streams closed at once", n, baseline, peak, after)
    assert after["rss_kb"] - baseline["rss_kb"] <= RSS_KEPT * (peak["rss_kb"] - baseline["rss_kb"]), (peak, after)


# One case, 50,000 sized to the machine: 19,800 here, so it covers 10,000 too (a second case of
# 10,000 would add half a minute to every test run and prove nothing this one does not). On
# session_manager.pywsgi, which the examples serve with: gevent.pywsgi holds 1,000 streams in
# test_flask_gevent_fanout.py and is flooded below.
@pytest.mark.parametrize("target", [scale_case(50_000)])
def test_a_broadcast_reaches_every_stream_once_and_closing_them_all_leaves_nothing(target: int) -> None:
    with scale_server("--parking") as server:
        asyncio.run(asyncio.wait_for(fan_out_and_close(server.port, target), case_timeout(target)))


async def flood_and_vanish(port: int, n: int, baseline: State) -> tuple[State, State]:
    """One round: *n* unread streams flooded until the server cut them all, then the clients vanish (RST)."""
    cut_before = (await state(port))["dropped"]
    sessions, peak = await open_unread(port, n)
    close_all(sessions, abort=True)
    del sessions
    after = await settled(port, baseline)
    cut = after["dropped"] - cut_before
    assert cut == n, f"{n - cut} of {n} unread streams were not cut after {FLOOD_LIMIT} broadcasts"
    check_returned(f"{n} unread streams cut and dropped", n, baseline, peak, after)
    return peak, after


async def flood_twice(port: int) -> None:
    n = sized(10_000, await state(port)) // 10
    baseline = await warm_up(port, FLOOD_SIZE, unread=WARMUP)
    first_peak, first_after = await flood_and_vanish(port, n, baseline)
    second_peak, second_after = await flood_and_vanish(port, n, baseline)
    # Nothing accumulates round after round: fewer Python objects than one per stream are added, and the
    # second round's streams reuse what the first left resident (how much of it the allocators give back
    # to the OS varies from run to run: 33% to 96% was measured to stay) instead of adding to it.
    assert second_after["blocks"] - first_after["blocks"] < n, (first_after, second_after)
    margin = REUSE_MARGIN * (first_peak["rss_kb"] - baseline["rss_kb"])
    assert second_peak["rss_kb"] <= first_peak["rss_kb"] + margin, (first_peak, second_peak)
    assert second_after["rss_kb"] <= first_peak["rss_kb"] + margin, (first_peak, second_after)


@pytest.mark.parametrize("server_options", [[], ["--parking"]], ids=["pywsgi", "parking"])
def test_streams_never_read_are_cut_and_their_memory_is_reused(server_options: list[str]) -> None:
    options = ("--maxsize", str(SLOW_MAXSIZE), "--sndbuf", str(SLOW_SNDBUF), *server_options)
    with scale_server(*options) as server:
        asyncio.run(asyncio.wait_for(flood_twice(server.port), case_timeout(10_000)))
