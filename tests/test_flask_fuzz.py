"""Hypothesis-generated HTTP requests against a live endpoint.

Methods, headers (session id, principal, protocol version, media types,
Host, Origin), bodies (random bytes, JSON, JSON-RPC-shaped messages with odd
ids and params, batches, oversized) are thrown at a threaded werkzeug
server. Every answer must be a non-5xx with a JSON-RPC error body when it is
an error, and a victim session (another principal, with a stream, a log
level and a subscription) must come out exactly as it went in.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import requests
from flask import request as flask_request
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from session_manager.flask import SUPPORTED_PROTOCOL_VERSIONS

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    Harness,
    new_token,
    reply_of,
    serve,  # noqa: F401 - fixture
)

MAX_BODY = 4096
VICTIM = "alice"

printable = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
ids = st.one_of(st.integers(), st.text(max_size=20), st.none(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2))
known_methods = st.sampled_from(
    [
            "initialize",
            "ping",
            "logging/setLevel",
            "resources/subscribe",
            "resources/unsubscribe",
            "test/ctx",
            "test/emit",
            "test/error",
            "test/crash",
            "test/not_dict",
            "test/not_json",
            "notifications/initialized",
            "notifications/cancelled",
            "tools/call",
    ]
)
methods = st.one_of(known_methods, known_methods, known_methods, st.text(max_size=20), json_scalars)
mcp_params = st.fixed_dictionaries(
        {},
        optional={
            "level": st.one_of(st.sampled_from(["debug", "info", "error", "emergency", "loud"]), json_scalars),
            "uri": st.one_of(st.sampled_from(["note://v", "reject://me", ""]), json_scalars),
            "protocolVersion": st.one_of(st.sampled_from([*SUPPORTED_PROTOCOL_VERSIONS, "2024-11-05"]), json_scalars),
            "clientInfo": json_values,
            "capabilities": json_values,
            "count": st.integers(min_value=-5, max_value=5),
            "log_levels": st.lists(st.sampled_from(["debug", "info", "error"]), max_size=3),
            "_meta": st.one_of(json_values, st.fixed_dictionaries({"progressToken": st.one_of(st.integers(), st.text(max_size=5), json_scalars)})),
        },
)
params = st.one_of(mcp_params, mcp_params, mcp_params, st.dictionaries(st.text(max_size=10), json_values, max_size=4), json_values)
arbitrary_messages = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.one_of(st.just("2.0"), json_scalars),
        "id": ids,
        "method": methods,
        "params": params,
        "result": json_values,
        "error": st.one_of(json_values, st.fixed_dictionaries({"code": st.integers(), "message": st.text(max_size=10)})),
    },
)
request_ids = st.one_of(st.integers(), st.text(max_size=10))
good_requests = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": request_ids, "method": known_methods}, optional={"params": mcp_params}
)
any_requests = st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "id": request_ids, "method": methods}, optional={"params": params})
notifications = st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "method": methods}, optional={"params": params})
client_responses = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": request_ids}, optional={"result": json_values, "error": json_values}
)


def bodies() -> st.SearchStrategy[bytes]:
    """Mostly well-formed messages; also anything JSON, batches, random bytes, sizes around the limit."""
    as_json = [good_requests] * 4 + [any_requests, notifications, client_responses, arbitrary_messages]
    as_json += [st.lists(good_requests, max_size=3), json_values]
    kinds = [kind.map(lambda value: json.dumps(value).encode()) for kind in as_json]
    kinds.append(st.binary(max_size=200))
    kinds.append(st.integers(min_value=MAX_BODY - 10, max_value=MAX_BODY + 10).map(lambda n: b"{" + b" " * (n - 2) + b"}"))
    return st.sampled_from(kinds).flatmap(lambda kind: kind)


def fuzz_requests(victim_sid: str, attacker_sid: str) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly valid requests in the attacker's session, often with a few headers changed."""
    valid: dict[str, str | None] = {
        "Mcp-Session-Id": attacker_sid,
        "X-Principal": "mallory",
        "MCP-Protocol-Version": LATEST,
        "Content-Type": "application/json",
        "Accept": ACCEPT_BOTH,
        "Origin": None,
        "Host": None,
    }
    variants = {
        "Mcp-Session-Id": st.sampled_from([victim_sid, new_token(), attacker_sid[:-1]]),
        "X-Principal": st.sampled_from(["ALICE", "alice ", "alice:x", "bob"]),
        "MCP-Protocol-Version": st.sampled_from([*SUPPORTED_PROTOCOL_VERSIONS, "2024-11-05"]),
        "Content-Type": st.sampled_from(["application/json; charset=utf-8", "text/plain", "application/jsonx"]),
        "Accept": st.sampled_from(["application/json", "text/event-stream", "*/*", "text/html"]),
        "Origin": st.sampled_from(["http://localhost:1", "http://evil.example", "null"]),
        "Host": st.sampled_from(["localhost", "evil.example", "127.0.0.1:1", "[::1]", ".", "a..b"]),
    }
    one_change = st.sampled_from(sorted(variants)).flatmap(
        lambda name: st.one_of(st.none(), variants[name], printable).map(lambda value: {name: value})
    )
    changes = st.lists(one_change, max_size=3).map(lambda items: {k: v for item in items for k, v in item.items()})
    return st.fixed_dictionaries(
        {
            "method": st.sampled_from(["POST"] * 8 + ["GET", "DELETE", "PUT", "OPTIONS", "HEAD", "PATCH", "BREW"]),
            "body": bodies(),
            "headers": st.sampled_from([st.just({}), changes]).flatmap(lambda kind: kind).map(lambda changed: {**valid, **changed}),
        }
    )


def is_initialize(body: bytes) -> bool:
    with contextlib.suppress(ValueError):
        message = json.loads(body)
        return isinstance(message, dict) and message.get("method") == "initialize"
    return False


def principal() -> str | None:
    return flask_request.headers.get("X-Principal")


def check_answer(response: requests.Response, method: str) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    content_type = response.headers.get("Content-Type", "")
    if response.status_code >= 400:
        if method == "HEAD":
            return
        assert content_type == "application/json", response.headers
        body = response.json()
        assert body["jsonrpc"] == "2.0" and type(body["error"]["code"]) is int, body
        assert "Traceback" not in response.text
    elif response.status_code in (202, 204):
        assert response.content == b""
    else:
        assert response.status_code == 200
        assert content_type in ("application/json", "text/event-stream"), response.headers


def test_generated_requests_never_5xx_nor_touch_another_session(serve) -> None:  # noqa: F811
    mcp: Harness = serve(principal=principal, max_body_size=MAX_BODY, keepalive=0.2)
    as_victim = {"X-Principal": VICTIM}
    victim_sid = mcp.initialize(**as_victim)
    victim = f"{VICTIM}:{victim_sid}"

    def victim_request(method: str, params: dict[str, Any]) -> dict[str, Any]:
        message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        return reply_of(mcp.post(message, victim_sid, headers=as_victim))

    assert victim_request("logging/setLevel", {"level": "warning"})["result"] == {}
    assert victim_request("resources/subscribe", {"uri": "note://v"})["result"] == {}
    stream = mcp.open_stream(victim_sid, headers=as_victim, wait=False)
    assert stream.status == 200
    stream.start_reader()
    attacker_sid = mcp.initialize(**{"X-Principal": "mallory"})
    attacker = f"mallory:{attacker_sid}"
    before = mcp.managers.info.get(victim)

    session = requests.Session()

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(fuzz_requests(victim_sid, attacker_sid))
    def check(generated: dict[str, Any]) -> None:
        if not mcp.managers.info.exists(attacker):  # deleted by an earlier example: the attacker comes back
            mcp.managers.info.create(attacker, protocol_version=LATEST)
        headers = dict(generated["headers"])  # a None value removes the header, requests' defaults included
        response = session.request(generated["method"], mcp.url, data=generated["body"], headers=headers, timeout=10, stream=True)
        event(f"{generated['method']} -> {response.status_code}")
        try:
            if response.status_code < 300 and not is_initialize(generated["body"]):
                # Only the attacker's own session, under the attacker's principal, ever answers.
                assert (headers["Mcp-Session-Id"], headers["X-Principal"]) == (attacker_sid, "mallory")
            if response.headers.get("Content-Type") == "text/event-stream" and generated["method"] == "GET":
                assert response.status_code == 200  # the attacker's GET stream: just hang up
            else:
                response.content  # noqa: B018 - read the whole answer
                check_answer(response, generated["method"])
        finally:
            response.close()

    check()
    session.close()

    # The victim is exactly as it was, and still fully working.
    assert mcp.managers.info.get(victim) == before
    assert victim in mcp.managers.info.get_subscriptions("note://v")
    assert mcp.managers.streams.has(victim)
    mcp.bp.notify(victim, "notifications/after-fuzz", {"ok": True})
    assert stream.take(1) == [{"jsonrpc": "2.0", "method": "notifications/after-fuzz", "params": {"ok": True}}]
    assert victim_request("ping", {})["result"] == {}
    assert mcp.bp.log(victim, "error", "still here") is True
    assert stream.take(1)[0]["params"]["data"] == "still here"
    response = mcp.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, victim_sid, headers={"X-Principal": "mallory"})
    assert response.status_code == 404
