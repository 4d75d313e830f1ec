"""Batched sends and batched delivery on Redis (issue 17), and how they fail.

- A ``send_many`` is one round trip: its script calls go in one write, and
  Redis publishes each run of broadcasts once, each run of targeted messages
  once per node.
- The listener hands a stream everything it read at once: under gevent a
  stream wakes once per batch (one chunk, one socket write).
- A send is never run twice: not retried after a timeout; a batch that
  fails says which messages were sent, which may have been, which were not.
- A burst of 100,000 messages to slow consumers stays bounded, and a Redis
  that stops answering (SIGSTOP) is reported within the socket timeout.

The behaviour every backend shares (order, checks) is in
test_stream_managers.py and test_resumable_streams.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from session_manager import BackendUnavailableError, StreamController
from session_manager.redis import RedisEventStore, RedisStreamSessionManager
from session_manager.redis import _codec as wire
from session_manager.redis._keys import Keys
from session_manager.redis._node import BATCH
from session_manager.redis._streams import _SendCalls

from .conftest import Reader
from .conftest_redis import TEST_HEARTBEAT, TEST_LIVENESS_TTL, make_event_store
from .redis_server import RedisServer
from .resume_support import Client, stream_readers
from .test_redis_backend import msg, ns, read_line, spawned, wait_until


@pytest.fixture
def readers() -> Iterator[Callable[..., Reader]]:
    with stream_readers(Reader) as open_on:
        yield open_on


def tell(process: subprocess.Popen, line: str) -> None:
    process.stdin.write(line + "\n")
    process.stdin.flush()


def command_calls(server: RedisServer) -> Callable[[], dict[str, int]]:
    """A function returning the calls of each command since it was made (``INFO commandstats``)."""
    client = server.client()
    client.config_resetstat()

    def calls() -> dict[str, int]:
        stats = client.info("commandstats")
        return {name.removeprefix("cmdstat_"): entry["calls"] for name, entry in stats.items() if name != "cmdstat_info"}

    return calls


@pytest.fixture
def manager(private_redis: RedisServer, redis_prefix: str) -> Iterator[Callable[..., RedisStreamSessionManager]]:
    """Managers on a private Redis (commandstats of this test only), closed afterwards."""
    made: list[RedisStreamSessionManager] = []

    def make(**kwargs: object) -> RedisStreamSessionManager:
        kwargs.setdefault("prefix", redis_prefix)
        kwargs.setdefault("liveness_ttl", 30)  # no heartbeat in the counts
        made.append(RedisStreamSessionManager(private_redis.url, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for streams in made:
        streams.close()


# -- one round trip, one PUBLISH per run ---------------------------------------------------


def test_a_batch_is_one_script_call_and_one_publish_per_run_and_node(manager, private_redis, readers, new_id):
    a, b, sender = manager(), manager(), manager()
    on_a, on_b = new_id(), new_id()
    ra, rb = readers(a, on_a), readers(b, on_b)
    sender.send_many([([new_id()], "{}")])  # loads the script
    calls = command_calls(private_redis)
    sender.send_many([(None, msg(i)) for i in range(50)])
    assert {k: v for k, v in calls().items() if k in ("evalsha", "publish")} == {"evalsha": 1, "publish": 1}

    calls = command_calls(private_redis)
    sender.send_many([
        (None, msg("b1")), (None, msg("b2")),                   # a run of broadcasts: 1 PUBLISH
        ([on_a, on_b], msg("t1")), ([on_a], msg("t2")),         # a run of targeted: 1 PUBLISH per node (2)
        (None, msg("b3")),                                      # 1
        ([on_b], msg("t3")),                                    # 1
    ])
    assert calls()["evalsha"] == 1 and calls()["publish"] == 5
    assert ns(ra.take(55)) == list(range(50)) + ["b1", "b2", "t1", "t2", "b3"]
    assert ns(rb.take(55)) == list(range(50)) + ["b1", "b2", "t1", "b3", "t3"]


def test_a_batch_bigger_than_one_call_is_still_one_write_and_in_order(manager, readers, new_id, monkeypatch):
    holder, sender = manager(), manager()
    sid = new_id()
    reader = readers(holder, sid, maxsize=10_000)
    sender.send_many([([new_id()], "{}")])  # loads the script
    writes: list[int] = []
    original = redis.connection.Connection.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        writes.append(1)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    crowd = [new_id() for _ in range(2 * BATCH)] + [sid]  # one message over three calls
    batch = [([sid] if i % 3 else None, msg(i)) for i in range(2500)] + [(crowd, msg("crowd"))]
    sender.send_many(batch)
    assert len(writes) == 1, "every call of the batch goes in one write: one round trip"
    assert ns(reader.take(2501)) == [*range(2500), "crowd"]


def test_send_calls_split_big_batches_and_know_which_messages_each_holds():
    plan = _SendCalls(["head"], Keys("k:"), logged=False)
    plan.add(None, "b0")
    plan.add([f"s{i}" for i in range(2500)], "t1")  # 999 + 1000 + 501 targets: calls 0, 1, 2
    plan.add([], "nobody")
    plan.add(None, "b3")
    calls = plan.finish()
    assert [len(keys) for keys, _ in calls] == [1000, 1000, 500]  # a broadcast takes no key
    assert plan.spans == [(0, 0), (0, 2), (2, 2), (2, 2)]
    assert plan.outcome(0, unsure=False) == (0, 0)
    assert plan.outcome(1, unsure=False) == (1, 1)  # t1 went out to some of its targets
    assert plan.outcome(1, unsure=True) == (1, 3)
    assert plan.outcome(3, unsure=True) == (4, 0)
    assert plan.whole([True, True, True]) == 4 and plan.whole([True, False, True]) == 3  # all but t1, split
    many = _SendCalls([], Keys("k:"), logged=False)
    for i in range(BATCH + 1):
        many.add(None, str(i))
    assert [len(args) for _, args in many.finish()] == [2 * BATCH, 2]


def test_send_calls_split_a_keyed_message_at_the_same_points_whatever_its_batch():
    targets = [f"s{i}" for i in range(2 * BATCH + 500)]

    def parts(*before: list[str] | None) -> dict[str, list[str]]:
        """The targets of each mark key of the keyed message, planned after *before*."""
        plan = _SendCalls([], Keys("p:"), logged=False)
        for sessions in before:
            plan.add(sessions, "other")
        plan.add(targets, "keyed", "K")
        found: dict[str, list[str]] = {}
        for keys, _ in plan.finish():
            mark = None
            for key in keys:
                if key.startswith("p:sent:"):
                    mark = key
                    found[mark] = []
                elif mark is not None:
                    found[mark].append(key.removeprefix("p:stream:"))
        return found

    expected = {
        "p:sent:K": targets[:BATCH],
        "p:sent:K 1": targets[BATCH : 2 * BATCH],
        "p:sent:K 2": targets[2 * BATCH :],
    }
    assert parts() == parts([f"b{i}" for i in range(700)]) == parts(None, targets[:999]) == expected
    plan = _SendCalls([], Keys("p:"), logged=False)
    plan.add([], "to nobody", "K")  # still marked: the key is used all the same
    assert [keys for keys, _ in plan.finish()] == [["p:sent:K"]]


# -- batched delivery ------------------------------------------------------------------------

GEVENT_HOLDER = """
from gevent import monkey
monkey.patch_all()

import json, re, sys
import gevent
from session_manager import StreamController
from session_manager.redis import RedisStreamSessionManager

url, prefix, count, per_phase = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
streams = RedisStreamSessionManager(url, prefix=prefix, liveness_ttl=30)
N = re.compile(rb'"n": ?"?([^"}]*)')
chunks = {i: [] for i in range(count)}

def consume(i):
    for chunk in streams_of[i]:
        found = N.findall(chunk)
        if found:
            chunks[i].append([n.decode() for n in found])

streams_of = {}
for i in range(count):
    controller = StreamController(maxsize=1000)
    streams.create(f"g{i}", controller)
    streams_of[i] = iter(controller)
    gevent.spawn(consume, i)

def wait_for(total):
    with gevent.Timeout(30):
        while sum(len(n) for c in chunks.values() for n in c) < total * count:
            gevent.sleep(0.01)

print("ready", flush=True)
gevent.get_hub().threadpool.apply(sys.stdin.readline)  # phase 1: the hub runs; one send_many arrives
wait_for(per_phase)
print("phase 1 done", flush=True)
sys.stdin.readline()  # phase 2: the whole process blocks (stdin is not patched) while single sends pile up
wait_for(2 * per_phase)
print(json.dumps([chunks[i] for i in range(count)]), flush=True)
streams.close()
"""


def test_under_gevent_a_stream_wakes_once_per_batch(redis_server, redis_prefix, node_factory):
    count, per_phase = 20, 50
    sender = node_factory(liveness_ttl=30)
    with spawned(
        GEVENT_HOLDER, redis_server.url, redis_prefix, str(count), str(per_phase), stdin=True, capture_stderr=False
    ) as holder:
        assert read_line(holder, 30).strip() == "ready"
        sender.send_many([(None, msg(f"a{i}")) for i in range(per_phase)])  # phase 1: one batch, one round trip
        tell(holder, "go")
        assert read_line(holder, 30).strip() == "phase 1 done"
        for i in range(per_phase):  # phase 2: K pub/sub messages, already there when the listener reads
            sender.send([f"g{j}" for j in range(count)] if i % 2 else None, msg(f"b{i}"))
        # "Already there": Redis writes to subscribers from its event loop, so on a busy machine the last
        # messages may still sit in its output buffer; wait until every subscriber's buffer is flushed.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            int(c["obl"]) or int(c["oll"]) for c in sender._client.client_list() if "P" in c["flags"]
        ):
            time.sleep(0.01)
        tell(holder, "go")
        got = json.loads(read_line(holder, 30))
    expected = [[f"a{i}" for i in range(per_phase)], [f"b{i}" for i in range(per_phase)]]
    # Every stream: each phase's messages, in order, in ONE chunk (one wake-up, one socket write).
    assert got == [expected] * count


# -- never twice; failures say what was sent --------------------------------------------------


def test_a_send_that_times_out_is_not_retried_so_it_arrives_once(private_redis, readers, new_id, redis_prefix):
    kwargs = {"prefix": redis_prefix, "liveness_ttl": 30}  # the stream key outlives the 3 s Redis is stopped
    holder = RedisStreamSessionManager(private_redis.url, **kwargs)
    sender = RedisStreamSessionManager(private_redis.url, socket_timeout=2, **kwargs)
    try:
        sid = new_id()
        reader = readers(holder, sid)
        sender.send([sid], msg("warm"))
        assert ns(reader.take(1)) == ["warm"]
        pid = private_redis.process.pid
        os.kill(pid, signal.SIGSTOP)  # Redis gets the command, and runs it only when it is back
        resume = threading.Timer(3, os.kill, (pid, signal.SIGCONT))
        resume.start()
        try:
            with pytest.raises(BackendUnavailableError, match="unavailable"):
                sender.send([sid], msg("once"))  # times out after 2 s; a retry would run it again at 3 s
        finally:
            resume.join()
            os.kill(pid, signal.SIGCONT)
        sender.send([sid], msg("marker"))
        got = ns(reader.take(2))
        assert got == ["once", "marker"], "a send whose outcome was unknown ran exactly once"
    finally:
        holder.close()
        sender.close()


def test_a_send_retried_with_its_idempotency_key_after_a_timeout_arrives_and_is_stored_once(
    private_redis, new_id, redis_prefix
):
    """The reply is lost (Redis stopped longer than the socket timeout), the caller retries with the same key."""
    url, kwargs = private_redis.url, {"prefix": redis_prefix, "liveness_ttl": 30}  # the stream outlives the stop
    holder = RedisStreamSessionManager(url, event_store=make_event_store(url, redis_prefix), **kwargs)
    sender = RedisStreamSessionManager(
        url, socket_timeout=1, event_store=make_event_store(url, redis_prefix, socket_timeout=1), **kwargs
    )
    admin = private_redis.client()
    try:
        with stream_readers(Client) as connect:
            sid, key = new_id(), f"notify-{new_id()}"
            client = connect(holder, sid)
            primer = client.wait_primed()
            sender.send([sid], msg("warm"))
            client.wait_for(1)
            pid = private_redis.process.pid
            os.kill(pid, signal.SIGSTOP)  # Redis gets the command, and runs it only when it is back
            resume = threading.Timer(2, os.kill, (pid, signal.SIGCONT))
            resume.start()
            try:
                with pytest.raises(BackendUnavailableError, match="unavailable"):
                    sender.send([sid], msg("once"), idempotency_key=key)  # times out after 1 s; runs at 2 s
            finally:
                resume.join()
                os.kill(pid, signal.SIGCONT)
            for _ in range(100):  # bounded: the caller retries until Redis answers
                try:
                    sender.send([sid], msg("once"), idempotency_key=key)  # the key is marked: nothing is sent
                    break
                except BackendUnavailableError:
                    time.sleep(0.1)
            else:
                pytest.fail("Redis never answered the retry")
            sender.send([sid], msg("marker"))
            client.wait_for(3)
            assert client.ns() == ["warm", "once", "marker"], "delivered exactly once"
            stored = [m for _, m in holder.event_store.replay(sid, primer).events]
            assert stored == [msg("warm"), msg("once"), msg("marker")], "stored exactly once"
            assert 0 < admin.pttl(f"{redis_prefix}sent:{key}") <= 300_000  # remembered for dedupe_ttl (default)
    finally:
        admin.close()
        holder.close()
        sender.close()


def test_a_keyed_message_to_many_is_sent_in_parts_marked_each_on_its_own(
    node_factory, readers, new_id, redis_server, redis_prefix
):
    """Parts of 1,000 targets of its own, whatever its batch holds: a retry finds the parts that ran, sends the rest."""
    holder, sender = node_factory(), node_factory()
    streams = {at: new_id() for at in (0, BATCH + 200, 2 * BATCH + 400)}
    got = {at: readers(holder, sid) for at, sid in streams.items()}
    targets = [streams.get(i) or new_id() for i in range(2 * BATCH + 500)]
    key = f"k-{new_id()}"
    sender.send_many([([new_id() for _ in range(700)], msg("before")), (targets, msg("big"), key)])
    admin = redis_server.client()
    try:
        marks = [f"{redis_prefix}sent:{key}", f"{redis_prefix}sent:{key} 1", f"{redis_prefix}sent:{key} 2"]
        assert admin.exists(*marks) == 3
        admin.delete(marks[1])  # as if the second part had never run
    finally:
        admin.close()
    sender.send(targets, msg("big"), idempotency_key=key)  # the retry, alone in its batch this time
    sender.send(list(streams.values()), msg("marker"))
    assert {at: ns(reader.take(3 if at == BATCH + 200 else 2)) for at, reader in got.items()} == {
        0: ["big", "marker"],
        BATCH + 200: ["big", "big", "marker"],
        2 * BATCH + 400: ["big", "marker"],
    }


def test_a_batch_that_fails_part_way_says_which_messages_were_sent(manager, readers, new_id, monkeypatch):
    holder, sender = manager(), manager()
    sid = new_id()
    reader = readers(holder, sid, maxsize=10_000)
    batch = [([sid], msg(i)) for i in range(2 * BATCH + 500)]  # three calls
    replies = []
    original = redis.Redis.parse_response

    def second_reply_lost(self, connection, command, **options):  # type: ignore[no-untyped-def]
        if command == "EVALSHA":
            replies.append(command)
            if len(replies) == 2:
                raise redis.exceptions.TimeoutError("Timeout reading from socket")
        return original(self, connection, command, **options)

    sender.send_many([([new_id()], "{}")])  # loads the script
    monkeypatch.setattr(redis.Redis, "parse_response", second_reply_lost)
    with pytest.raises(BackendUnavailableError) as failed:
        sender.send_many(batch)
    assert "of a batch of 2500 messages, the first 1000 were sent, the next 1500 may or may not have been" in str(failed.value)
    monkeypatch.undo()
    sender.send([sid], msg("marker"))
    received = []
    while not received or received[-1] != "marker":
        received += ns(reader.take(1))
    # The second call ran (its reply was lost); the third may have, as a whole. Nothing twice, no hole.
    assert received[:-1] in (list(range(2000)), list(range(2500)))


def test_a_flushed_script_cache_is_reloaded_and_nothing_runs_twice(manager, private_redis, readers, new_id):
    holder, sender = manager(), manager()
    sid = new_id()
    reader = readers(holder, sid)
    sender.send_many([([sid], msg("first"))])
    admin = private_redis.client()
    try:
        admin.script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
    finally:
        admin.close()
    sender.send_many([([sid], msg(i)) for i in range(3)] + [(None, msg("all"))])
    sender.send([sid], msg("marker"))
    assert ns(reader.take(6)) == ["first", 0, 1, 2, "all", "marker"]


def test_a_stored_batch_stores_each_message_once_with_its_id(node_factory, redis_server, redis_prefix, new_id):
    store = make_event_store(redis_server.url, redis_prefix)
    streams = node_factory(event_store=store)
    sid = new_id()
    controller = StreamController()
    streams.create(sid, controller)
    primed = next(iter(controller)).decode().split("\n")[0].removeprefix("id: ")
    controller.close()
    assert wait_until(lambda: not streams.has(sid))
    streams.send_many([([sid], msg(0)), (None, msg(1)), ([sid, sid + "-none"], msg(2)), (None, msg(3))])
    replay = RedisEventStore(redis_server.url, prefix=redis_prefix).replay(sid, primed)
    assert [json.loads(m)["params"]["n"] for _, m in replay.events] == [0, 1, 2, 3]
    assert len({event_id for event_id, _ in replay.events}) == 4


# -- bad input: a huge burst, a Redis that stops -----------------------------------------------

BURST_HOLDER = """
import json, re, resource, sys, threading
from session_manager import StreamController
from session_manager.redis import RedisStreamSessionManager

url, prefix, markers = sys.argv[1], sys.argv[2], int(sys.argv[3])
streams = RedisStreamSessionManager(url, prefix=prefix, liveness_ttl=2, heartbeat_interval=0.5)
slow = [StreamController(maxsize=100) for _ in range(3)]
for i, controller in enumerate(slow):
    streams.create(f"slow-{i}", controller)  # never read: stuck clients
fast = StreamController(maxsize=10_000)
streams.create("fast", fast)
got, done = [], threading.Event()

def read():
    for chunk in fast:
        got.extend(int(n) for n in re.findall(rb'"n": ?(\\d+)', chunk))
        if len(got) >= markers:
            done.set()

threading.Thread(target=read, daemon=True).start()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("ready", flush=True)
done.wait(120)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({
    "grown_kb": grown, "dropped": streams.slow_consumers_dropped,
    "slow": [c.overflowed for c in slow], "fast": got,
}), flush=True)
streams.close()
"""


@pytest.mark.slow
def test_a_burst_of_100000_messages_to_slow_consumers_stays_bounded(redis_server, redis_prefix, node_factory, readers, new_id):
    markers, per_marker = 100, 1000
    other = node_factory()  # another worker: unaffected
    elsewhere = new_id()
    other_reader = readers(other, elsewhere)
    sender = node_factory()
    pad = "x" * 600
    with spawned(BURST_HOLDER, redis_server.url, redis_prefix, str(markers), stdin=True, capture_stderr=False) as holder:
        assert read_line(holder, 30).strip() == "ready"
        for j in range(markers):  # 100,000 messages of ~700 bytes (70 MB if all were queued)
            batch = [([f"slow-{i % 3}"], msg(f"{pad}{i}")) for i in range(j * per_marker, (j + 1) * per_marker)]
            sender.send_many([*batch, (["fast", elsewhere], msg(j))])
        result = json.loads(read_line(holder, 120))
    assert result["slow"] == [True, True, True] and result["dropped"] == 3, "slow consumers are cut"
    assert result["fast"] == list(range(markers)), "a reading stream of the same worker gets everything, in order"
    assert result["grown_kb"] < 40_000, f"memory grew by {result['grown_kb']} KB: not bounded"
    assert ns(other_reader.take(markers)) == list(range(markers))
    assert not other_reader.controller.closed


def test_a_redis_that_stops_answering_mid_burst_fails_sends_within_the_timeout(private_redis, readers, new_id, redis_prefix):
    kwargs = {"prefix": redis_prefix, "liveness_ttl": TEST_LIVENESS_TTL, "heartbeat_interval": TEST_HEARTBEAT}
    holder = RedisStreamSessionManager(private_redis.url, **kwargs)
    sender = RedisStreamSessionManager(private_redis.url, socket_timeout=1, **kwargs)
    pid = private_redis.process.pid
    try:
        sid = new_id()
        reader = readers(holder, sid, maxsize=100_000)
        sent, failure, took = [0], [], []

        def burst() -> None:
            for j in range(1000):  # bounded: Redis stops long before the end
                started = time.monotonic()
                try:
                    sender.send_many([([sid], msg(j * 100 + i)) for i in range(100)])
                except BackendUnavailableError as exc:
                    took.append(time.monotonic() - started)
                    failure.append(exc)
                    return
                sent[0] = (j + 1) * 100

        thread = threading.Thread(target=burst)
        thread.start()
        assert wait_until(lambda: sent[0] >= 2000)
        os.kill(pid, signal.SIGSTOP)
        try:
            thread.join(30)
            assert not thread.is_alive(), "a sender hangs on a Redis that stopped answering"
        finally:
            os.kill(pid, signal.SIGCONT)
        assert failure, "Redis stopped: the burst must fail"
        assert took[0] < 6, f"the failing call took {took[0]:.1f} s: not within the socket timeout (1 s)"
        assert re.search(r"Redis at 127\.0\.0\.1:\d+/0 is unavailable \(TimeoutError", str(failure[0]))
        assert "of a batch of 100 messages, the first 0 were sent, the next 100 may or may not have been" in str(failure[0])
        sender.send([sid], msg("marker"))  # Redis is back: sends work again
        received = []
        while not received or received[-1] != "marker":
            received += ns(reader.take(1, timeout=20))
        numbers = received[:-1]
        # Nothing twice, nothing out of order, no hole: the batches sent, and the failed one whole or not at all.
        assert numbers == list(range(len(numbers))) and len(numbers) in (sent[0], sent[0] + 100)
    finally:
        os.kill(pid, signal.SIGCONT)
        holder.close()
        sender.close()


def test_batch_payloads_split_back_into_their_messages():
    assert wire.messages(b"* 3 2\nabcde", wire.BROADCASTS) == ["abc", "de"]
    assert wire.messages("b 2 3\nm1e 2", wire.NODE_BATCH) == ["m1", "e 2"]
    assert wire.messages("* 2\n\xe9", wire.BROADCASTS) == ["\xe9"]  # lengths in bytes, a str payload too
    assert wire.messages(b'{"jsonrpc":"2.0"}', wire.BROADCASTS) == ['{"jsonrpc":"2.0"}']
    assert wire.messages(b"*not a batch", wire.BROADCASTS) == ["*not a batch"]  # another publisher's message
    assert wire.messages(b"* 9\nshort", wire.BROADCASTS) == ["* 9\nshort"]


def test_a_broadcast_that_starts_like_a_batch_arrives_as_sent(node_factory, readers, new_id):
    holder, sender = node_factory(), node_factory()
    sid = new_id()
    reader = readers(holder, sid)
    tricky = ["* 1\nx", "*", "b 1\nm"]
    for data in tricky:
        sender.send(None, data)
    sender.send_many([(None, data) for data in tricky])
    assert reader.take(6) == tricky * 2
