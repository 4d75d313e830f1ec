"""Behaviour suite every SubscriptionManager backend must pass (MCP 2026-07-28 ``subscriptions/listen``).

Delivery may be asynchronous (Redis goes through pub/sub), so "nothing else
arrived" is checked with a marker: every stream here also watches
:data:`MARKER`, and streams are FIFO, so once a marker update sent
afterwards has arrived, anything earlier would have too. The Redis-only
tests at the end use two managers on one prefix for two processes.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from session_manager import BackendUnavailableError, StreamController
from session_manager.redis import RedisSubscriptionManager
from session_manager.redis._subscriptions import decode, encode
from session_manager.subscriptions import (
    SUBSCRIPTION_ID_META,
    InMemorySubscriptionManager,
    ListenFilter,
    SubscriptionManager,
    acknowledged_message,
    listen_result,
)

from .conftest import Reader
from .conftest_redis import closing_factory
from .sse_parser import iter_events
from .test_redis_backend import run_python

MARKER = "test://marker"
TOOLS = "notifications/tools/list_changed"
PROMPTS = "notifications/prompts/list_changed"
RESOURCES = "notifications/resources/list_changed"
UPDATED = "notifications/resources/updated"


def wanted(*, tools: bool = False, prompts: bool = False, resources: bool = False, uris: tuple[str, ...] = ()) -> ListenFilter:
    """A filter that also watches the marker."""
    return ListenFilter(
        tools_list_changed=tools,
        prompts_list_changed=prompts,
        resources_list_changed=resources,
        resource_subscriptions=frozenset({*uris, MARKER}),
    )


def expected(method: str, subscription_id: object, uri: str | None = None) -> dict[str, Any]:
    """The exact message a listen stream must receive."""
    params: dict[str, Any] = {} if uri is None else {"uri": uri}
    params["_meta"] = {SUBSCRIPTION_ID_META: subscription_id}
    return {"jsonrpc": "2.0", "method": method, "params": params}


def short(message: dict[str, Any]) -> str:
    """A message as one word: its kind, or the URI of an update."""
    method = message["method"]
    return message["params"]["uri"] if method == UPDATED else method.split("/")[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read_until_marker(reader: Reader, marker: str = MARKER, limit: int = 5000) -> list[dict[str, Any]]:
    """Every message up to and including the update of *marker* (fails if it does not come)."""
    got: list[dict[str, Any]] = []
    for _ in range(limit):
        try:
            message = json.loads(reader.messages.get(timeout=10))
        except queue.Empty:
            pytest.fail(f"no {marker} update after {len(got)} messages: {got[-5:]!r}")
        got.append(message)
        if message["method"] == UPDATED and message["params"]["uri"] == marker:
            return got
    pytest.fail(f"no {marker} update within {limit} messages")


OpenListen = Callable[..., tuple[StreamController, Reader]]


@pytest.fixture
def open_listen(subscriptions: SubscriptionManager) -> Iterator[OpenListen]:
    """Register a listen stream and start reading it."""
    readers: list[Reader] = []

    def make(subscription_id: object, filter: ListenFilter, **kwargs: Any) -> tuple[StreamController, Reader]:
        kwargs.setdefault("keepalive", 0.2)
        controller = StreamController(**kwargs)
        subscriptions.create(subscription_id, filter, controller)  # type: ignore[arg-type]
        reader = Reader(controller)
        readers.append(reader)
        return controller, reader

    yield make
    for reader in readers:
        reader.controller.close()
        reader.thread.join(5)


def watched_uris(manager: SubscriptionManager) -> int:
    return manager.watched_uris  # type: ignore[attr-defined, no-any-return]


# -- filtering and tagging -----------------------------------------------------------


def test_each_list_kind_reaches_only_the_streams_that_asked_for_it(subscriptions, open_listen):
    streams = {
        "tools": open_listen("tools", wanted(tools=True))[1],
        "prompts": open_listen("prompts", wanted(prompts=True))[1],
        "resources": open_listen("resources", wanted(resources=True))[1],
        "none": open_listen("none", wanted())[1],
        "all": open_listen("all", wanted(tools=True, prompts=True, resources=True))[1],
    }
    subscriptions.tools_list_changed()
    subscriptions.prompts_list_changed()
    subscriptions.resources_list_changed()
    subscriptions.resource_updated(MARKER)
    got = {name: [short(m) for m in read_until_marker(reader)] for name, reader in streams.items()}
    assert got == {
        "tools": ["tools", MARKER],
        "prompts": ["prompts", MARKER],
        "resources": ["resources", MARKER],
        "none": [MARKER],
        "all": ["tools", "prompts", "resources", MARKER],
    }


def test_a_resource_update_reaches_only_streams_naming_that_exact_uri(subscriptions, open_listen):
    a, b = "file:///a.txt", "file:///b.txt"
    streams = {
        "a": open_listen(1, wanted(uris=(a,)))[1],
        "ab": open_listen(2, wanted(uris=(a, b)))[1],
        "b": open_listen(3, wanted(uris=(b,)))[1],
        "near misses": open_listen(4, wanted(uris=("FILE:///a.txt", a + "/", "file:///a", a + " ")))[1],
        "lists only": open_listen(5, wanted(tools=True, prompts=True, resources=True))[1],
    }
    subscriptions.resource_updated(a)
    subscriptions.resource_updated("file:///nobody")
    subscriptions.resource_updated(b)
    subscriptions.resource_updated(MARKER)
    got = {name: [short(m) for m in read_until_marker(reader)] for name, reader in streams.items()}
    assert got == {
        "a": [a, MARKER],
        "ab": [a, b, MARKER],
        "b": [b, MARKER],
        "near misses": [MARKER],
        "lists only": [MARKER],
    }


@pytest.mark.parametrize(
    "subscription_id",
    [7, 0, -3, 2**53, "7", "", "listen-1", 'quote " backslash \\ newline \n tab \t', "é ü 漢 \u2028 \U0001f600"],
)
def test_every_message_is_exactly_the_notification_tagged_with_its_own_id(subscriptions, open_listen, subscription_id):
    uri = 'test://odd/"quoted"\\path\n?q=é&\u2028'
    _, reader = open_listen(subscription_id, wanted(tools=True, prompts=True, resources=True, uris=(uri,)))
    _, other = open_listen("other", wanted(tools=True))
    subscriptions.tools_list_changed()
    subscriptions.prompts_list_changed()
    subscriptions.resources_list_changed()
    subscriptions.resource_updated(uri)
    subscriptions.resource_updated(MARKER)
    raw = [reader.messages.get(timeout=10) for _ in range(5)]
    assert [json.loads(m) for m in raw] == [
        expected(TOOLS, subscription_id),
        expected(PROMPTS, subscription_id),
        expected(RESOURCES, subscription_id),
        expected(UPDATED, subscription_id, uri),
        expected(UPDATED, subscription_id, MARKER),
    ]
    for message in raw:  # the id keeps its JSON type: a number stays a number
        assert type(json.loads(message)["params"]["_meta"][SUBSCRIPTION_ID_META]) is type(subscription_id)
    assert [json.loads(m) for m in other.take(1)] == [expected(TOOLS, "other")]


def test_several_streams_of_one_client_each_get_their_own_tag(subscriptions, open_listen):
    ids: list[object] = [1, 2, "2", "listen-b"]
    readers = [open_listen(sid, wanted(tools=True))[1] for sid in ids]
    _, twin = open_listen(1, wanted(tools=True))  # the same id twice: still two streams
    assert len(subscriptions) == 5
    subscriptions.tools_list_changed()
    for sid, reader in zip(ids, readers):
        assert reader.take_json(1) == [expected(TOOLS, sid)]
    assert twin.take_json(1) == [expected(TOOLS, 1)]


# -- registration ----------------------------------------------------------------------


def test_closing_a_stream_unregisters_it_and_its_uris_go_with_their_last_listener(subscriptions, open_listen):
    a, b, c = "test://a", "test://b", "test://c"
    first, r1 = open_listen(1, ListenFilter(tools_list_changed=True, resource_subscriptions=frozenset({a, b})))
    second, r2 = open_listen(2, ListenFilter(resource_subscriptions=frozenset({b, c})))
    assert len(subscriptions) == 2
    assert watched_uris(subscriptions) == 3

    first.close()
    assert wait_until(lambda: len(subscriptions) == 1)
    assert watched_uris(subscriptions) == 2  # b is still watched by the second stream
    subscriptions.tools_list_changed()
    subscriptions.resource_updated(a)
    subscriptions.resource_updated(b)
    assert [short(m) for m in r2.take_json(1)] == [b]
    assert r1.done.wait(5) and r1.pending() == []

    second.close()
    assert wait_until(lambda: len(subscriptions) == 0)
    assert watched_uris(subscriptions) == 0


def test_a_controller_closed_before_create_is_never_registered(subscriptions):
    controller = StreamController()
    controller.close()
    subscriptions.create(1, wanted(tools=True), controller)
    assert len(subscriptions) == 0
    assert watched_uris(subscriptions) == 0
    subscriptions.tools_list_changed()  # nothing to reach, nothing raised


def test_a_slow_consumer_is_dropped_and_the_others_are_unaffected(subscriptions, open_listen):
    slow = StreamController(maxsize=5, keepalive=0.2)
    subscriptions.create("slow", wanted(tools=True, uris=("test://x",)), slow)  # never read: a stuck client
    _, fast = open_listen("fast", wanted(tools=True, uris=("test://x",)))
    for _ in range(20):
        subscriptions.tools_list_changed()
    subscriptions.resource_updated(MARKER)
    assert [short(m) for m in read_until_marker(fast)] == ["tools"] * 20 + [MARKER]
    assert slow.overflowed and slow.closed
    assert len(subscriptions) == 1
    assert watched_uris(subscriptions) == 2  # x and the marker, both still watched by the fast stream
    assert subscriptions.slow_consumers_dropped == 1  # type: ignore[attr-defined]


def test_close_all_ends_every_stream_with_its_listen_result(subscriptions, open_listen):
    _, r1 = open_listen(41, wanted(tools=True))
    _, r2 = open_listen("b", wanted(prompts=True))
    subscriptions.tools_list_changed()
    subscriptions.resource_updated(MARKER)
    read_until_marker(r1)
    read_until_marker(r2)
    subscriptions.close_all("shutdown")
    for reader, sid in ((r1, 41), (r2, "b")):
        assert reader.done.wait(5), "close_all left a stream open"
        assert reader.take_json(1) == [
            {"jsonrpc": "2.0", "id": sid, "result": {"resultType": "complete", "_meta": {SUBSCRIPTION_ID_META: sid}}}
        ]
    assert len(subscriptions) == 0 and watched_uris(subscriptions) == 0
    _, r3 = open_listen(3, wanted(tools=True))  # the manager still works
    subscriptions.tools_list_changed()
    assert r3.take_json(1) == [expected(TOOLS, 3)]


def test_create_after_close_is_refused(subscriptions):
    subscriptions.close()
    subscriptions.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        subscriptions.create(1, wanted(), StreamController())


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda m: m.resource_updated(123), TypeError),
        (lambda m: m.resource_updated(b"test://a"), TypeError),
        (lambda m: m.resource_updated(None), TypeError),
        (lambda m: m.resource_updated(""), ValueError),
        (lambda m: m.create(None, wanted(), StreamController()), TypeError),
        (lambda m: m.create(1.5, wanted(), StreamController()), TypeError),
        (lambda m: m.create(True, wanted(), StreamController()), TypeError),
        (lambda m: m.create(["1"], wanted(), StreamController()), TypeError),
        (lambda m: m.create(1, {"toolsListChanged": True}, StreamController()), TypeError),
        (lambda m: m.create(1, wanted(), object()), TypeError),
    ],
)
def test_bad_calls_raise_a_clear_error_and_hurt_nobody(subscriptions, open_listen, call, error):
    _, reader = open_listen(1, wanted(tools=True))
    with pytest.raises(error) as excinfo:
        call(subscriptions)
    assert str(excinfo.value)
    assert len(subscriptions) == 1
    subscriptions.tools_list_changed()
    assert reader.take_json(1) == [expected(TOOLS, 1)]


def test_listen_filter_parse_reads_the_spec_object():
    parsed = ListenFilter.parse(
        {
            "toolsListChanged": True,
            "promptsListChanged": False,
            "resourceSubscriptions": ["test://b", "test://a", "test://b"],
            "someFutureKind": {"anything": 1},  # unknown members are ignored
        }
    )
    assert parsed == ListenFilter(tools_list_changed=True, resource_subscriptions=frozenset({"test://a", "test://b"}))
    assert parsed.to_params() == {"toolsListChanged": True, "resourceSubscriptions": ["test://a", "test://b"]}
    assert ListenFilter.parse({}) == ListenFilter()
    assert ListenFilter().to_params() == {}
    everything = {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True,
                  "resourceSubscriptions": ["x:1"]}
    assert ListenFilter.parse(everything).to_params() == everything
    assert ListenFilter.parse({"resourceSubscriptions": ["u"] * 3}, max_uris=3).resource_subscriptions == {"u"}


@pytest.mark.parametrize(
    "notifications, words",
    [
        (None, "must be an object, not null"),
        ([], "must be an object, not an array"),
        ("tools", "must be an object, not a string"),
        ({"toolsListChanged": "true"}, "toolsListChanged must be a boolean, not a string"),
        ({"promptsListChanged": 1}, "promptsListChanged must be a boolean, not a number"),
        ({"resourcesListChanged": None}, "resourcesListChanged must be a boolean, not null"),
        ({"resourceSubscriptions": "test://a"}, "resourceSubscriptions must be an array of strings, not a string"),
        ({"resourceSubscriptions": {"test://a": True}}, "must be an array of strings, not an object"),
        ({"resourceSubscriptions": ["test://a", 5]}, "resourceSubscriptions[1] must be a non-empty string, not a number"),
        ({"resourceSubscriptions": [None]}, "resourceSubscriptions[0] must be a non-empty string, not null"),
        ({"resourceSubscriptions": [""]}, "resourceSubscriptions[0] must be a non-empty string, not an empty string"),
        ({"resourceSubscriptions": ["u"] * 4}, "names 4 resources; at most 3 are accepted"),
    ],
)
def test_listen_filter_parse_refuses_a_malformed_filter_clearly(notifications, words):
    with pytest.raises(ValueError) as excinfo:
        ListenFilter.parse(notifications, max_uris=3)
    assert words in str(excinfo.value)


def test_listen_filter_checks_its_fields_and_honours_a_subset():
    with pytest.raises(TypeError):
        ListenFilter(tools_list_changed=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ListenFilter(resource_subscriptions={"test://a"})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ListenFilter(resource_subscriptions=frozenset({""}))
    asked = ListenFilter(True, True, True, frozenset({"test://a"}))
    assert asked.honoured(prompts=False, subscribe=False) == ListenFilter(True, False, True)
    assert asked.honoured() == asked


def test_acknowledgement_and_result_messages():
    asked = ListenFilter(tools_list_changed=True, resource_subscriptions=frozenset({"test://a"}))
    assert json.loads(acknowledged_message(5, asked)) == {
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {
            "notifications": {"toolsListChanged": True, "resourceSubscriptions": ["test://a"]},
            "_meta": {SUBSCRIPTION_ID_META: 5},
        },
    }
    assert json.loads(listen_result("x")) == {
        "jsonrpc": "2.0", "id": "x", "result": {"resultType": "complete", "_meta": {SUBSCRIPTION_ID_META: "x"}}
    }
    with pytest.raises(TypeError):
        listen_result(None)  # type: ignore[arg-type]


def test_the_acknowledgement_primed_before_create_comes_first(subscriptions):
    from session_manager.sse import encode_message

    asked = wanted(tools=True)
    controller = StreamController(keepalive=0.2)
    controller.prime([encode_message(acknowledged_message("L", asked))])
    subscriptions.create("L", asked, controller)
    subscriptions.tools_list_changed()
    reader = Reader(controller)
    try:
        first, second = reader.take_json(2)
        assert first["method"] == "notifications/subscriptions/acknowledged"
        assert second == expected(TOOLS, "L")
    finally:
        controller.close()
        reader.thread.join(5)


# -- concurrency -----------------------------------------------------------------------

POOL = tuple(f"test://pool/{i}" for i in range(5))
PHASE, END = "test://phase", "test://end"


def allowed(message: dict[str, Any], subscription_id: object, filter: ListenFilter) -> bool:
    """Whether a stream with *filter* may get *message*: a kind it asked for (an update of a URI it names), its tag."""
    if message["params"]["_meta"] != {SUBSCRIPTION_ID_META: subscription_id}:
        return False
    method = message["method"]
    if method == UPDATED:
        return message["params"]["uri"] in filter.resource_subscriptions
    return {TOOLS: filter.tools_list_changed, PROMPTS: filter.prompts_list_changed,
            RESOURCES: filter.resources_list_changed}.get(method, False)


def test_many_threads_creating_closing_and_notifying_keep_every_invariant(subscriptions):
    threads_count, rounds = 20, 25
    survivors: list[tuple[object, ListenFilter, StreamController]] = []
    errors: list[str] = []
    lock = threading.Lock()
    notify = [
        lambda rng: subscriptions.tools_list_changed(),
        lambda rng: subscriptions.prompts_list_changed(),
        lambda rng: subscriptions.resources_list_changed(),
        lambda rng: subscriptions.resource_updated(rng.choice(POOL)),
    ]

    def check_and_close(sid: object, filter: ListenFilter, controller: StreamController) -> None:
        """End a stream, reading what it got so far: only what it asked for, tagged with its id."""
        controller.close(drain=True)
        for event in iter_events(controller):
            message = json.loads(event.data)
            if not allowed(message, sid, filter):
                with lock:
                    errors.append(f"stream {sid!r} with {filter} got {message}")

    def work(n: int) -> None:
        rng = random.Random(n)
        mine: list[tuple[object, ListenFilter, StreamController]] = []
        for i in range(rounds):
            filter = ListenFilter(
                tools_list_changed=rng.random() < 0.5,
                prompts_list_changed=rng.random() < 0.5,
                resources_list_changed=rng.random() < 0.5,
                resource_subscriptions=frozenset({*rng.sample(POOL, rng.randint(0, 3)), PHASE, END}),
            )
            sid: object = i if rng.random() < 0.5 else f"w{n}-{i}"  # int ids repeat across threads
            controller = StreamController(maxsize=100_000, keepalive=5)
            subscriptions.create(sid, filter, controller)
            mine.append((sid, filter, controller))
            rng.choice(notify)(rng)
            if rng.random() < 0.6:
                victim = mine.pop(rng.randrange(len(mine)))
                if rng.random() < 0.5:
                    check_and_close(*victim)
                else:
                    victim[2].close()  # a client gone: nothing read
        while len(mine) > 3:
            check_and_close(*mine.pop())
        with lock:
            survivors.extend(mine)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not any(worker.is_alive() for worker in workers)
    assert errors == []
    assert wait_until(lambda: len(subscriptions) == len(survivors))

    readers = [Reader(controller) for _, _, controller in survivors]
    try:
        subscriptions.resource_updated(PHASE)  # what follows is all that is sent: checked exactly
        subscriptions.tools_list_changed()
        subscriptions.prompts_list_changed()
        subscriptions.resources_list_changed()
        for uri in POOL:
            subscriptions.resource_updated(uri)
        subscriptions.resource_updated(END)
        phase = [expected(UPDATED, None, PHASE), expected(TOOLS, None), expected(PROMPTS, None),
                 expected(RESOURCES, None), *(expected(UPDATED, None, uri) for uri in POOL),
                 expected(UPDATED, None, END)]
        for (sid, filter, _), reader in zip(survivors, readers):
            got = read_until_marker(reader, END)
            bad = [m for m in got if not allowed(m, sid, filter)]
            assert bad == [], f"stream {sid!r} with {filter} got {bad}"
            start = got.index(expected(UPDATED, sid, PHASE))
            for message in phase:
                message["params"]["_meta"][SUBSCRIPTION_ID_META] = sid
            assert got[start:] == [m for m in phase if allowed(m, sid, filter)]
    finally:
        for reader in readers:
            reader.controller.close()
        for reader in readers:
            reader.thread.join(5)
    assert wait_until(lambda: len(subscriptions) == 0)
    assert watched_uris(subscriptions) == 0
    assert subscriptions.slow_consumers_dropped == 0  # type: ignore[attr-defined]


# -- Redis only: many processes --------------------------------------------------------


@pytest.fixture
def redis_managers(redis_server, redis_prefix) -> Iterator[Callable[..., RedisSubscriptionManager]]:
    """Make subscription managers ("processes") on the shared server and one prefix; all closed afterwards."""
    with closing_factory(RedisSubscriptionManager, redis_server.url, prefix=redis_prefix) as make:
        yield make


@pytest.fixture
def listen_on() -> Iterator[Callable[..., Reader]]:
    """Open a listen stream on a given manager and read it."""
    readers: list[Reader] = []

    def make(manager: SubscriptionManager, sid: object, filter: ListenFilter) -> Reader:
        controller = StreamController(keepalive=0.2)
        manager.create(sid, filter, controller)  # type: ignore[arg-type]
        readers.append(Reader(controller))
        return readers[-1]

    yield make
    for reader in readers:
        reader.controller.close()
        reader.thread.join(5)


def subscribers(server_url: str, channel: str) -> int:
    client = redis.Redis.from_url(server_url)
    try:
        return int(client.pubsub_numsub(channel)[0][1])
    finally:
        client.close()


def test_a_notification_from_one_process_reaches_every_process_once(redis_managers, listen_on, redis_server):
    one, two = redis_managers(), redis_managers()
    streams = [
        (listen_on(one, "one-a", wanted(tools=True)), "one-a"),
        (listen_on(one, "one-b", wanted(tools=True, uris=("test://u",))), "one-b"),
        (listen_on(two, "two-a", wanted(tools=True, uris=("test://u",))), "two-a"),
        (listen_on(two, "two-b", wanted(prompts=True)), "two-b"),
    ]
    assert subscribers(redis_server.url, one.channel) == 2  # one listener per manager, whatever its streams
    two.tools_list_changed()
    one.resource_updated("test://u")
    two.resource_updated(MARKER)
    got = {sid: [short(m) for m in read_until_marker(reader)] for reader, sid in streams}
    assert got == {
        "one-a": ["tools", MARKER],
        "one-b": ["tools", "test://u", MARKER],
        "two-a": ["tools", "test://u", MARKER],
        "two-b": [MARKER],
    }


def test_each_notification_is_one_publish_whatever_the_listeners(private_redis, listen_on):
    prefix = "one-publish:"
    managers = [RedisSubscriptionManager(private_redis.url, prefix=prefix) for _ in range(3)]
    try:
        readers = [listen_on(m, i, wanted(tools=True)) for m in managers for i in range(20)]
        client = private_redis.client()
        try:
            client.config_resetstat()
            managers[0].tools_list_changed()
            for reader in readers:
                assert reader.take_json(1)[0]["method"] == TOOLS
            assert client.info("commandstats")["cmdstat_publish"]["calls"] == 1
            assert subscribers(private_redis.url, managers[0].channel) == 3
        finally:
            client.close()
    finally:
        for manager in managers:
            manager.close()


def test_a_publisher_only_process_starts_no_listener(redis_managers, listen_on, redis_server):
    receiver = redis_managers()
    reader = listen_on(receiver, "r", wanted(tools=True, prompts=True, resources=True, uris=("test://p",)))
    before = set(threading.enumerate())
    publisher = redis_managers()
    publisher.tools_list_changed()
    publisher.prompts_list_changed()
    publisher.resources_list_changed()
    publisher.resource_updated("test://p")
    assert [short(m) for m in reader.take_json(4)] == ["tools", "prompts", "resources", "test://p"]
    assert not publisher.listening and receiver.listening
    assert len(publisher) == 0
    assert set(threading.enumerate()) - before == set()
    assert subscribers(redis_server.url, publisher.channel) == 1  # the receiver's only
    publisher.close()
    receiver.close()
    assert reader.done.wait(5)
    assert not receiver.listening
    assert subscribers(redis_server.url, receiver.channel) == 0


def test_a_notification_after_close_is_refused(redis_managers):
    manager = redis_managers()
    manager.close()
    with pytest.raises(RuntimeError, match="closed"):
        manager.tools_list_changed()


def test_the_wire_format_round_trips():
    assert decode(encode("t")) == ("t", None)
    assert decode(encode("u", "test://a b\nc\ud800é")) == ("u", "test://a b\nc\ud800é")
    assert decode("u test://x") == ("u", "test://x")  # a client with decode_responses=True
    assert decode(b"zz") == ("zz", None)


def test_an_unknown_message_is_logged_and_ignored(redis_managers, listen_on, redis_server, caplog):
    manager = redis_managers()
    reader = listen_on(manager, 1, wanted(tools=True))
    client = redis_server.client()
    try:
        client.publish(manager.channel, b"?future kind")
    finally:
        client.close()
    manager.tools_list_changed()
    assert reader.take_json(1) == [expected(TOOLS, 1)]
    assert any("unknown message" in r.getMessage() for r in caplog.records)


FORK_SCRIPT = """
import json, os, sys, time
from session_manager import StreamController
from session_manager.redis._subscriptions import RedisSubscriptionManager
from session_manager.subscriptions import ListenFilter

url, prefix = sys.argv[1:3]
manager = RedisSubscriptionManager(url, prefix=prefix)

def first_data(controller, timeout=10):
    deadline = time.monotonic() + timeout
    for chunk in controller:  # pings every 0.2 s keep the deadline checked
        if chunk.startswith(b"data: "):
            return json.loads(chunk[6:])["method"].split("/")[1]
        if time.monotonic() > deadline:
            return None

mine = StreamController(keepalive=0.2)
manager.create("parent", ListenFilter(prompts_list_changed=True), mine)  # the listener runs before the fork
pid = os.fork()
if pid == 0:  # like a gunicorn --preload worker: same manager object, new process
    ok = False
    try:
        assert len(manager) == 0 and not manager.listening
        theirs = StreamController(keepalive=0.2)
        manager.create("child", ListenFilter(tools_list_changed=True), theirs)
        assert manager.listening and len(manager) == 1
        manager.prompts_list_changed()  # reaches the parent
        ok = first_data(theirs) == "tools"
        manager.close()
    finally:
        os._exit(0 if ok else 1)
got = first_data(mine)
status = None
deadline = time.monotonic() + 10
while status is None and time.monotonic() < deadline:  # until the child got one (its listener may start late)
    manager.tools_list_changed()
    time.sleep(0.05)
    done, code = os.waitpid(pid, os.WNOHANG)
    status = os.waitstatus_to_exitcode(code) if done else None
print(got, status)
manager.close()
"""


def test_a_forked_process_starts_afresh_and_both_are_notified(redis_server, redis_prefix):
    result = run_python(FORK_SCRIPT, redis_server.url, redis_prefix)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["prompts", "0"], result.stdout + result.stderr


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()

import json, sys
import gevent
from session_manager import StreamController
from session_manager.redis._subscriptions import RedisSubscriptionManager
from session_manager.subscriptions import ListenFilter

url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
listeners = RedisSubscriptionManager(url, prefix=prefix)
publisher = RedisSubscriptionManager(url, prefix=prefix)
received, ready = {}, []

def listen(i):
    controller = StreamController(keepalive=0.2)
    listeners.create(i, ListenFilter(tools_list_changed=True, resource_subscriptions=frozenset({f"r{i % 2}"})), controller)
    ready.append(i)
    got = []
    for chunk in controller:
        for line in chunk.split(b"\\n"):
            if line.startswith(b"data: "):
                message = json.loads(line[6:])
                got.append((message["method"], message["params"].get("uri"),
                            message["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"]))
        if len(got) >= 2:
            break
    received[i] = got

greenlets = [gevent.spawn(listen, i) for i in range(count)]
with gevent.Timeout(30):
    while len(ready) < count:
        gevent.sleep(0.01)
publisher.tools_list_changed()
publisher.resource_updated("r1")
publisher.resource_updated("r0")
gevent.joinall(greenlets, timeout=30)
ok = sum(
    got == [("notifications/tools/list_changed", None, i), ("notifications/resources/updated", f"r{i % 2}", i)]
    for i, got in received.items()
)
print(json.dumps({"ok": ok, "publisher_listening": publisher.listening}))
listeners.close(); publisher.close()
"""


def test_gevent_greenlets_listen_and_get_their_notifications(redis_server, redis_prefix):
    count = 200
    result = run_python(GEVENT_SCRIPT, redis_server.url, redis_prefix, str(count), timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"ok": count, "publisher_listening": False}


def test_listen_streams_stay_open_across_a_redis_restart(private_redis, listen_on, caplog):
    caplog.set_level(logging.INFO, logger="session_manager.redis")
    holder = RedisSubscriptionManager(private_redis.url, prefix="restart:")
    publisher = RedisSubscriptionManager(private_redis.url, prefix="restart:")
    try:
        reader = listen_on(holder, "h", wanted(tools=True, prompts=True))
        publisher.tools_list_changed()
        assert reader.take_json(1) == [expected(TOOLS, "h")]

        private_redis.stop()
        with pytest.raises(BackendUnavailableError):
            publisher.tools_list_changed()
        private_redis.start()

        arrived = None
        deadline = time.monotonic() + 20
        while arrived is None and time.monotonic() < deadline:
            try:
                publisher.tools_list_changed()
            except BackendUnavailableError:
                pass
            try:
                arrived = reader.messages.get(timeout=0.2)
            except queue.Empty:
                pass
        assert arrived is not None, "no notification arrived after the restart"
        assert json.loads(arrived) == expected(TOOLS, "h")
        assert not reader.controller.closed
        publisher.prompts_list_changed()
        got = reader.take_json(1)
        while got[0]["method"] == TOOLS:  # a late retry may still come first
            got = reader.take_json(1)
        assert got == [expected(PROMPTS, "h")]
        assert len(holder) == 1
        records = [r.getMessage() for r in caplog.records]
        assert any("disconnected" in m or "lost its connection" in m for m in records), records
        assert any("resubscribed" in m for m in records), records
    finally:
        holder.close()
        publisher.close()


def test_create_fails_clearly_while_redis_is_down(private_redis):
    manager = RedisSubscriptionManager(private_redis.url, prefix="down:", socket_timeout=0.5)
    try:
        private_redis.stop()
        controller = StreamController()
        with pytest.raises(BackendUnavailableError, match="listener"):
            manager.create(1, wanted(tools=True), controller)
        assert len(manager) == 0
        with pytest.raises(BackendUnavailableError):
            manager.resource_updated("test://a")
    finally:
        manager.close()


def test_in_memory_manager_repr_and_context_manager():
    with InMemorySubscriptionManager() as manager:
        manager.create(1, wanted(uris=("test://a",)), StreamController())
        assert "streams=1 uris=2" in repr(manager)
    assert len(manager) == 0
