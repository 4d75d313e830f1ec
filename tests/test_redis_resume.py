"""Resumable streams on Redis: what only many processes can show.

Two RedisStreamSessionManager instances in one process are two nodes (each
has its own node id, channel, listener and heartbeat); a subprocess is used
where the process boundary matters. The behaviour shared with the in-memory
backend is in test_event_stores.py and test_resumable_streams.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from session_manager import (
    BackendUnavailableError,
    EventGoneError,
    InMemoryEventStore,
    StreamConflictError,
    StreamController,
)
from session_manager.events import get_stream_id, new_post_stream_id, parse_event_id
from session_manager.redis import RedisInfoSessionManager, RedisStreamSessionManager

from .conftest_redis import TEST_HEARTBEAT, TEST_LIVENESS_TTL, make_event_store
from .redis_server import RedisServer
from .resume_support import Client, msg, stream_readers
from .test_redis_backend import keys, read_line, spawned, wait_until


@pytest.fixture
def nodes(node_factory, redis_server: RedisServer, redis_prefix: str) -> Callable[..., RedisStreamSessionManager]:
    """Make resumable stream managers ("nodes") sharing one prefix, each with its own store; closed afterwards."""
    return lambda **store_kwargs: node_factory(
        event_store=make_event_store(redis_server.url, redis_prefix, **store_kwargs)
    )


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """``connect(node, sid, last_event_id=None, **controller_kwargs)``: open a stream read by a :class:`Client`."""
    with stream_readers(Client) as open_:
        yield open_


# -- resume on another node ------------------------------------------------------

def test_resume_on_another_node_replays_then_continues_and_closes_the_old_stream(nodes, connect, new_id):
    a, b = nodes(), nodes()
    assert a.node_id != b.node_id
    sid = new_id()
    first = connect(a, sid)
    first.wait_primed()
    for i in range(3):
        b.send([sid], msg(i))
    first.wait_for(3)
    last = first.drop()
    for i in range(3, 6):
        a.send([sid], msg(i))
    second = connect(b, sid, last_event_id=last)
    assert wait_until(lambda: first.controller.closed), "the old stream was not closed by the takeover"
    assert first.ended.wait(10)
    a.send([sid], msg(6))
    second.wait_for(4)
    assert second.ns() == [3, 4, 5, 6]
    assert first.ns() == [0, 1, 2]
    assert a.has(sid) and b.has(sid) and len(a) == 0 and len(b) == 1
    with pytest.raises(StreamConflictError):  # the new stream is a live stream like any other
        a.create(sid, StreamController())


def takeover_mid_burst(connect, first_node, second_node, sender, sid, total, targets) -> None:
    """Send *total* messages (to *targets(i)*) while the client drops and resumes on *second_node*.

    What the first stream delivered up to the client's last id, then the
    resumed stream (replay, then live), must be every message exactly once,
    in order, with increasing ids; the first stream is closed by the takeover.
    """
    first = connect(first_node, sid, maxsize=total + 10)
    first.wait_primed()
    halfway = threading.Event()

    def burst() -> None:
        for i in range(total):
            if i == total // 3:
                halfway.set()
            sender.send(targets(i), msg(i))

    thread = threading.Thread(target=burst)
    thread.start()
    try:
        assert halfway.wait(30)
        first.wait_for(1)
        last = first.drop()
        second = connect(second_node, sid, last_event_id=last, maxsize=total + 10)
    finally:
        thread.join(120)
    assert not thread.is_alive()
    before = first.snapshot()
    upto = [eid for eid, _ in before].index(last) + 1
    delivered_first = [json.loads(data)["params"]["n"] for _, data in before[:upto]]
    second.wait_for(total - len(delivered_first), timeout=60)
    sender.send([sid], msg("end"))
    second.wait_for(total - len(delivered_first) + 1, timeout=30)
    assert delivered_first + second.ns() == list(range(total)) + ["end"]
    ids = [eid for eid, _ in before[:upto] + second.snapshot()]
    positions = [tuple(map(int, parse_event_id(eid)[1].split("-"))) for eid in ids]
    assert positions == sorted(set(positions)), "event ids must increase in delivery order"
    assert wait_until(lambda: first.controller.closed)


def test_takeover_mid_burst_across_nodes_delivers_every_message_exactly_once_in_order(nodes, connect, new_id):
    # Logs that hold the whole burst: a slow machine may resume well after the drop, and this is not a trimming test.
    a, b, sender = (nodes(max_events=1100) for _ in range(3))
    sid = new_id()
    takeover_mid_burst(connect, a, b, sender, sid, 1000, lambda i: [sid])


@pytest.mark.parametrize("same_node", [False, True], ids=["other-node", "same-node"])
def test_takeover_mid_broadcast_burst_delivers_every_message_exactly_once_in_order(nodes, connect, new_id, same_node):
    a, sender = nodes(max_events=700), nodes(max_events=700)  # the whole burst (see above)
    b = a if same_node else nodes(max_events=700)
    sid, other = new_id(), new_id()
    connect(b, other, maxsize=610).wait_primed()  # broadcasts reach every stream of the node
    takeover_mid_burst(connect, a, b, sender, sid, 600, lambda i: None if i % 3 else [sid])


RESUMABLE_HOLDER = """
import sys
from session_manager import StreamController
from session_manager.redis import RedisEventStore, RedisStreamSessionManager

url, prefix, sid = sys.argv[1:4]
store = RedisEventStore(url, prefix=prefix, max_events=50, max_streams=3)
streams = RedisStreamSessionManager(url, prefix=prefix, liveness_ttl=2, heartbeat_interval=0.5, event_store=store)
controller = StreamController(keepalive=0.2)
streams.create(sid, controller)
for chunk in controller:
    for line in chunk.decode().splitlines():
        if line.startswith("id: "):
            print(line[4:], flush=True)
print("closed", flush=True)
streams.close()
"""


def test_a_stream_held_by_another_process_is_resumed_here(nodes, connect, new_id, redis_server, redis_prefix):
    here = nodes()
    sid = new_id()
    with spawned(RESUMABLE_HOLDER, redis_server.url, redis_prefix, sid) as holder:
        primer = read_line(holder, 30).strip()
        assert parse_event_id(primer)[0] == get_stream_id(sid), holder.stderr.read() if holder.poll() is not None else ""
        for i in range(5):
            here.send([sid], msg(i))
        ids = [read_line(holder, 10).strip() for _ in range(5)]
        resumed = connect(here, sid, last_event_id=ids[2])
        assert read_line(holder, 10).strip() == "closed"  # taken over: the other process closed its stream
        assert holder.wait(10) == 0
        here.send([sid], msg(5))
        resumed.wait_for(3)
        assert resumed.ns() == [3, 4, 5]
        assert [eid for eid, _ in resumed.snapshot()[:2]] == ids[3:]


# -- ids that cannot be resumed ---------------------------------------------------

def test_ids_that_cannot_be_resumed_leave_the_open_stream_untouched(nodes, connect, new_id):
    a, b = nodes(max_events=10), nodes(max_events=10)
    sid, other = new_id(), new_id()
    theirs = connect(a, other).wait_primed()  # opened first: never a position of the log of sid
    client = connect(a, sid)
    primer = client.wait_primed()
    post = new_post_stream_id()
    post_id = b.event_store.open(sid, post)
    for i in range(300):  # far beyond max_events (and one node of trimming)
        b.send([sid], msg(i))
    client.wait_for(300)
    cases = [
        (primer, "expired"),
        (theirs, "unknown"),  # another session's id
        (post_id, "unknown"),  # a POST stream's id resumes no GET stream
        (get_stream_id(sid) + ".1", "unknown"),  # a position of the in-memory store
        (get_stream_id(sid) + ".99999999999999-0", "unknown"),  # never issued
        (get_stream_id(sid) + ".99999999999999999999-0", "unknown"),  # not even a Redis id
    ]
    for event_id, reason in cases:
        with pytest.raises(EventGoneError) as info:
            b.create(sid, StreamController(), last_event_id=event_id)
        assert info.value.reason == reason, event_id
    b.send([sid], msg("still"))
    client.wait_for(301)
    assert client.ns()[-1] == "still" and not client.controller.closed
    latest = client.snapshot()[-1][0]
    assert b.event_store.replay(sid, latest).events == []


def test_only_a_redis_event_store_is_accepted(redis_server, redis_prefix):
    with pytest.raises(TypeError, match="one Redis script"):
        RedisStreamSessionManager(redis_server.url, prefix=redis_prefix, event_store=InMemoryEventStore())
    store = make_event_store(redis_server.url, redis_prefix, session_ttl=1.0)
    try:
        with pytest.raises(ValueError, match="heartbeat"):
            RedisStreamSessionManager(
                redis_server.url, prefix=redis_prefix, liveness_ttl=3, heartbeat_interval=1, event_store=store
            )
    finally:
        store.close()


# -- broadcast -------------------------------------------------------------------

def broadcast_log(prefix: str) -> str:
    return f"{prefix}event-log:broadcast"


def get_log(prefix: str, sid: str) -> str:
    return f"{prefix}event-log:{get_stream_id(sid)}:{sid}"


def replayed(node: RedisStreamSessionManager, sid: str, event_id: str) -> list[str]:
    return [m for _, m in node.event_store.replay(sid, event_id).events]


def gone_reason(node: RedisStreamSessionManager, sid: str, event_id: str) -> str:
    with pytest.raises(EventGoneError) as info:
        node.event_store.replay(sid, event_id)
    return info.value.reason


def test_broadcast_reaches_every_session_with_a_log_open_stream_or_not(nodes, connect, new_id):
    a, b = nodes(), nodes()
    on_a, on_b, away, gone = new_id(), new_id(), new_id(), new_id()
    clients = [connect(a, on_a), connect(b, on_b)]
    away_client = connect(b, away)
    away_primer = away_client.wait_primed()
    away_client.controller.close()
    gone_primer = connect(a, gone).wait_primed()
    a.delete(gone)
    for client in clients:
        client.wait_primed()
    b.send(None, msg("all"))
    for client in clients:
        client.wait_for(1)
        assert client.ns() == ["all"]
    assert clients[0].snapshot() == clients[1].snapshot()  # one event id on every stream
    assert replayed(a, away, away_primer) == [msg("all")]
    assert gone_reason(a, gone, gone_primer) == "unknown"
    # A new stream of a session with a log is primed after the broadcasts it never got.
    again = connect(a, away)
    assert again.wait_primed() == clients[0].snapshot()[0][0]
    assert replayed(a, away, again.last_event_id) == []


def test_a_broadcast_is_one_xadd_whatever_the_number_of_sessions(nodes, connect, new_id, redis_server, redis_prefix):
    a, b = nodes(), nodes()
    sids = [new_id() for _ in range(20)]
    clients = [connect(a if i % 2 else b, sid) for i, sid in enumerate(sids)]
    for client in clients:
        client.wait_primed()
    admin = redis_server.client()
    try:
        lengths = lambda: [admin.xlen(get_log(redis_prefix, sid)) for sid in sids]
        before, shared = lengths(), admin.xlen(broadcast_log(redis_prefix))
        xadds = admin.info("commandstats")["cmdstat_xadd"]["calls"]
        a.send(None, msg("all"))
        assert admin.info("commandstats")["cmdstat_xadd"]["calls"] - xadds == 1
        assert lengths() == before == [1] * len(sids)  # only their opening markers
        assert admin.xlen(broadcast_log(redis_prefix)) == shared + 1
    finally:
        admin.close()
    for client in clients:
        client.wait_for(1)
    assert len({client.snapshot()[0] for client in clients}) == 1


def test_resume_replays_targeted_and_broadcast_messages_interleaved_in_order(nodes, connect, new_id):
    a, b = nodes(), nodes()
    sid, other = new_id(), new_id()
    first, bystander = connect(a, sid), connect(b, other)
    first.wait_primed()
    bystander.wait_primed()
    a.send([sid], msg(0))
    b.send(None, msg(1))
    first.wait_for(2)
    last = first.drop()
    for i in range(2, 8):  # even: broadcast, odd: targeted (and one for another session each time)
        if i % 2:
            a.send([sid], msg(i))
            a.send([other], msg(f"other{i}"))
        else:
            b.send(None, msg(i))
    second = connect(b, sid, last_event_id=last)
    b.send(None, msg(8))
    a.send([sid], msg(9))
    second.wait_for(8)
    assert second.ns() == list(range(2, 10))
    ids = [eid for eid, _ in first.snapshot()[:2] + second.snapshot()]
    positions = [tuple(map(int, parse_event_id(eid)[1].split("-"))) for eid in ids]
    assert positions == sorted(set(positions))
    assert replayed(a, sid, second.snapshot()[0][0]) == [msg(i) for i in range(3, 10)]  # from a broadcast's id
    assert replayed(a, sid, second.snapshot()[1][0]) == [msg(i) for i in range(4, 10)]  # from a targeted one's
    bystander.wait_for(8)
    assert bystander.ns() == [1, 2, "other3", 4, "other5", 6, "other7", 8]


def test_broadcasts_before_the_session_log_opened_are_not_its_events(nodes, connect, new_id):
    node = nodes()
    early, late = new_id(), new_id()
    early_client = connect(node, early)
    early_client.wait_primed()
    node.send(None, msg("before"))
    early_client.wait_for(1)
    before = early_client.snapshot()[0][0]
    late_primer = connect(node, late).wait_primed()
    assert gone_reason(node, late, before) == "unknown"
    node.send(None, msg("after"))
    early_client.wait_for(2)
    assert replayed(node, late, late_primer) == [msg("after")]
    assert replayed(node, early, before) == [msg("after")]


def test_broadcast_log_trimming_makes_old_ids_expired(nodes, connect, new_id):
    node = nodes(max_events=10)
    sid = new_id()
    client = connect(node, sid)
    primer = client.wait_primed()
    total = 300  # far beyond max_events (and one node of trimming)
    for i in range(total):
        node.send(None, msg(i))
    client.wait_for(total)
    first_broadcast = client.snapshot()[0][0]
    for old in (primer, first_broadcast):
        assert gone_reason(node, sid, old) == "expired"
        with pytest.raises(EventGoneError) as info:
            node.create(sid, StreamController(), last_event_id=old)
        assert info.value.reason == "expired"
    assert not client.controller.closed
    assert replayed(node, sid, client.snapshot()[-3][0]) == [msg(total - 2), msg(total - 1)]


def test_the_heartbeat_restarts_a_lost_broadcast_log(nodes, connect, new_id, redis_server, redis_prefix):
    node = nodes()
    sid = new_id()
    client = connect(node, sid)
    client.wait_primed()
    admin = redis_server.client()
    try:
        admin.delete(broadcast_log(redis_prefix))  # as if Redis had lost it
        assert wait_until(lambda: admin.exists(broadcast_log(redis_prefix)) == 1, timeout=10)
    finally:
        admin.close()
    node.send(None, msg("again"))
    client.wait_for(1)
    assert client.ns()[-1] == "again"
    assert replayed(node, sid, client.snapshot()[-1][0]) == []


def test_a_broadcast_of_a_manager_without_store_is_delivered_unstored(nodes, node_factory, connect, new_id):
    """E.g. examples/notify.py: the nodes holding resumable streams deliver it, at most once."""
    node, plain = nodes(), node_factory()
    sid = new_id()
    client = connect(node, sid)
    primer = client.wait_primed()
    plain.send(None, msg("plain"))
    node.send(None, msg("stored"))
    client.wait_for(2)
    assert client.ns() == ["plain", "stored"]
    assert replayed(node, sid, primer) == [msg("stored")]


# -- expiry and shutdown -----------------------------------------------------------

def test_an_open_stream_keeps_its_session_alive_and_an_expired_one_leaves_no_key(
    redis_server, redis_prefix, new_id, connect
):
    ttl = 1.0
    info = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix, session_ttl=ttl)
    streams = RedisStreamSessionManager(
        redis_server.url, prefix=redis_prefix, liveness_ttl=1.0, heartbeat_interval=0.2,
        event_store=make_event_store(redis_server.url, redis_prefix, session_ttl=ttl),
    )
    admin = redis_server.client()
    try:
        sid = new_id()
        info.create(sid, protocol_version="2025-06-18")
        info.add_subscription(sid, "file:///watched")
        client = connect(streams, sid)
        primer = client.wait_primed()
        post = new_post_stream_id()
        streams.event_store.open(sid, post)
        streams.event_store.append(sid, post, msg("post"))
        streams.send([sid], msg(0))
        streams.send(None, msg("all"))
        client.wait_for(2)
        time.sleep(3 * ttl)  # no request names the session meanwhile: only the open stream keeps it
        assert admin.exists(f"{redis_prefix}session:{sid}") == 1
        assert admin.sismember(f"{redis_prefix}uri:file:///watched", sid)
        assert [m for _, m in streams.event_store.replay(sid, primer).events] == [msg(0), msg("all")]
        assert len(keys(redis_server, f"{redis_prefix}event-log:*")) == 3  # GET, POST and broadcast logs
        client.controller.close()
        assert wait_until(lambda: keys(redis_server, f"{redis_prefix}*") == [], timeout=10 * ttl), keys(
            redis_server, f"{redis_prefix}*"
        )
        assert not info.exists(sid)
    finally:
        admin.close()
        streams.close()
        info.close()


def test_close_leaves_no_thread_connection_or_stream_key(redis_server, redis_prefix, new_id, connect):
    before = set(threading.enumerate())
    managers = [
        RedisStreamSessionManager(
            redis_server.url, prefix=redis_prefix, liveness_ttl=TEST_LIVENESS_TTL, heartbeat_interval=TEST_HEARTBEAT,
            event_store=make_event_store(redis_server.url, redis_prefix),
        )
        for _ in range(2)
    ]
    sid = new_id()
    first = connect(managers[0], sid)
    first.wait_primed()
    managers[1].send([sid], msg(0))
    first.wait_for(1)
    second = connect(managers[1], sid, last_event_id=first.drop())
    connect(managers[0], new_id()).wait_primed()
    managers[0].send([sid], msg(1))
    second.wait_for(1)
    admin = redis_server.client()
    try:
        ours = lambda: [c for c in admin.client_list() if redis_prefix in c.get("name", "")]
        assert ours()
        for manager in managers:
            manager.close()
        assert first.ended.wait(10) and second.ended.wait(10)
        assert [t.name for t in set(threading.enumerate()) - before if t.name.startswith("session_manager")] == []
        assert ours() == []
        assert keys(redis_server, f"{redis_prefix}stream:*") == []
    finally:
        admin.close()


def kill_listener(admin, prefix: str) -> None:
    """Close the pub/sub connection of the (one) stream manager with this prefix that listens."""
    name = f"session_manager:streams:{prefix}"
    listeners = [c["id"] for c in admin.client_list() if c.get("name") == name and int(c.get("sub", 0)) > 0]
    assert len(listeners) == 1, "the listener's connection was not found"
    admin.client_kill_filter(_id=listeners[0])


def test_after_a_listener_outage_open_streams_catch_up_from_their_logs(nodes, connect, new_id, redis_server, redis_prefix):
    holder, sender = nodes(max_events=500), nodes(max_events=500)
    sid = new_id()
    client = connect(holder, sid)
    client.wait_primed()
    admin = redis_server.client()
    try:
        for i in range(200):  # many are published while the listener is away: lost on the wire
            sender.send([sid] if i % 3 else None, msg(i))  # the catch-up merges both logs
            if i == 20:
                kill_listener(admin, redis_prefix)
    finally:
        admin.close()
    sender.send(None, msg(200))
    client.wait_for(201)
    assert client.ns() == list(range(201))  # every message once, in order: the stream caught up
    assert not client.controller.closed


def test_a_stream_made_live_during_a_listener_reconnection_is_caught_up(nodes, connect, new_id):
    """The claim script's "f" message is lost, and the listener's catch-up ran before the stream had its floor."""
    node = nodes()
    connect(node, new_id()).wait_primed()  # the listener runs
    claim = node._claim_logged

    def claim_losing_the_live_message(keys, args, **kwargs):
        args = list(args)
        args[9] = "nowhere:"  # the node channel prefix: the "f" message reaches no listener
        reply = claim(keys=keys, args=args, **kwargs)
        node._node().catch_ups += 1  # as if the listener had reconnected and caught up meanwhile
        return reply

    node._claim_logged = claim_losing_the_live_message
    sid = new_id()
    client = connect(node, sid)
    client.wait_primed()
    node.send(None, msg("broadcast"))
    node.send([sid], msg("targeted"))
    client.wait_for(2)
    assert client.ns() == ["broadcast", "targeted"]


def test_a_stream_that_missed_more_than_its_log_holds_is_closed(private_redis, connect, new_id, redis_prefix):
    """The listener stays away (new connections refused) while 100 messages go to a log of 50."""
    store = make_event_store(private_redis.url, redis_prefix)
    holder = RedisStreamSessionManager(
        private_redis.url, prefix=redis_prefix, liveness_ttl=TEST_LIVENESS_TTL, heartbeat_interval=TEST_HEARTBEAT,
        event_store=store,
    )
    admin = private_redis.client()
    try:
        sid = new_id()
        client = connect(holder, sid)
        client.wait_primed()
        holder.send([sid], msg(0))
        client.wait_for(1)
        admin.acl_setuser("default", enabled=False)  # connections made from now on cannot authenticate
        try:
            kill_listener(admin, redis_prefix)
            for i in range(1, 101):  # through connections already open
                holder.send([sid], msg(i))
        finally:
            admin.acl_setuser("default", enabled=True)
        assert client.ended.wait(20), "a stream that missed more than its log holds must be closed"
        assert client.ns() == list(range(len(client.ns())))
        with pytest.raises(EventGoneError) as info:
            holder.create(sid, StreamController(), last_event_id=client.last_event_id)
        assert info.value.reason == "expired"
    finally:
        admin.close()
        holder.close()


def test_after_redis_lost_every_key_open_streams_get_new_logs_and_keep_receiving(private_redis, connect, new_id, redis_prefix):
    holder = RedisStreamSessionManager(
        private_redis.url, prefix=redis_prefix, liveness_ttl=TEST_LIVENESS_TTL, heartbeat_interval=TEST_HEARTBEAT,
        event_store=make_event_store(private_redis.url, redis_prefix),
    )
    try:
        sid = new_id()
        client = connect(holder, sid)
        client.wait_primed()
        holder.send([sid], msg("before"))
        client.wait_for(1)
        private_redis.restart()  # no persistence: stream keys, logs and the id clock are gone
        deadline = time.monotonic() + 30
        while len(client.snapshot()) < 2 and time.monotonic() < deadline:  # until the heartbeat re-opened the log
            try:
                holder.send([sid], msg("after"))
            except BackendUnavailableError:  # Redis still restarting
                pass
            time.sleep(0.1)
        client.wait_for(2)
        assert not client.controller.closed and holder.has(sid)
        latest = client.snapshot()[-1][0]
        holder.send([sid], msg("more"))
        assert [m for _, m in holder.event_store.replay(sid, latest).events][-1] == msg("more")
    finally:
        holder.close()


def test_a_session_in_use_keeps_its_event_logs_past_the_store_ttl(redis_server, redis_prefix, new_id, connect):
    """Requests (info calls) and targeted sends keep what a resume needs, as long as the session lives."""
    ttl = 1.0
    info = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix, session_ttl=ttl)
    streams = RedisStreamSessionManager(
        redis_server.url, prefix=redis_prefix, liveness_ttl=1.0, heartbeat_interval=0.2,
        event_store=make_event_store(redis_server.url, redis_prefix, session_ttl=ttl),
    )
    try:
        sid = new_id()
        info.create(sid)
        client = connect(streams, sid)
        primer = client.wait_primed()
        client.controller.close()
        assert wait_until(lambda: not streams.has(sid))
        deadline = time.monotonic() + 2.5 * ttl  # past the store's ttl, the session in use all along
        sent = 0
        while time.monotonic() < deadline:
            assert info.exists(sid)
            if sent < 3:
                streams.send([sid], msg(sent))
                sent += 1
            time.sleep(ttl / 5)
        resumed = connect(streams, sid, last_event_id=primer)
        resumed.wait_for(3)
        assert resumed.ns() == [0, 1, 2]
    finally:
        streams.close()
        info.close()
