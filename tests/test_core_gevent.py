"""gevent: stress and fan-out in a separate process patched by ``monkey.patch_all()`` first.

The worker is tests/gevent_stress_worker.py; it prints a JSON summary that
these tests judge with the same invariants as the thread stress.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .core_stress import assert_clean

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gevent_stress_worker.py")


def run_worker(*what: str) -> dict:
    try:
        proc = subprocess.run(
            [sys.executable, WORKER, *what],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            cwd=os.path.dirname(os.path.dirname(WORKER)),
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"gevent worker timed out; stderr tail: {(exc.stderr or b'')[-2000:]!r}")
    assert proc.returncode == 0, f"worker exit {proc.returncode}\nstderr:\n{proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary; stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
    summary = json.loads(lines[-1])
    patched = summary["patched"]
    # The core built its queue and lock at run time, so patch_all() reached them:
    # the stream's reader waits on gevent's doorbell, not on the C queue's lock.
    assert patched["threading"] and patched["queue"], patched
    assert patched["queue_type"] == "session_manager._queues._DoorbellQueue", patched
    assert patched["lock_type"].startswith("gevent."), patched
    return summary


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gevent_stress_keeps_every_invariant():
    summary = run_worker("stress")["stress"]
    assert summary["runtime"] == "gevent"
    assert_clean(summary)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gevent_fanout_every_consumer_gets_every_message_once_in_order():
    fanout = run_worker("fanout")["fanout"]
    assert fanout["consumers"] == 2000 and fanout["messages"] == 100
    assert fanout["errors"] == [], fanout
    assert fanout["complete_consumers"] == 2000, fanout["wrong"]
    assert fanout["stuck_consumers"] == 0, fanout
    # Consumers that walked away (GeneratorExit) unregistered their streams.
    assert fanout["abandoned_still_registered"] == 0, fanout
    assert fanout["callbacks_not_once"] == 0, fanout
    assert fanout["all_closed"] and fanout["left_streams"] == 0, fanout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gevent_resumes_under_concurrent_senders_lose_and_repeat_nothing():
    summary = run_worker("resume")["resume"]
    assert summary["errors"] == [], summary
    assert summary["wrong"] == [], summary
    assert summary["stuck"] == 0, summary
    assert summary["taken_over"] >= summary["consumers"], summary  # resumes replaced open streams
    assert summary["left_streams"] == 0 and summary["left_logs"] == 0, summary


#: A drained stream whose last frame arrives in the loop turn its reader's keep-alive timer expires:
#: the reader must still deliver it (a POST stream's response), then end. 20 tries, bounded.
_DRAIN_RACE = """
from gevent import monkey; monkey.patch_all()
import gevent, time
from session_manager import StreamController
lost = 0
for _ in range(20):
    controller = StreamController(keepalive=0.05)
    out = []
    def reader():
        out.extend(controller)
    def producer():
        controller.enqueue('{"jsonrpc":"2.0","id":1,"result":{}}')
        controller.close(drain=True)
    greenlet = gevent.spawn(reader)
    gevent.sleep(0)  # the reader waits in get(timeout=0.05)
    gevent.spawn_later(0.05, producer)
    time.sleep(0.08)  # a busy loop: the timer and the producer are due in the same turn
    greenlet.join(5)
    lost += not any(b"result" in chunk for chunk in out)
print(lost)
"""


def test_a_drained_stream_delivers_a_frame_that_races_the_keepalive_timer():
    proc = subprocess.run(
        [sys.executable, "-c", _DRAIN_RACE], capture_output=True, text=True, timeout=60, check=False,
        cwd=os.path.dirname(os.path.dirname(WORKER)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0", f"responses lost in {proc.stdout.strip()} of 20 drained streams"


#: A producer in another native thread (a thread pool's, say) wakes a reader that waits in its
#: greenlet with nothing else due for an hour: without the wake-up the loop sleeps until then,
#: and the subprocess's bound fails the test.
_NATIVE_PRODUCER = """
from gevent import monkey; monkey.patch_all()
import gevent
from session_manager import StreamController
start_new_thread = monkey.get_original("_thread", "start_new_thread")
controller = StreamController(keepalive=3600)
got = []
def reader():
    for chunk in controller:
        got.append(chunk)
        if b"result" in chunk:
            return
greenlet = gevent.spawn(reader)
gevent.sleep(0.1)  # the reader waits in get(timeout=3600)
start_new_thread(controller.enqueue, ('{"jsonrpc":"2.0","id":1,"result":{}}',))
greenlet.join()
print(sum(b"result" in chunk for chunk in got))
"""


def test_a_producer_in_another_native_thread_wakes_the_reader() -> None:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _NATIVE_PRODUCER], capture_output=True, text=True, timeout=30, check=False,
            cwd=os.path.dirname(os.path.dirname(WORKER)),
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the reader was not woken by a put from another native thread")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "1"
