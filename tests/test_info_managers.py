"""Behaviour suite every InfoSessionManager backend must pass."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from session_manager import (
    LOG_LEVELS,
    InfoSessionManager,
    InMemoryInfoSessionManager,
    SessionInfo,
    SessionLimitError,
    SessionNotFoundError,
    SessionQuota,
)
from session_manager.redis import RedisInfoSessionManager

from .conftest_redis import unique_prefix
from .resume_support import wait_until


def test_lifecycle(info, new_id):
    sid = new_id()
    assert not info.exists(sid)
    assert info.get(sid) is None
    info.create(sid)
    assert info.exists(sid)
    assert info.get(sid) == SessionInfo()
    info.delete(sid)
    assert not info.exists(sid)
    info.delete(sid)  # idempotent


def test_create_twice_is_an_error(info, new_id):
    sid = new_id()
    info.create(sid)
    with pytest.raises(ValueError, match="already exists"):
        info.create(sid)


def test_create_with_initialize_params(info, new_id):
    sid = new_id()
    client = {"name": "c", "version": "1.0"}
    caps = {"roots": {"listChanged": True}, "sampling": {}}
    info.create(sid, protocol_version="2025-11-25", client_info=client, client_capabilities=caps)
    assert info.get(sid) == SessionInfo("2025-11-25", client, caps, None)
    assert info.get_protocol_version(sid) == "2025-11-25"
    assert info.get_client_info(sid) == client
    assert info.get_client_capabilities(sid) == caps
    assert info.get_log_level(sid) is None


def test_getters_return_none_for_unknown(info, new_id):
    sid = new_id()
    assert info.get_client_info(sid) is None
    assert info.get_client_capabilities(sid) is None
    assert info.get_log_level(sid) is None
    assert info.get_protocol_version(sid) is None


def test_setters_roundtrip(info, new_id):
    sid = new_id()
    info.create(sid)
    info.set_client_info(sid, {"name": "x", "nested": {"a": [1, 2, None]}})
    info.set_client_capabilities(sid, {"elicitation": {}})
    info.set_protocol_version(sid, "2025-06-18")
    assert info.get_client_info(sid) == {"name": "x", "nested": {"a": [1, 2, None]}}
    assert info.get_client_capabilities(sid) == {"elicitation": {}}
    assert info.get_protocol_version(sid) == "2025-06-18"


@pytest.mark.parametrize("level", LOG_LEVELS)
def test_log_levels_roundtrip(info, new_id, level):
    sid = new_id()
    info.create(sid)
    info.set_log_level(sid, level)
    assert info.get_log_level(sid) == level
    assert info.get(sid).log_level == level


@pytest.mark.parametrize("level", ["DEBUG", "verbose", "", None, 3])
def test_invalid_log_level_names_valid_ones(info, new_id, level):
    sid = new_id()
    info.create(sid)
    info.set_log_level(sid, "error")
    with pytest.raises(ValueError, match="debug, info, notice, warning, error, critical, alert, emergency"):
        info.set_log_level(sid, level)
    assert info.get_log_level(sid) == "error"


def test_values_are_copied_in_and_out(info, new_id):
    sid = new_id()
    client = {"name": "c", "tags": ["a"]}
    info.create(sid, client_info=client)
    client["tags"].append("mutated-after-set")
    out = info.get_client_info(sid)
    out["name"] = "mutated-after-get"
    assert info.get_client_info(sid) == {"name": "c", "tags": ["a"]}


def test_setters_on_missing_session_raise(info, new_id):
    sid = new_id()
    for call in (
        lambda: info.set_client_info(sid, {}),
        lambda: info.set_client_capabilities(sid, {}),
        lambda: info.set_log_level(sid, "info"),
        lambda: info.set_protocol_version(sid, "2025-11-25"),
        lambda: info.add_subscription(sid, "file:///a"),
    ):
        with pytest.raises(SessionNotFoundError, match="does not exist"):
            call()
    assert not info.exists(sid)
    assert info.get_subscriptions("file:///a") == []


def test_subscriptions(info, new_id):
    a, b = new_id(), new_id()
    info.create(a)
    info.create(b)
    uri = f"file:///{a}"
    info.add_subscription(a, uri)
    info.add_subscription(a, uri)  # idempotent
    info.add_subscription(b, uri)
    info.add_subscription(a, uri + "/other")
    assert sorted(info.get_subscriptions(uri)) == sorted([a, b])
    info.remove_subscription(b, uri)
    info.remove_subscription(b, uri)  # idempotent
    assert info.get_subscriptions(uri) == [a]
    assert info.get_subscriptions(uri + "/nobody") == []


def test_delete_removes_every_subscription(info, new_id):
    a, b = new_id(), new_id()
    info.create(a)
    info.create(b)
    uris = [f"res://{a}/{i}" for i in range(5)]
    for uri in uris:
        info.add_subscription(a, uri)
        info.add_subscription(b, uri)
    info.delete(a)
    for uri in uris:
        assert info.get_subscriptions(uri) == [b]
    assert info.get(a) is None
    info.create(a)  # the id can be reused and starts clean
    assert info.get(a) == SessionInfo()
    assert all(info.get_subscriptions(uri) == [b] for uri in uris)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda i, s: i.create(42), TypeError),
        (lambda i, s: i.create("bad id"), ValueError),
        (lambda i, s: i.set_client_info(s, ["not", "a", "dict"]), TypeError),
        (lambda i, s: i.set_client_info(s, {"x": object()}), TypeError),
        (lambda i, s: i.set_client_capabilities(s, "caps"), TypeError),
        (lambda i, s: i.set_protocol_version(s, 2025), TypeError),
        (lambda i, s: i.add_subscription(s, None), TypeError),
        (lambda i, s: i.add_subscription(s, ""), ValueError),
        (lambda i, s: i.get_subscriptions(b"uri"), TypeError),
        (lambda i, s: i.exists(None), TypeError),
        (lambda i, s: i.create(s, client_info="x"), TypeError),
    ],
)
def test_bad_input_raises_and_leaves_state_alone(info, new_id, call, error):
    sid, other = new_id(), new_id()
    info.create(sid, client_info={"name": "me"})
    info.create(other, client_info={"name": "other"})
    info.set_log_level(other, "warning")
    info.add_subscription(other, "res://x")
    with pytest.raises(error) as excinfo:
        call(info, sid)
    assert str(excinfo.value)
    assert info.get(sid).client_info == {"name": "me"}
    assert info.get(other) == SessionInfo(None, {"name": "other"}, None, "warning")
    assert info.get_subscriptions("res://x") == [other]


def test_a_token_is_claimed_once_until_its_ttl_passes(info):
    token = f"tok-{uuid.uuid4().hex}"
    assert info.claim(token, 0.3) is True
    assert info.claim(token, 0.3) is False  # single use, whichever process asks
    assert info.claim(token + "-other", 0.3) is True
    time.sleep(0.45)
    assert info.claim(token, 0.3) is True  # forgotten with its ttl: nothing kept forever


def test_shared_secrets_are_stable_per_name_and_differ_between_names(info):
    secret = info.shared_secret("request-state")
    assert isinstance(secret, bytes) and len(secret) == 32
    assert info.shared_secret("request-state") == secret
    assert info.shared_secret("other") != secret


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m: m.claim(None, 1), TypeError),
        (lambda m: m.claim("t", 0), ValueError),
        (lambda m: m.shared_secret(b"x"), TypeError),
    ],
)
def test_claims_and_secrets_refuse_bad_input(info, call, error):
    with pytest.raises(error):
        call(info)


# -- session caps (SessionQuota) ---------------------------------------------------

#: Info managers with a given session_ttl, one per backend of tests/backends.py's INFO_BACKENDS.
WITH_TTL: dict[str, Callable[[pytest.FixtureRequest, float], InfoSessionManager]] = {
    "memory": lambda request, ttl: InMemoryInfoSessionManager(session_ttl=ttl),
    "redis": lambda request, ttl: RedisInfoSessionManager(
        request.getfixturevalue("redis_server").url, prefix=unique_prefix(), session_ttl=ttl
    ),
}


@pytest.fixture(params=sorted(WITH_TTL))
def short_lived(request: pytest.FixtureRequest) -> Iterator[Callable[[float], InfoSessionManager]]:
    """``make(ttl)``: a fresh info manager whose sessions expire after *ttl* seconds idle, once per backend."""
    made: list[InfoSessionManager] = []

    def make(ttl: float) -> InfoSessionManager:
        made.append(WITH_TTL[request.param](request, ttl))
        return made[-1]

    yield make
    for manager in made:
        manager.close()


def refused(info, sid, quota) -> SessionLimitError:
    """Create *sid* past a cap: the error, and nothing created."""
    with pytest.raises(SessionLimitError) as excinfo:
        info.create(sid, client_info={"name": "over"}, quota=quota)
    assert not info.exists(sid)
    assert 1 <= excinfo.value.retry_after <= 60
    return excinfo.value


def test_the_server_cap_counts_every_session(info, new_id):
    quota = SessionQuota(max_sessions=3)
    info.create(new_id())  # created without a quota, still counted
    kept = [new_id(), new_id()]
    for sid in kept:
        info.create(sid, quota=quota)
    error = refused(info, new_id(), quota)
    assert (error.scope, error.limit) == ("server", 3)
    assert "3 sessions" in str(error)
    assert all(info.exists(sid) for sid in kept)
    info.create(new_id(), quota=SessionQuota(max_sessions=4))  # caps are per call: a larger one fits
    info.create(new_id())  # no quota, no cap


def test_the_principal_cap_counts_the_sessions_of_that_principal_only(info, new_id):
    alice = SessionQuota(max_per_principal=2, principal="alice")
    for _ in range(2):
        info.create(new_id(), quota=alice)
    error = refused(info, new_id(), alice)
    assert (error.scope, error.limit) == ("principal", 2)
    info.create(new_id(), quota=SessionQuota(max_per_principal=2, principal="bob"))  # another principal
    info.create(new_id(), quota=SessionQuota(max_per_principal=2))  # no principal: no per-principal count
    info.create(new_id(), quota=SessionQuota(max_per_principal=2, principal=""))  # "" is a principal too
    refused(info, new_id(), alice)


def test_the_server_cap_is_checked_before_the_principal_cap(info, new_id):
    quota = SessionQuota(max_sessions=1, max_per_principal=1, principal="alice")
    info.create(new_id(), quota=quota)
    assert refused(info, new_id(), quota).scope == "server"


def test_a_deleted_session_frees_its_slot(info, new_id):
    quota = SessionQuota(max_sessions=5, max_per_principal=2, principal="alice")
    first, second = new_id(), new_id()
    info.create(first, quota=quota)
    info.create(second, quota=quota)
    refused(info, new_id(), quota)
    info.delete(first)
    info.delete(first)  # idempotent: frees nothing more
    third = new_id()
    info.create(third, quota=quota)
    refused(info, new_id(), quota)
    assert info.exists(second) and info.exists(third)


def test_an_existing_id_is_refused_as_before_and_counts_once(info, new_id):
    quota = SessionQuota(max_sessions=2)
    sid = new_id()
    info.create(sid, quota=quota)
    with pytest.raises(ValueError, match="already exists"):
        info.create(sid, quota=quota)
    info.create(new_id(), quota=quota)  # the failed create took no slot
    refused(info, new_id(), quota)


def test_an_expired_session_frees_its_slot(short_lived, new_id):
    info = short_lived(0.3)
    quota = SessionQuota(max_sessions=2, max_per_principal=1, principal="alice")
    info.create(new_id(), quota=quota)
    info.create(new_id(), quota=SessionQuota(max_sessions=2))
    assert refused(info, new_id(), quota).retry_after == 1  # the oldest expires within the second
    fresh = new_id()

    def created() -> bool:
        try:
            info.create(fresh, quota=quota)
        except SessionLimitError:
            return False
        return True

    assert wait_until(created, timeout=10, interval=0.05)  # no call touched the old ones: they expired


def test_a_session_in_use_keeps_its_slot_past_its_first_ttl(short_lived, new_id):
    info = short_lived(0.4)
    quota = SessionQuota(max_sessions=1)
    sid = new_id()
    info.create(sid, quota=quota)
    deadline = time.monotonic() + 1.2  # three ttls, every call refreshing the session
    while time.monotonic() < deadline:
        assert info.get_log_level(sid) is None and info.exists(sid)
        refused(info, new_id(), quota)
        time.sleep(0.1)


def test_concurrent_creates_never_exceed_a_cap(info, new_id):
    """16 threads race to create 400 sessions under a cap of 30 (12 per principal): exactly the caps fit."""
    principals = ("alice", "bob", "carol")
    results: dict[str, list[str]] = {"created": [], "server": [], "principal": []}
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker(n: int) -> None:
        start.wait(10)
        for i in range(25):
            sid = new_id()
            quota = SessionQuota(max_sessions=30, max_per_principal=12, principal=principals[(n + i) % 3])
            try:
                info.create(sid, quota=quota)
                outcome = "created"
            except SessionLimitError as exc:
                outcome = exc.scope
            with lock:
                results[outcome].append(f"{quota.principal} {sid}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert sum(map(len, results.values())) == 400
    created = [entry.split() for entry in results["created"]]
    assert len(created) == 30
    assert all(info.exists(sid) for _, sid in created)
    per_principal = {p: sum(1 for who, _ in created if who == p) for p in principals}
    assert all(count <= 12 for count in per_principal.values()), per_principal
    refused_ids = [entry.split()[1] for entry in results["server"] + results["principal"]]
    assert not any(info.exists(sid) for sid in refused_ids)
    refused(info, new_id(), SessionQuota(max_sessions=30))


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: SessionQuota(max_sessions=0), ValueError),
        (lambda: SessionQuota(max_per_principal=-1), ValueError),
        (lambda: SessionQuota(max_sessions=True), ValueError),
        (lambda: SessionQuota(max_sessions=2.0), ValueError),
        (lambda: SessionQuota(principal=b"alice"), TypeError),
    ],
)
def test_bad_quotas_are_refused(make, error):
    with pytest.raises(error):
        make()


def test_create_refuses_a_quota_that_is_not_one(info, new_id):
    sid = new_id()
    with pytest.raises(TypeError, match="SessionQuota"):
        info.create(sid, quota={"max_sessions": 1})
    assert not info.exists(sid)
    assert info.enforces_quotas
