"""Resumable streams on Redis: what only many processes can show.

Two RedisStreamSessionManager instances in one process are two nodes (each
has its own node id, channel, listener and heartbeat); a subprocess is used
where the process boundary matters. The behaviour shared with the in-memory
backend is in test_event_stores.py and test_resumable_streams.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from session_manager import (
    BackendUnavailableError,
    EventGoneError,
    EventStoreRequiredError,
    InMemoryEventStore,
    StreamConflictError,
    StreamController,
)
from session_manager.events import get_stream_id, new_post_stream_id, parse_event_id
from session_manager.redis import RedisEventStore, RedisInfoSessionManager, RedisStreamSessionManager

from .conftest_redis import TEST_HEARTBEAT, TEST_LIVENESS_TTL, make_event_store, unique_prefix
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
        assert parse_event_id(primer)[0] == get_stream_id(sid), (
            holder.stderr.read() if holder.poll() is not None else ""
        )
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


def test_a_lost_broadcast_log_closes_the_streams_replaying_it_and_the_next_stream_starts_it_again(
    nodes, connect, new_id, redis_server, redis_prefix
):
    """Broadcasts sent while it was gone reached nobody: no stream may go on, no resume replay across them."""
    node = nodes()
    sid = new_id()
    client = connect(node, sid)
    primer = client.wait_primed()
    node.send([sid], msg("kept"))
    client.wait_for(1)
    admin = redis_server.client()
    try:
        admin.delete(broadcast_log(redis_prefix))  # as if Redis had lost it
        node.send(None, msg("dropped"))  # no broadcast log: no GET log to reach, as far as the script knows
        assert client.ended.wait(10), "the heartbeat left a stream open whose broadcast log is gone"
        assert admin.exists(broadcast_log(redis_prefix)) == 0
        for last in (primer, client.last_event_id):
            with pytest.raises(EventGoneError) as gone:
                node.create(sid, StreamController(), last_event_id=last)
            assert gone.value.reason == "unknown"
        fresh = connect(node, sid)  # a new stream starts the broadcast log again
        fresh.wait_primed()
        assert admin.exists(broadcast_log(redis_prefix)) == 1
    finally:
        admin.close()
    node.send(None, msg("again"))
    fresh.wait_for(1)
    assert client.ns() == ["kept"] and fresh.ns() == ["again"]
    assert replayed(node, sid, fresh.snapshot()[-1][0]) == []


def test_the_heartbeat_closes_a_stream_whose_log_was_lost(nodes, connect, new_id, redis_server, redis_prefix, caplog):
    """Without a listener outage too: a log never re-opened under an open stream, which would hide what was dropped."""
    node = nodes()
    sid, kept = new_id(), new_id()
    client, other = connect(node, sid), connect(node, kept)
    client.wait_primed()
    other.wait_primed()
    admin = redis_server.client()
    try:
        with caplog.at_level(logging.WARNING, logger="session_manager.redis._node"):
            admin.delete(get_log(redis_prefix, sid))  # as if Redis had lost it
            node.send([sid, kept], msg("dropped for one"))  # stored for the other only
            assert client.ended.wait(10), "the heartbeat left a stream whose log is gone open"
        assert admin.exists(get_log(redis_prefix, sid)) == 0, "the lost log was opened again"
    finally:
        admin.close()
    assert any("event logs of 1 open streams are gone" in r.getMessage() for r in caplog.records)
    with pytest.raises(EventGoneError) as gone:
        node.create(sid, StreamController(), last_event_id=client.last_event_id)
    assert gone.value.reason == "unknown"
    other.wait_for(1)
    assert client.ns() == [] and other.ns() == ["dropped for one"] and not other.controller.closed


def test_a_manager_without_store_refuses_to_send_where_a_store_keeps_logs(
    nodes, node_factory, connect, new_id, redis_prefix
):
    """E.g. examples/notify.py with MCP_EVENTS=0 against servers that store: refused loudly, nothing sent or stored.

    Its messages would carry no id and miss the logs: a client resuming
    across one would get a replay with a hole it cannot see.
    """
    node, plain = nodes(), node_factory()
    sid, logless, key = new_id(), new_id(), f"k-{new_id()}"
    client = connect(node, sid)
    primer = client.wait_primed()
    attempts = {
        "targeted": lambda: plain.send([sid], msg("plain")),
        "broadcast": lambda: plain.send(None, msg("plain")),
        "to a session with no log (the deployment decides)": lambda: plain.send([logless], msg("plain")),
        "batch": lambda: plain.send_many([([sid], msg("plain")), (None, msg("plain")), ([logless], msg("plain"))]),
        "idempotent": lambda: plain.send([sid], msg("plain"), idempotency_key=key),
    }
    for what, attempt in attempts.items():
        with pytest.raises(EventStoreRequiredError) as refused:
            attempt()
        text = str(refused.value)
        assert f"stores events on prefix {redis_prefix!r}" in text, what
        assert f"RedisEventStore(url, prefix={redis_prefix!r})" in text and text.endswith("nothing was sent"), what
        assert refused.value.prefix == redis_prefix and refused.value.sent == 0, what
    node.send([sid], msg("stored"), idempotency_key=key)  # the refused send did not use the key
    node.send([sid], msg("marker"))
    client.wait_for(2)
    assert client.ns() == ["stored", "marker"]
    assert replayed(node, sid, primer) == [msg("stored"), msg("marker")]


def test_a_manager_without_store_sends_where_no_store_keeps_logs(
    node_factory, connect, new_id, redis_server, redis_prefix
):
    """The guard looks at its own prefix: a store on another prefix leaves it free."""
    elsewhere = unique_prefix()
    stored = node_factory(prefix=elsewhere, event_store=make_event_store(redis_server.url, elsewhere))
    connect(stored, new_id()).wait_primed()  # a GET log (and the broadcast log) on the other prefix
    plain, holder = node_factory(), node_factory()
    sid = new_id()
    client = connect(holder, sid)
    plain.send([sid], msg(1))
    plain.send(None, msg(2))
    client.wait_for(2)
    assert client.ns() == [1, 2] and [event_id for event_id, _ in client.snapshot()] == [None, None]


# -- the byte bound -------------------------------------------------------------------


def big(n: object, size: int = 2_000) -> str:
    """:func:`msg` padded to *size* characters: long for a store with max_bytes=100,000 (over 500 bytes)."""
    base = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n, "pad": ""}})
    return base[:-3] + "x" * (size - len(base)) + base[-3:]  # inside the pad's quotes


def sizes_key(prefix: str, sid: str, stream: str | None = None) -> str:
    return f"{prefix}event-sizes:{stream or get_stream_id(sid)}:{sid}"


def broadcast_sizes(prefix: str) -> str:
    return f"{prefix}event-sizes:broadcast"


@pytest.mark.parametrize("max_bytes", [0, -1, 1.5, "1", None, True])
def test_bad_max_bytes_is_refused(max_bytes):
    with pytest.raises(ValueError, match="max_bytes must be a positive int"):
        RedisEventStore("redis://127.0.0.1:1/0", max_bytes=max_bytes)


def test_redis_memory_of_logs_of_large_messages_stays_within_max_bytes(nodes, new_id, redis_server, redis_prefix):
    """200 messages of 100 kB to one log and 200 broadcasts (20 MB each) leave about 1 MB in each log."""
    node = nodes(max_bytes=1_000_000)
    sid = new_id()
    primer = node.event_store.open(sid, get_stream_id(sid))  # the session's GET log, and the broadcast log
    payload = big("large", 100_000)
    for _ in range(20):  # batches of ten targeted messages and ten broadcasts, interleaved
        node.send_many([([sid], payload), (None, payload)] * 10)
    admin = redis_server.client()
    try:
        for log in (get_log(redis_prefix, sid), broadcast_log(redis_prefix)):
            assert admin.xlen(log) == 10, log  # ten messages of 100 kB: exactly max_bytes
            # (20 MB without the bound; the allocator rounds each 100 kB entry up to its 112 KiB size class)
            assert 1_000_000 <= admin.memory_usage(log, samples=0) <= 1_250_000, log
        for sizes in (sizes_key(redis_prefix, sid), broadcast_sizes(redis_prefix)):
            assert admin.zcard(sizes) == 11 and admin.memory_usage(sizes, samples=0) <= 2_000, sizes
    finally:
        admin.close()
    assert gone_reason(node, sid, primer) == "expired"
    latest = node.event_store.open(sid, get_stream_id(sid))
    assert node.event_store.replay(sid, latest).events == []


def test_a_short_message_to_a_log_without_long_ones_costs_no_command_on_size_keys(
    nodes, new_id, redis_server, redis_prefix
):
    node = nodes(max_bytes=100_000)
    sids = [new_id() for _ in range(3)]
    primers = {sid: node.event_store.open(sid, get_stream_id(sid)) for sid in sids}
    admin = redis_server.client()
    try:
        calls = lambda: {
            name: stats.get("calls", 0)
            for name, stats in admin.info("commandstats").items()
            if name in ("cmdstat_zadd", "cmdstat_zrange", "cmdstat_zrangebyscore", "cmdstat_xtrim")
        }
        before = calls()
        node.send(sids, msg(0))
        node.send(None, msg(1))
        node.send_many([(sids[:1], msg(2)), (None, msg(3))])
        assert calls() == before
    finally:
        admin.close()
    assert keys(redis_server, f"{redis_prefix}event-sizes:*") == []
    for sid in sids:
        expected = [0, 1, 2, 3] if sid == sids[0] else [0, 1, 3]
        assert [json.loads(m)["params"]["n"] for m in replayed(node, sid, primers[sid])] == expected


def test_size_keys_live_and_go_with_their_logs(nodes, new_id, redis_server, redis_prefix):
    node = nodes(max_bytes=100_000)
    store = node.event_store
    sid = new_id()
    get, posts = get_stream_id(sid), [new_post_stream_id() for _ in range(4)]
    store.open(sid, get)
    store.open(sid, posts[0])
    store.append(sid, get, big(0))
    store.append(sid, posts[0], big(1))
    node.send(None, big(2))
    admin = redis_server.client()
    try:
        pairs = [
            (get_log(redis_prefix, sid), sizes_key(redis_prefix, sid)),
            (f"{redis_prefix}event-log:{posts[0]}:{sid}", sizes_key(redis_prefix, sid, posts[0])),
            (broadcast_log(redis_prefix), broadcast_sizes(redis_prefix)),
        ]
        for log, sizes in pairs:  # the same expiry as its log (read a moment apart)
            assert admin.exists(sizes) and abs(admin.pttl(sizes) - admin.pttl(log)) < 1_000, sizes
        for post in posts[1:]:  # max_streams = 3: the oldest POST log goes, with its size key
            store.open(sid, post)
        assert admin.exists(pairs[1][0], pairs[1][1]) == 0
        store.delete(sid)
        assert keys(redis_server, f"{redis_prefix}event-*:*{sid}") == []
        assert admin.exists(*pairs[2]) == 2  # the broadcast log goes with the last GET log, by expiry
    finally:
        admin.close()


# -- expiry and shutdown -----------------------------------------------------------


def short_lived(redis_server, redis_prefix: str, ttl: float) -> tuple[RedisInfoSessionManager, RedisStreamSessionManager]:
    """Info and stream managers (with a byte-bounded store) whose sessions expire after *ttl* seconds idle."""
    info = RedisInfoSessionManager(redis_server.url, prefix=redis_prefix, session_ttl=ttl)
    streams = RedisStreamSessionManager(
        redis_server.url,
        prefix=redis_prefix,
        liveness_ttl=1.0,
        heartbeat_interval=0.2,
        event_store=make_event_store(redis_server.url, redis_prefix, session_ttl=ttl, max_bytes=100_000),
    )
    return info, streams


def test_an_open_stream_keeps_its_session_alive_and_an_expired_one_leaves_no_key(
    redis_server, redis_prefix, new_id, connect
):
    ttl = 1.0
    info, streams = short_lived(redis_server, redis_prefix, ttl)
    admin = redis_server.client()
    try:
        sid = new_id()
        info.create(sid, protocol_version="2025-06-18")
        info.add_subscription(sid, "file:///watched")
        client = connect(streams, sid)
        primer = client.wait_primed()
        post = new_post_stream_id()
        streams.event_store.open(sid, post)
        streams.event_store.append(sid, post, big("post"))  # long messages: every log gets its size key
        streams.send([sid], big(0))
        streams.send(None, big("all"))
        client.wait_for(2)
        time.sleep(3 * ttl)  # no request names the session meanwhile: only the open stream keeps it
        assert admin.exists(f"{redis_prefix}session:{sid}") == 1
        assert admin.sismember(f"{redis_prefix}uri:file:///watched", sid)
        assert [m for _, m in streams.event_store.replay(sid, primer).events] == [big(0), big("all")]
        assert len(keys(redis_server, f"{redis_prefix}event-log:*")) == 3  # GET, POST and broadcast logs
        assert len(keys(redis_server, f"{redis_prefix}event-sizes:*")) == 3  # and their size keys
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
            redis_server.url,
            prefix=redis_prefix,
            liveness_ttl=TEST_LIVENESS_TTL,
            heartbeat_interval=TEST_HEARTBEAT,
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


def test_after_a_listener_outage_open_streams_catch_up_from_their_logs(
    nodes, connect, new_id, redis_server, redis_prefix
):
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
        private_redis.url,
        prefix=redis_prefix,
        liveness_ttl=TEST_LIVENESS_TTL,
        heartbeat_interval=TEST_HEARTBEAT,
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


def test_after_redis_lost_its_data_resumable_streams_close_and_their_clients_learn_of_the_gap(
    private_redis, connect, new_id, redis_prefix, caplog
):
    """No silent hole: messages sent before the stream re-registered were dropped (no log), so it must not go on.

    Closed, its client resumes with its last id and gets 410 (the id is
    unknown), which tells it messages were lost; a new stream works as any.
    """
    holder = RedisStreamSessionManager(
        private_redis.url,
        prefix=redis_prefix,
        liveness_ttl=TEST_LIVENESS_TTL,
        heartbeat_interval=TEST_HEARTBEAT,
        event_store=make_event_store(private_redis.url, redis_prefix),
    )
    try:
        sid, other = new_id(), new_id()
        clients = [connect(holder, sid), connect(holder, other)]
        for client in clients:
            client.wait_primed()
        holder.send([sid, other], msg("before"))
        for client in clients:
            client.wait_for(1)
        last = clients[0].last_event_id
        with caplog.at_level(logging.WARNING, logger="session_manager.redis._node"):
            private_redis.restart()  # no persistence: stream keys, logs and the id clock are gone
            with contextlib.suppress(BackendUnavailableError):
                holder.send([sid], msg("dropped"))  # no log to store it in: routed nowhere
            for client in clients:
                assert client.ended.wait(30), "a stream whose log was lost stayed open"
        assert [client.ns() for client in clients] == [["before"], ["before"]]
        warned = [r.getMessage() for r in caplog.records if "event logs of" in r.getMessage()]
        assert len(warned) == 1 and "of 2 open streams are gone" in warned[0], warned
        assert not holder.has(sid) and len(holder) == 0

        # The client resumes with its last id: 410, it knows messages were lost.
        gone = None
        for _ in range(300):  # bounded: the listener may still be reconnecting (BackendUnavailableError)
            try:
                holder.create(sid, StreamController(), last_event_id=last)
            except BackendUnavailableError:
                time.sleep(0.1)
                continue
            except EventGoneError as exc:
                gone = exc
            break
        assert gone is not None and gone.reason == "unknown", "a resume across lost messages was not refused"

        # A new stream (no Last-Event-ID) works as any other: primed, live, resumable.
        fresh = connect(holder, sid)
        primer = fresh.wait_primed()
        holder.send([sid], msg("after"))
        holder.send(None, msg("to all"))
        fresh.wait_for(2)
        assert fresh.ns() == ["after", "to all"]
        assert replayed(holder, sid, primer) == [msg("after"), msg("to all")]
    finally:
        holder.close()


def test_a_session_in_use_keeps_its_event_logs_past_the_store_ttl(redis_server, redis_prefix, new_id, connect):
    """Requests (info calls) and targeted sends keep what a resume needs, as long as the session lives."""
    ttl = 1.0
    info, streams = short_lived(redis_server, redis_prefix, ttl)
    admin = redis_server.client()
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
                streams.send([sid], big(sent) if sent == 0 else msg(sent))  # a long one: the log's size key too
                sent += 1
            time.sleep(ttl / 5)
        assert admin.exists(sizes_key(redis_prefix, sid), broadcast_sizes(redis_prefix)) == 1  # none for broadcasts
        resumed = connect(streams, sid, last_event_id=primer)
        resumed.wait_for(3)
        assert resumed.ns() == [0, 1, 2]
    finally:
        admin.close()
        streams.close()
        info.close()
