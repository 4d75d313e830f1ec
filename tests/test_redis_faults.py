"""Faults under load, end to end: a real redis-server, two gunicorn gevent workers, 200 streaming sessions.

Each scenario (tests/faults_support.py): ``gunicorn -k gevent -w 2`` serving
tests/gunicorn_app.py (the example on Redis managers with a RedisEventStore,
the default prefix), 200 sessions, each with a GET stream read by a client
that resumes with ``Last-Event-ID`` whenever its stream ends, and a sender
in the test process (a RedisStreamSessionManager with the same store and
prefix, ``socket_timeout`` 0.5 s) sending ROUNDS rounds of one message to
each session and one broadcast (48 messages per session, 4,824 sends), each
with an idempotency key, retried with the same key after
``BackendUnavailableError``. A fault hits a third of the way in.

Counted per session: sent (``send`` returned), delivered (every connection,
replays included, in order), doubled, stored (the session's log replayed
from its first priming event), resumes answered 200, and how the client
ended. Where the README promises exactly once (an event store; a resume
the log still covers; a retry with the same idempotency key) every session
gets every message once, in order, stored once. After Redis lost its data
the promise is that no loss is silent: no duplicate, no later message after
a gap, and a client that missed messages was told so by 404 or 410.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from .conftest_redis import TEST_LIVENESS_TTL, _binary
from .faults_support import (
    GONE,
    SENDER_SOCKET_TIMEOUT,
    Burst,
    Deployment,
    PersistentRedis,
    deployed,
    not_exactly_once,
    paused,
    report,
    silent_losses,
    tally,
)
from .redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SESSIONS = 200
#: Each round: one message to each session, then one broadcast.
ROUNDS = 24
#: How long Redis is SIGSTOPped: beyond the sender's socket timeout, and beyond the workers' liveness TTL too.
STALLS = {"beyond-send-timeout": 3 * SENDER_SOCKET_TIMEOUT, "beyond-liveness-ttl": 2 * TEST_LIVENESS_TTL}


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    """A redis-server of this test only whose restart keeps every key (AOF, appendfsync always)."""
    server = PersistentRedis(_binary()).start()
    yield server
    server.cleanup()


def assert_exactly_once(deployment: Deployment, burst: Burst) -> None:
    """Every session got every message sent to it exactly once, in order, and its log stored each once."""
    assert burst.unsent() == [], f"sends still failing after every retry: {burst.unsent()[:10]}"
    tallies = tally(deployment, burst, stored=True)
    failing = not_exactly_once(tallies)
    assert not failing, report(failing, tallies, burst)


@pytest.mark.parametrize("stall", STALLS.values(), ids=STALLS.keys())
def test_redis_stopped_mid_burst_longer_than_the_send_timeout_loses_and_doubles_nothing(
    private_redis: RedisServer, stall: float
) -> None:
    """Sends time out (Redis runs them when it wakes up): retried with their key, each arrives and is stored once.

    Beyond the liveness TTL the workers' stream keys expire meanwhile too.
    """
    with deployed(private_redis, SESSIONS) as deployment:
        burst = deployment.burst(ROUNDS)
        assert burst.midway.wait(30)
        with paused(private_redis):
            time.sleep(stall)
        burst.join()
        assert burst.retried() > 0, "no send met the stall"
        deployment.settle(burst)
        assert_exactly_once(deployment, burst)
        log = deployment.server_log()
    assert "Traceback" not in log, log[-4000:]


def test_worker_sigkilled_mid_burst_its_clients_resume_elsewhere_and_lose_and_double_nothing(
    private_redis: RedisServer,
) -> None:
    """Messages for its streams are stored meanwhile; each client resumes from its last id on a live worker."""
    with deployed(private_redis, SESSIONS) as deployment:
        victim = deployment.first_workers().most_common(1)[0][0]
        assert victim is not None
        burst = deployment.burst(ROUNDS)
        assert burst.midway.wait(30)
        os.kill(victim, signal.SIGKILL)
        assert not burst.done.is_set(), "the burst ended before the kill"
        burst.join()
        deployment.settle(burst)
        moved = [c for c in deployment.clients if c.answered()[0].pid == victim]
        resumed_elsewhere = [
            c for c in moved if any(a.status == 200 and a.last_event_id and a.pid != victim for a in c.answered()[1:])
        ]
        assert moved and len(resumed_elsewhere) == len(moved), (len(moved), len(resumed_elsewhere))
        assert_exactly_once(deployment, burst)
        log = deployment.server_log()
    assert "Traceback" not in log, log[-4000:]


def test_redis_restarted_with_persistence_under_load_loses_and_doubles_nothing(
    persistent_redis: RedisServer,
) -> None:
    """Nothing is lost by the restart (AOF, fsync always): sends fail while it is down, are retried, arrive once."""
    with deployed(persistent_redis, SESSIONS) as deployment:
        burst = deployment.burst(ROUNDS)
        assert burst.midway.wait(30)
        persistent_redis.restart()
        assert not burst.done.is_set(), "the burst ended before the restart"
        burst.join()
        deployment.settle(burst)
        assert_exactly_once(deployment, burst)
        log = deployment.server_log()
    assert "Traceback" not in log, log[-4000:]


def test_redis_restarted_without_its_data_under_load_never_loses_silently(private_redis: RedisServer) -> None:
    """The documented outcome when Redis loses its data: every stream is closed, its resume refused (404 or 410).

    Messages sent after the loss reach no one, and none is delivered twice or
    after a gap: each client got a prefix of what was sent to it, and one
    that got less than all learned it from the answer to its resume.
    """
    with deployed(private_redis, SESSIONS) as deployment:
        burst = deployment.burst(ROUNDS)
        assert burst.midway.wait(30)
        private_redis.restart()
        assert not burst.done.is_set(), "the burst ended before the restart"
        burst.join()
        assert burst.unsent() == [], f"sends still failing after every retry: {burst.unsent()[:10]}"
        deployment.settle(burst)
        tallies = tally(deployment, burst, stored=False)
        failing = silent_losses(tallies)
        assert not failing, report(failing, tallies, burst)
        not_told = [t for t in tallies if t.final not in GONE]
        assert not not_told, report(not_told, tallies, burst)
        assert sum(len(t.lost()) for t in tallies) > 0, "the restart lost nothing: the scenario did not happen"
        log = deployment.server_log()
    assert "Traceback" not in log, log[-4000:]
