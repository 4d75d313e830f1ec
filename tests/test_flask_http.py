"""The Streamable HTTP transport over raw HTTP, against a live threaded werkzeug server.

Every status code the transport answers, the JSON-RPC error body that
comes with each, session lifecycle, info bookkeeping, the handler API and
the fan-out API.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

import pytest
import requests

from session_manager import SessionManagers
from session_manager.flask import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    FlakyInfo,
    Harness,
    RawStream,
    TestHandler,
    events_of,
    initialize_message,
    new_token,
    reply_of,
    serve,  # noqa: F401 - fixture
    wait_until,
)

PING = {"jsonrpc": "2.0", "id": 7, "method": "ping"}


def assert_error(response: requests.Response, status: int, code: int | None = None) -> dict[str, Any]:  # type: ignore[assignment]
    """*response* has *status* and a JSON-RPC error body (with *code*, if given)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["jsonrpc"] == "2.0" and "id" in body and "result" not in body
    assert type(body["error"]["code"]) is int and isinstance(body["error"]["message"], str)
    if code is not None:
        assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return body


@pytest.fixture
def mcp(serve) -> Harness:  # noqa: F811
    return serve()


# -- initialize ----------------------------------------------------------------


def test_initialize_mints_a_session_and_stores_what_the_client_declared(mcp: Harness) -> None:
    response = mcp.post(initialize_message("2025-06-18"), headers={"Mcp-Session-Id": "client-chosen-id"})
    assert response.status_code == 200
    sid = response.headers["Mcp-Session-Id"]
    assert sid != "client-chosen-id" and re.fullmatch(r"[\x21-\x7e]{43}", sid)
    assert not mcp.managers.info.exists("client-chosen-id")
    reply = reply_of(response)
    assert reply["id"] == 0
    assert reply["result"]["protocolVersion"] == "2025-06-18"
    assert reply["result"]["serverInfo"]["name"] and "capabilities" in reply["result"]
    info = mcp.managers.info.get(sid)
    assert info is not None and info.protocol_version == "2025-06-18"
    assert info.client_info == {"name": "flask-tests", "version": "1.0"}
    assert info.client_capabilities == {"roots": {"listChanged": True}}
    assert info.log_level is None


@pytest.mark.parametrize(
    "requested, negotiated",
    [("2025-11-25", "2025-11-25"), ("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"), ("2024-11-05", LATEST), ("9999-01-01", LATEST)],
)
def test_initialize_negotiates_the_protocol_version(mcp: Harness, requested: str, negotiated: str) -> None:
    response = mcp.post(initialize_message(requested))
    assert reply_of(response)["result"]["protocolVersion"] == negotiated
    assert mcp.managers.info.get_protocol_version(response.headers["Mcp-Session-Id"]) == negotiated


def test_session_ids_are_distinct(mcp: Harness) -> None:
    ids = {mcp.initialize() for _ in range(20)}
    assert len(ids) == 20


def test_initialize_result_options_and_handler_fields(serve) -> None:  # noqa: F811
    def handler(message, ctx):
        if message.get("method") == "initialize":
            return {"instructions": "from the handler", "protocolVersion": "1999-01-01"}
        return {}

    mcp = serve(handler, server_info={"name": "srv", "version": "2"}, capabilities={"tools": {}}, instructions="opt")
    result = reply_of(mcp.post(initialize_message()))["result"]
    assert result == {
        "protocolVersion": LATEST,  # negotiated by the transport, whatever the handler says
        "serverInfo": {"name": "srv", "version": "2"},
        "capabilities": {"tools": {}},
        "instructions": "from the handler",
    }


def test_failed_initialize_creates_no_session(serve) -> None:  # noqa: F811
    from session_manager.flask import JsonRpcError

    def handler(message, ctx):
        raise JsonRpcError(-32050, "no thanks")

    mcp = serve(handler)
    response = mcp.post(initialize_message())
    assert response.status_code == 200
    assert "Mcp-Session-Id" not in response.headers
    assert reply_of(response)["error"]["code"] == -32050
    assert len(mcp.managers.info) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "params",
    [{}, {"protocolVersion": 5}, {"protocolVersion": LATEST, "clientInfo": "x"}, {"protocolVersion": LATEST, "capabilities": []}],
)
def test_initialize_with_bad_params_is_400(mcp: Harness, params: dict[str, Any]) -> None:
    body = assert_error(mcp.post({"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": params}), 400, INVALID_PARAMS)
    assert body["id"] == 3


def test_initialize_as_notification_is_400(mcp: Harness) -> None:
    message = initialize_message()
    del message["id"]
    assert_error(mcp.post(message), 400, INVALID_REQUEST)


# -- response formats ------------------------------------------------------------


def test_requests_get_an_sse_stream_with_the_right_headers(mcp: Harness) -> None:
    sid = mcp.initialize()
    response = mcp.post(PING, sid)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Origin" in response.headers["Vary"]
    assert [json.loads(e.data) for e in events_of(response)] == [{"jsonrpc": "2.0", "id": 7, "result": {}}]


def test_the_app_never_sets_a_connection_header(mcp: Harness) -> None:
    sid = mcp.initialize()
    app = mcp.server.server.app
    with app.test_client() as client:
        headers = {"Accept": ACCEPT_BOTH, "Mcp-Session-Id": sid}
        for response in (client.post("/mcp", json=PING, headers=headers), client.get("/mcp", headers=headers, buffered=False)):
            assert "Connection" not in response.headers
            response.close()


def test_json_response_option(serve) -> None:  # noqa: F811
    mcp = serve(json_response=True)
    init = mcp.post(initialize_message())
    assert init.headers["Content-Type"] == "application/json" and init.json()["result"]["protocolVersion"] == LATEST
    response = mcp.post(PING, init.headers["Mcp-Session-Id"])
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"jsonrpc": "2.0", "id": 7, "result": {}}
    # A client that only takes SSE still gets SSE.
    response = mcp.post(PING, init.headers["Mcp-Session-Id"], headers={"Accept": "text/event-stream"})
    assert response.headers["Content-Type"] == "text/event-stream"


def test_a_client_that_only_accepts_json_gets_json(mcp: Harness) -> None:
    sid = mcp.initialize()
    response = mcp.post(PING, sid, headers={"Accept": "application/json"})
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["result"] == {}


def test_json_mode_handler_messages_go_to_the_get_stream(serve) -> None:  # noqa: F811
    mcp = serve(json_response=True)
    sid = mcp.initialize()
    stream = mcp.open_stream(sid)
    reply = mcp.request(sid, "test/emit", {"count": 2, "_meta": {"progressToken": "t"}})
    assert reply["result"]["sent"] == [True] * 4
    events = stream.take(4)
    assert [e["method"] for e in events] == ["notifications/test", "notifications/progress"] * 2


# -- notifications and client responses --------------------------------------------


def test_notifications_and_responses_get_202_and_reach_the_handler(mcp: Harness) -> None:
    sid = mcp.initialize()
    mcp.handler.messages()
    for message in (
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": "s-1", "result": {"roots": []}},
        {"jsonrpc": "2.0", "id": "s-2", "error": {"code": -1, "message": "nope"}},
    ):
        response = mcp.post(message, sid)
        assert response.status_code == 202 and response.content == b""
        assert "Content-Type" not in response.headers
    assert [m.get("method", m.get("id")) for m in mcp.handler.messages()] == ["notifications/initialized", "s-1", "s-2"]


def test_a_failing_handler_on_a_notification_still_gets_202(serve, caplog) -> None:  # noqa: F811
    def handler(message, ctx):
        if message.get("method") == "initialize":
            return {}
        raise RuntimeError("boom")

    mcp = serve(handler)
    sid = mcp.initialize()
    with caplog.at_level(logging.ERROR, logger="session_manager.flask"):
        assert mcp.post({"jsonrpc": "2.0", "method": "notifications/x"}, sid).status_code == 202
    assert "boom" in caplog.text


# -- session header, 400 / 404, DELETE -----------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_missing_session_header_is_400(mcp: Harness, method: str) -> None:
    response = mcp.http.request(
        method, mcp.url, data=json.dumps(PING), headers={"Content-Type": "application/json", "Accept": ACCEPT_BOTH}, timeout=10
    )
    assert_error(response, 400, INVALID_REQUEST)


@pytest.mark.parametrize("sid", [new_token(), "short", "with:colon" + "x" * 33, "é" * 10])
@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_unknown_session_is_404(mcp: Harness, sid: str, method: str) -> None:
    mcp.initialize()
    headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH, "Mcp-Session-Id": sid.encode("utf-8").decode("latin-1")}
    response = mcp.http.request(method, mcp.url, data=json.dumps(PING), headers=headers, timeout=10)
    assert_error(response, 404)


def test_delete_ends_the_session_everywhere(mcp: Harness) -> None:
    sid = mcp.initialize()
    stream = mcp.open_stream(sid)
    assert mcp.request(sid, "resources/subscribe", {"uri": "file:///a"})["result"] == {}
    response = mcp.http.delete(mcp.url, headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}, timeout=10)
    assert response.status_code == 204 and response.content == b""
    assert stream.ended.wait(10)
    assert not mcp.managers.info.exists(sid) and not mcp.managers.streams.has(sid)
    assert mcp.managers.info.get_subscriptions("file:///a") == []
    assert_error(mcp.post(PING, sid), 404)
    assert_error(mcp.http.get(mcp.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid}, timeout=10), 404)
    assert_error(mcp.http.delete(mcp.url, headers={"Mcp-Session-Id": sid}, timeout=10), 404)


def test_a_session_deleted_by_the_app_is_404(mcp: Harness) -> None:
    sid = mcp.initialize()
    mcp.managers.delete(sid)
    assert_error(mcp.post(PING, sid), 404)


# -- protocol version header ---------------------------------------------------------


def test_protocol_version_header(mcp: Harness) -> None:
    sid = mcp.initialize()
    for version in ("2025-11-25", "2025-06-18", "2025-03-26"):
        assert mcp.post(PING, sid, headers={"MCP-Protocol-Version": version}).status_code == 200
    assert mcp.post(PING, sid, headers={"MCP-Protocol-Version": None}).status_code == 200  # absent: 2025-03-26
    for version in ("2024-11-05", "garbage", ""):
        assert_error(mcp.post(PING, sid, headers={"MCP-Protocol-Version": version}), 400, INVALID_REQUEST)
    # 2026-07-28 is served, statelessly: a request naming it must carry its _meta (session or not).
    assert_error(mcp.post(PING, sid, headers={"MCP-Protocol-Version": "2026-07-28"}), 400, INVALID_PARAMS)
    response = mcp.http.get(mcp.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": "x"}, timeout=10)
    assert_error(response, 400)


# -- media types, size, JSON, JSON-RPC ---------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None])
def test_content_type_must_be_json(mcp: Harness, content_type: str) -> None:
    sid = mcp.initialize()
    assert_error(mcp.post(PING, sid, headers={"Content-Type": content_type}), 415)


def test_content_type_parameters_are_fine(mcp: Harness) -> None:
    sid = mcp.initialize()
    assert mcp.post(PING, sid, headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200


@pytest.mark.parametrize("accept", ["text/html", "image/*", "application/json;q=0, text/event-stream;q=0", None])
def test_post_accept_must_allow_json_or_sse(mcp: Harness, accept: str) -> None:
    sid = mcp.initialize()
    assert_error(mcp.post(PING, sid, headers={"Accept": accept}), 406)
    assert_error(mcp.post(initialize_message(), headers={"Accept": accept}), 406)


@pytest.mark.parametrize("accept", ["*/*", "text/*", "application/*", "application/json", "text/event-stream"])
def test_post_accept_wildcards(mcp: Harness, accept: str) -> None:
    sid = mcp.initialize()
    assert reply_of(mcp.post(PING, sid, headers={"Accept": accept}))["result"] == {}


@pytest.mark.parametrize("accept", ["application/json", "text/html", None])
def test_get_needs_accept_event_stream(mcp: Harness, accept: str) -> None:
    sid = mcp.initialize()
    response = mcp.http.get(mcp.url, headers={"Accept": accept, "Mcp-Session-Id": sid}, timeout=10)
    assert_error(response, 406)


def test_body_size_limit(serve) -> None:  # noqa: F811
    mcp = serve(max_body_size=1000)
    sid = mcp.initialize()
    padding = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * 900}}
    assert mcp.post(padding, sid).status_code == 200
    padding["params"]["pad"] = "x" * 1000
    assert_error(mcp.post(padding, sid), 413)
    # Chunked (no Content-Length): the bytes actually read are counted.
    body = json.dumps(padding).encode()
    chunked = mcp.post(iter([body[:500], body[500:]]), sid)
    assert_error(chunked, 413)


def test_default_body_limit_is_4_mib(mcp: Harness) -> None:
    sid = mcp.initialize()
    limit = 4 * 1024 * 1024
    head = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"'
    exact = head + b"x" * (limit - len(head) - 3) + b'"}}'
    assert len(exact) == limit
    assert reply_of(mcp.post(exact, sid))["result"] == {}
    # One byte more is refused from Content-Length alone, before the body is read.
    headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH, "Mcp-Session-Id": sid, "Content-Length": str(limit + 1)}
    stream = RawStream(mcp.port, "POST", "/mcp", headers)
    assert stream.status == 413
    assert json.loads(stream.read_all())["error"]["code"] == -32000
    stream.close()


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"not json", b'{"jsonrpc": "2.0", "id": 1, "method": "ping"', b"\xff\xfe{}", b'{"jsonrpc":"2.0","id":NaN,"method":"x"}', b"[" * 100000],
)
def test_malformed_json_is_a_parse_error(mcp: Harness, body: bytes) -> None:
    sid = mcp.initialize()
    assert assert_error(mcp.post(body, sid), 400, PARSE_ERROR)["id"] is None


@pytest.mark.parametrize(
    "fragment",
    [rb'"\ud800"', rb'"a\uDFFFb"', rb'{"\udbff": 1}', rb"1e999", rb"-1E400"],
    ids=["lone high surrogate", "lone low surrogate", "surrogate in a key", "1e999", "-1E400"],
)
def test_unpaired_surrogates_and_out_of_range_numbers_are_parse_errors_and_create_nothing(
    mcp: Harness, fragment: bytes
) -> None:
    """No UTF-8 reply can carry a lone surrogate, and 1e999 would become infinity: refused before anything runs."""
    sid = mcp.initialize()
    call = b'{"jsonrpc":"2.0","id":5,"method":"test/ctx","params":{"x":%s}}' % fragment
    assert assert_error(mcp.post(call, sid), 400, PARSE_ERROR)["id"] is None
    before = len(mcp.managers.info)
    hello = b'{"jsonrpc":"2.0","id":%s,"method":"initialize","params":{"protocolVersion":"2025-11-25",' % fragment
    hello += b'"capabilities":{},"clientInfo":{"name":"x","version":"1"}}}'
    assert assert_error(mcp.post(hello), 400, PARSE_ERROR)["id"] is None
    assert len(mcp.managers.info) == before  # no session created
    ok = rb'{"jsonrpc":"2.0","id":6,"method":"test/ctx","params":{"x":"\ud83d\ude00","y":1.5e10}}'
    assert reply_of(mcp.post(ok, sid))["result"]["method"] == "test/ctx"  # a surrogate pair is fine


@pytest.mark.parametrize(
    "message, expected_id",
    [
        ([PING], None),
        ([], None),
        ("ping", None),
        (42, None),
        ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, 1),
        ({"id": 1, "method": "ping"}, 1),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": True, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": [1], "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": 2, "method": 5}, 2),
        ({"jsonrpc": "2.0", "id": 2, "method": ""}, 2),
        ({"jsonrpc": "2.0", "id": "a", "method": "ping", "params": [1, 2]}, "a"),
        ({"jsonrpc": "2.0", "id": "a", "method": "ping", "params": None}, "a"),
        ({"jsonrpc": "2.0", "id": 3, "method": "ping", "result": {}}, 3),
        ({"jsonrpc": "2.0", "id": 3, "result": {}, "error": {"code": 1, "message": "x"}}, 3),
        ({"jsonrpc": "2.0", "id": 3, "result": 5}, 3),
        ({"jsonrpc": "2.0", "result": {}}, None),
        ({"jsonrpc": "2.0", "id": 3, "error": "bad"}, 3),
        ({"jsonrpc": "2.0", "id": 3, "error": {"code": "1", "message": "x"}}, 3),
        ({"jsonrpc": "2.0"}, None),
    ],
)
def test_invalid_json_rpc_is_an_invalid_request(mcp: Harness, message: Any, expected_id: Any) -> None:
    sid = mcp.initialize()
    assert assert_error(mcp.post(message, sid), 400, INVALID_REQUEST)["id"] == expected_id


def test_batches_are_refused_even_for_initialize(mcp: Harness) -> None:
    assert_error(mcp.post([initialize_message()]), 400, INVALID_REQUEST)
    assert len(mcp.managers.info) == 0  # type: ignore[arg-type]


# -- methods -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS", "TRACE", "HEAD", "PROPFIND", "BREW"])
def test_other_methods_are_405_with_allow(mcp: Harness, method: str) -> None:
    sid = mcp.initialize()
    response = mcp.http.request(method, mcp.url, headers={"Mcp-Session-Id": sid, "Accept": ACCEPT_BOTH}, timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST, DELETE"
    if method != "HEAD":
        assert_error(response, 405)


def test_the_405_fallback_leaves_other_routes_alone(mcp: Harness) -> None:
    response = mcp.http.request("BREW", f"http://127.0.0.1:{mcp.port}/elsewhere", timeout=10)
    assert response.status_code == 404


# -- Host and Origin -----------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "localhost:1234", "127.0.0.1:80", "[::1]:9", "LOCALHOST"])
def test_local_hosts_are_allowed(mcp: Harness, host: str) -> None:
    assert mcp.post(initialize_message(), headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:80", "localhost.evil.com", "127.0.0.2", "localhost:*", "", "[::2]"])
def test_other_hosts_are_403(mcp: Harness, host: str) -> None:
    sid = mcp.initialize()
    assert_error(mcp.post(initialize_message(), headers={"Host": host}), 403)
    assert_error(mcp.post(PING, sid, headers={"Host": host}), 403)
    assert_error(mcp.http.delete(mcp.url, headers={"Mcp-Session-Id": sid, "Host": host}, timeout=10), 403)
    assert mcp.managers.info.exists(sid)


def test_host_allowlist_is_configurable(serve) -> None:  # noqa: F811
    custom = serve(allowed_hosts=["mcp.example.com", "other.example.com:8443"])
    assert custom.post(initialize_message(), headers={"Host": "mcp.example.com:1"}).status_code == 200
    assert custom.post(initialize_message(), headers={"Host": "other.example.com:8443"}).status_code == 200
    assert_error(custom.post(initialize_message(), headers={"Host": "other.example.com:8444"}), 403)
    assert_error(custom.post(initialize_message(), headers={"Host": "localhost"}), 403)
    unchecked = serve(allowed_hosts=None)
    assert unchecked.post(initialize_message(), headers={"Host": "anything.example"}).status_code == 200


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1", "https://[::1]:8443", "HTTP://LOCALHOST:1"])
def test_local_origins_are_allowed(mcp: Harness, origin: str) -> None:
    assert mcp.post(initialize_message(), headers={"Origin": origin}).status_code == 200


@pytest.mark.parametrize("origin", ["http://evil.example.com", "null", "http://localhost.evil.com", "file://", "localhost", "ftp://localhost"])
def test_other_origins_are_403(mcp: Harness, origin: str) -> None:
    sid = mcp.initialize()
    assert_error(mcp.post(initialize_message(), headers={"Origin": origin}), 403)
    assert_error(mcp.http.get(mcp.url, headers={"Origin": origin, "Accept": "text/event-stream", "Mcp-Session-Id": sid}, timeout=10), 403)


def test_origin_allowlist_is_configurable(serve) -> None:  # noqa: F811
    mcp = serve(allowed_origins=["https://app.example.com"])
    assert mcp.post(initialize_message(), headers={"Origin": "https://app.example.com"}).status_code == 200
    assert_error(mcp.post(initialize_message(), headers={"Origin": "http://app.example.com"}), 403)
    assert_error(mcp.post(initialize_message(), headers={"Origin": "http://localhost:1"}), 403)
    assert serve(allowed_origins=None).post(initialize_message(), headers={"Origin": "http://x.y"}).status_code == 200


def test_bad_allowlist_entries_are_refused_at_construction(serve) -> None:  # noqa: F811
    from session_manager.flask import McpBlueprint

    with pytest.raises(ValueError):
        McpBlueprint(TestHandler(), allowed_hosts=["http://x"])
    with pytest.raises(ValueError):
        McpBlueprint(TestHandler(), allowed_origins=["localhost"])
    with pytest.raises(TypeError):
        McpBlueprint(TestHandler(), allowed_hosts="localhost")


# -- GET streams -----------------------------------------------------------------------


def test_get_stream_headers_and_second_get_is_409(mcp: Harness) -> None:
    sid = mcp.initialize()
    stream = mcp.open_stream(sid)
    assert stream.headers["content-type"] == "text/event-stream"
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-accel-buffering"] == "no"
    second = mcp.http.get(mcp.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid}, timeout=10)
    assert_error(second, 409)
    mcp.bp.notify(sid, "notifications/still", {"ok": True})
    assert stream.take(1) == [{"jsonrpc": "2.0", "method": "notifications/still", "params": {"ok": True}}]


def test_a_gone_client_is_unregistered_and_can_reconnect(serve) -> None:  # noqa: F811
    mcp = serve(keepalive=0.1)
    sid = mcp.initialize()
    stream = mcp.open_stream(sid)
    stream.close()
    wait_until(lambda: not mcp.managers.streams.has(sid), timeout=10, what="the stream to be unregistered")
    again = mcp.open_stream(sid)
    mcp.bp.notify(sid, "notifications/again")
    assert again.take(1)[0]["method"] == "notifications/again"


def test_keepalive_pings_on_idle_streams(serve) -> None:  # noqa: F811
    mcp = serve(keepalive=0.05)
    sid = mcp.initialize()
    stream = mcp.open_stream(sid, wait=False)
    assert stream.status == 200
    chunks = stream.chunks()
    seen = b""
    for _ in range(50):
        seen += next(chunks)
        if seen.count(b": ping\n\n") >= 2:
            break
    assert seen.startswith(b": open\n\n") and seen.count(b": ping\n\n") >= 2
    stream.close()


# -- backend failures -----------------------------------------------------------------


def test_backend_unavailable_is_503(serve) -> None:  # noqa: F811
    info = FlakyInfo()
    mcp = serve(managers=SessionManagers(info=info))
    sid = mcp.initialize()
    info.down = True
    assert_error(mcp.post(PING, sid), 503)
    assert_error(mcp.post(initialize_message()), 503)
    assert_error(mcp.http.get(mcp.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid}, timeout=10), 503)
    assert_error(mcp.http.delete(mcp.url, headers={"Mcp-Session-Id": sid}, timeout=10), 503)
    info.down = False
    assert reply_of(mcp.post(PING, sid))["result"] == {}


def test_stream_backend_unavailable_is_503(serve) -> None:  # noqa: F811
    from session_manager import BackendUnavailableError, InMemoryStreamSessionManager

    class DownStreams(InMemoryStreamSessionManager):
        def create(self, session_id, controller):
            raise BackendUnavailableError("down")

    mcp = serve(managers=SessionManagers(streams=DownStreams()))
    sid = mcp.initialize()
    assert_error(mcp.http.get(mcp.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid}, timeout=10), 503)


# -- handler API --------------------------------------------------------------------------


def test_ctx_is_hydrated_from_the_info_manager(mcp: Harness) -> None:
    sid = mcp.initialize("2025-06-18")
    mcp.request(sid, "logging/setLevel", {"level": "warning"})
    result = mcp.request(sid, "test/ctx", {"_meta": {"progressToken": 99}}, id="r-1")["result"]
    assert result == {
        "session_id": sid,
        "protocol_version": "2025-06-18",
        "client_info": {"name": "flask-tests", "version": "1.0"},
        "client_capabilities": {"roots": {"listChanged": True}},
        "log_level": "warning",
        "request_id": "r-1",
        "method": "test/ctx",
        "progress_token": 99,
    }


def test_handler_messages_stream_before_the_response(mcp: Harness) -> None:
    sid = mcp.initialize()
    mcp.request(sid, "logging/setLevel", {"level": "info"})
    response = mcp.post(
        {"jsonrpc": "2.0", "id": 5, "method": "test/emit", "params": {"count": 2, "log_levels": ["debug", "info", "error"], "_meta": {"progressToken": "tok"}}},
        sid,
    )
    messages = [json.loads(e.data) for e in events_of(response)]
    assert [m.get("method") for m in messages] == [
        "notifications/test",
        "notifications/progress",
        "notifications/message",
        "notifications/message",
    ] * 2 + [None]
    assert messages[1]["params"] == {"progressToken": "tok", "progress": 1, "total": 2, "message": "step 1"}
    assert [m["params"]["level"] for m in messages if m.get("method") == "notifications/message"] == ["info", "error"] * 2
    assert messages[2]["params"]["logger"] == "test"
    assert messages[-1]["id"] == 5
    assert messages[-1]["result"]["sent"] == [True, True, False, True, True] * 2


def test_progress_without_a_token_is_a_no_op(mcp: Harness) -> None:
    sid = mcp.initialize()
    response = mcp.post({"jsonrpc": "2.0", "id": 1, "method": "test/emit", "params": {"count": 2}}, sid)
    messages = [json.loads(e.data) for e in events_of(response)]
    assert [m.get("method") for m in messages] == ["notifications/test", "notifications/test", None]
    assert messages[-1]["result"]["sent"] == [True, False, True, False]


def test_handler_output_is_live_not_buffered(mcp: Harness) -> None:
    """The first progress event arrives while the handler is still blocked."""
    sid = mcp.initialize()
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "test/block", "params": {"_meta": {"progressToken": 1}}}).encode()
    headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH, "Mcp-Session-Id": sid}
    stream = RawStream(mcp.port, "POST", "/mcp", headers, body)
    assert stream.status == 200
    stream.start_reader()
    first = stream.take(1)[0]
    assert first["params"]["message"] == "started"
    assert not mcp.handler.release.is_set()
    mcp.handler.release.set()
    second, reply = stream.take(2)
    assert second["params"]["message"] == "finished" and reply["result"] == {"released": True}
    assert stream.ended.wait(10)


def test_json_rpc_errors_from_the_handler(mcp: Harness) -> None:
    sid = mcp.initialize()
    assert mcp.request(sid, "test/error", id=4) == {
        "jsonrpc": "2.0",
        "id": 4,
        "error": {"code": -32050, "message": "custom failure", "data": {"detail": 42}},
    }
    assert mcp.request(sid, "no/such/method")["error"]["code"] == -32601


@pytest.mark.parametrize("method", ["test/crash", "test/not_dict", "test/not_json"])
@pytest.mark.parametrize("json_response", [False, True])
def test_handler_failures_are_internal_errors_without_details(serve, caplog, method: str, json_response: bool) -> None:  # noqa: F811
    mcp = serve(json_response=json_response)
    sid = mcp.initialize()
    with caplog.at_level(logging.ERROR, logger="session_manager.flask"):
        response = mcp.post({"jsonrpc": "2.0", "id": 9, "method": method}, sid)
        assert response.status_code == 200
        reply = reply_of(response)
    assert reply == {"jsonrpc": "2.0", "id": 9, "error": {"code": INTERNAL_ERROR, "message": "Internal error"}}
    assert "secret" not in response.text and "Traceback" not in response.text
    wait_until(lambda: method in caplog.text, what="the failure to be logged")
    assert any(record.exc_info for record in caplog.records)


# -- info bookkeeping -------------------------------------------------------------------------


def test_set_level_is_recorded_and_seen_by_the_handler(mcp: Harness) -> None:
    sid = mcp.initialize()
    mcp.handler.messages()
    assert mcp.request(sid, "logging/setLevel", {"level": "error"})["result"] == {}
    assert mcp.managers.info.get_log_level(sid) == "error"
    assert [m["method"] for m in mcp.handler.messages()] == ["logging/setLevel"]
    for bad in ("loud", 3, None):
        reply = mcp.request(sid, "logging/setLevel", {"level": bad})
        assert reply["error"]["code"] == INVALID_PARAMS
    assert mcp.managers.info.get_log_level(sid) == "error"


def test_subscriptions_are_recorded_only_when_the_handler_agrees(mcp: Harness) -> None:
    sid = mcp.initialize()
    other = mcp.initialize()
    assert mcp.request(sid, "resources/subscribe", {"uri": "file:///x"})["result"] == {}
    assert mcp.request(other, "resources/subscribe", {"uri": "file:///x"})["result"] == {}
    assert sorted(mcp.managers.info.get_subscriptions("file:///x")) == sorted([sid, other])
    assert mcp.request(sid, "resources/subscribe", {"uri": "reject://me"})["error"]["code"] == -32002
    assert mcp.managers.info.get_subscriptions("reject://me") == []
    assert mcp.request(sid, "resources/subscribe", {"uri": ""})["error"]["code"] == INVALID_PARAMS
    assert mcp.request(sid, "resources/unsubscribe", {"uri": "file:///x"})["result"] == {}
    assert mcp.managers.info.get_subscriptions("file:///x") == [other]


# -- fan-out ------------------------------------------------------------------------------


def test_fan_out_api(mcp: Harness) -> None:
    a, b, c = (mcp.initialize() for _ in range(3))
    streams = {sid: mcp.open_stream(sid) for sid in (a, b)}  # c has no stream: messages to it are dropped
    mcp.request(a, "resources/subscribe", {"uri": "note://1"})
    mcp.request(b, "logging/setLevel", {"level": "error"})

    mcp.bp.notify(a, "notifications/one", {"to": "a"})
    mcp.bp.notify(c, "notifications/one", {"to": "c"})
    mcp.bp.resource_updated("note://1")
    mcp.bp.resource_updated("note://nobody")
    assert mcp.bp.log(a, "debug", "a debug") is True
    assert mcp.bp.log(b, "warning", "b warning") is False
    assert mcp.bp.log(b, "critical", {"b": "critical"}, logger="app") is True
    mcp.bp.tools_list_changed()
    mcp.bp.resources_list_changed()
    mcp.bp.prompts_list_changed()
    mcp.bp.broadcast("notifications/custom", {"n": 1})

    everyone = [
        "notifications/tools/list_changed",
        "notifications/resources/list_changed",
        "notifications/prompts/list_changed",
        "notifications/custom",
    ]
    got_a = streams[a].take(7)
    assert [m["method"] for m in got_a] == ["notifications/one", "notifications/resources/updated", "notifications/message", *everyone]
    assert got_a[1]["params"] == {"uri": "note://1"}
    assert got_a[2]["params"] == {"level": "debug", "data": "a debug"}
    got_b = streams[b].take(5)
    assert [m["method"] for m in got_b] == ["notifications/message", *everyone]
    assert got_b[0]["params"] == {"level": "critical", "data": {"b": "critical"}, "logger": "app"}
    assert got_b[-1]["params"] == {"n": 1}


def test_fan_out_from_many_threads(mcp: Harness) -> None:
    sid = mcp.initialize()
    stream = mcp.open_stream(sid)
    threads = [threading.Thread(target=lambda t=t: [mcp.bp.notify(sid, "notifications/t", {"t": t, "i": i}) for i in range(25)]) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    got = stream.take(100)
    for t in range(4):
        assert [m["params"]["i"] for m in got if m["params"]["t"] == t] == list(range(25))


def test_fan_out_validates_arguments(mcp: Harness) -> None:
    with pytest.raises(ValueError):
        mcp.bp.log("x", "loud", "data")
    with pytest.raises(ValueError):
        mcp.bp.notify("x", "")
    with pytest.raises(TypeError):
        mcp.bp.broadcast("notifications/x", ["not", "a", "dict"])  # type: ignore[arg-type]


# -- principals ---------------------------------------------------------------------------


def test_sessions_are_bound_to_their_principal(serve) -> None:  # noqa: F811
    from flask import request

    mcp = serve(principal=lambda: request.headers.get("X-User"))
    alice = {"X-User": "alice"}
    sid = mcp.initialize(**alice)
    assert mcp.managers.info.exists(f"alice:{sid}") and not mcp.managers.info.exists(sid)
    assert mcp.post(PING, sid, headers=alice).status_code == 200
    for other in ({"X-User": "bob"}, {}, {"X-User": "alice:x"}, {"X-User": "ALICE"}):
        assert_error(mcp.post(PING, sid, headers=other), 404)
        assert_error(mcp.http.get(mcp.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid, **other}, timeout=10), 404)
        assert_error(mcp.http.delete(mcp.url, headers={"Mcp-Session-Id": sid, **other}, timeout=10), 404)
    stream = mcp.open_stream(sid, headers=alice, wait=False)
    assert stream.status == 200
    stream.start_reader()
    wait_until(lambda: mcp.managers.streams.has(f"alice:{sid}"), what="alice's stream")
    mcp.bp.notify(f"alice:{sid}", "notifications/for-alice")
    assert stream.take(1)[0]["method"] == "notifications/for-alice"


def test_odd_principals_get_distinct_keys(serve) -> None:  # noqa: F811
    from flask import request

    mcp = serve(principal=lambda: request.headers.get("X-User"))
    keys = set()
    for user in ("~x", "a b", "é".encode().decode("latin-1"), "x" * 300):
        sid = mcp.initialize(**{"X-User": user})
        (key,) = [k for k in mcp.managers.info._sessions if k.endswith(sid)]  # type: ignore[attr-defined]
        assert re.fullmatch(r"[\x21-\x7e]{1,256}", key)
        keys.add(key.rsplit(":", 1)[0])
    assert len(keys) == 4


def test_a_principal_callable_may_abort(serve) -> None:  # noqa: F811
    from werkzeug.datastructures import WWWAuthenticate
    from werkzeug.exceptions import Unauthorized

    def principal() -> str:
        raise Unauthorized(www_authenticate=WWWAuthenticate("Bearer", {"realm": "mcp"}))

    mcp = serve(principal=principal)
    response = mcp.post(initialize_message())
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
