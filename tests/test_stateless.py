"""The stateless era (MCP 2026-07-28) on real servers, with raw HTTP and the official client.

Rules from /work/shared/docs/MCP-2026-07-28.md (the spec digest): per-request
``_meta`` and its headers (§3, §4), ``server/discover`` and cache hints (§5,
§11), ``resultType`` (§6), logging (§7), streams and cancellation (§8), multi
round-trip requests (§10). Servers: McpApp on a threaded werkzeug server in
this process; gevent.pywsgi and ``gunicorn -k gevent -w 3`` (Redis) in
subprocesses. Helpers: tests/stateless_support.py.
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession, types
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, SessionManagers

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    PYTHON,
    RawStream,
    ServerProcess,
    build_request,
    free_port,
    initialize_message,
    wait_until,
)
from .gunicorn_support import Gunicorn, Pinned
from .gunicorn_support import Served as ServedBy
from .stateless_support import (
    ALL_CAPABILITIES,
    CAPABILITIES,
    INSTRUCTIONS,
    META_CAPABILITIES,
    META_CLIENT_INFO,
    META_SERVER_INFO,
    META_VERSION,
    MODERN,
    OWN_CACHE_URI,
    OWN_SCOPE,
    OWN_TTL_MS,
    REPORT_ENV,
    ROOTS_RESULT,
    SAMPLE_RESULT,
    SERVER_INFO,
    Endpoint,
    LiveApp,
    elicit_result,
    modern_headers,
    modern_meta,
    modern_request,
    read_report,
    reply,
    retry_of,
    serve,
    sse_events,
    tool_call,
)

__all__ = ["serve"]  # the fixture, re-exported for pytest

# The client's deprecated features (sampling, roots, logging) are still what these tests exercise.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

HEADER_MISMATCH = -32020
MISSING_CAPABILITY = -32021
UNSUPPORTED_VERSION = -32022
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603
CLIENT_TIMEOUT = 30


def b64(text: str) -> str:
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


@pytest.fixture(scope="module")
def live() -> Iterator[LiveApp]:
    """The shared server: McpApp, both eras, principal from ``X-User``."""
    app = LiveApp(principal=lambda request: request.headers.get("X-User"))
    yield app
    app.close()


@pytest.fixture
def http(live: LiveApp) -> Endpoint:
    return live.endpoint


def assert_error(response: Any, answer: dict[str, Any], status: int, code: int, id: Any) -> dict[str, Any]:
    """*answer* is the JSON-RPC error *code* for request *id*, sent with HTTP *status*."""
    assert response.status_code == status, (response.status_code, answer)
    assert "result" not in answer, answer
    assert answer.get("error", {}).get("code") == code, answer
    assert answer.get("id") == id, answer
    assert "mcp-session-id" not in {name.lower() for name in response.headers}
    return answer["error"]


# -- 1. requests: _meta, headers, versions, methods ----------------------------------------


def _without(meta_key: str) -> dict[str, Any]:
    meta = modern_meta()
    del meta[meta_key]
    return meta


def _named(method: str, value: str, **params: Any) -> dict[str, Any]:
    field = "uri" if method == "resources/read" else "name"
    return modern_request(method, {field: value, **params}, id=f"named-{method}")


#: (case, message, header overrides, HTTP status, JSON-RPC code)
REFUSALS: list[tuple[str, dict[str, Any], dict[str, str | None], int, int]] = [
    ("no _meta", {"jsonrpc": "2.0", "id": 11, "method": "tools/list", "params": {}}, {}, 400, INVALID_PARAMS),
    ("no params", {"jsonrpc": "2.0", "id": 12, "method": "tools/list"}, {}, 400, INVALID_PARAMS),
    ("no protocolVersion", modern_request("tools/list", id=13, meta=_without(META_VERSION)), {}, 400, INVALID_PARAMS),
    (
        "no clientCapabilities",
        modern_request("tools/list", id="caps", meta=_without(META_CAPABILITIES)),
        {},
        400,
        INVALID_PARAMS,
    ),
    ("_meta a string", modern_request("tools/list", id=14, meta="x"), {}, 400, INVALID_PARAMS),  # type: ignore[arg-type]
    ("_meta a list", modern_request("tools/list", id=15, meta=[META_VERSION]), {}, 400, INVALID_PARAMS),  # type: ignore[arg-type]
    (
        "_meta null",
        {"jsonrpc": "2.0", "id": 16, "method": "tools/list", "params": {"_meta": None}},
        {},
        400,
        INVALID_PARAMS,
    ),
    (
        "capabilities not an object",
        modern_request("tools/list", id=17, meta={META_VERSION: MODERN, META_CAPABILITIES: ["sampling"]}),
        {},
        400,
        INVALID_PARAMS,
    ),
    (
        "clientInfo not an object",
        modern_request("tools/list", id=18, meta={**modern_meta(), META_CLIENT_INFO: "me"}),
        {},
        400,
        INVALID_PARAMS,
    ),
    ("bad logLevel", modern_request("tools/list", id=19, log_level="loud"), {}, 400, INVALID_PARAMS),
    (
        "logLevel not a string",
        modern_request("tools/list", id=20, meta={**modern_meta(), "io.modelcontextprotocol/logLevel": 3}),
        {},
        400,
        INVALID_PARAMS,
    ),
    (
        "version header missing",
        modern_request("tools/list", id=21),
        {"MCP-Protocol-Version": None},
        400,
        HEADER_MISMATCH,
    ),
    (
        "version header older",
        modern_request("tools/list", id=22),
        {"MCP-Protocol-Version": LATEST},
        400,
        HEADER_MISMATCH,
    ),
    (
        "version body older",
        modern_request("tools/list", id=23, meta={META_VERSION: LATEST, META_CAPABILITIES: {}}),
        {"MCP-Protocol-Version": MODERN},
        400,
        HEADER_MISMATCH,
    ),
    ("Mcp-Method missing", modern_request("tools/list", id=24), {"Mcp-Method": None}, 400, HEADER_MISMATCH),
    (
        "Mcp-Method mismatched",
        modern_request("tools/list", id=25),
        {"Mcp-Method": "prompts/list"},
        400,
        HEADER_MISMATCH,
    ),
    ("Mcp-Method wrong case", modern_request("tools/list", id=26), {"Mcp-Method": "TOOLS/LIST"}, 400, HEADER_MISMATCH),
    *[
        (f"Mcp-Name missing ({method})", _named(method, value), {"Mcp-Name": None}, 400, HEADER_MISMATCH)
        for method, value in (
            ("tools/call", "echo"),
            ("prompts/get", "ask_prompt"),
            ("resources/read", "test://static"),
        )
    ],
    *[
        (f"Mcp-Name mismatched ({method})", _named(method, value), {"Mcp-Name": other}, 400, HEADER_MISMATCH)
        for method, value, other in (
            ("tools/call", "echo", "ask"),
            ("prompts/get", "ask_prompt", "other_prompt"),
            ("resources/read", "test://static", "test://other"),
        )
    ],
    ("Mcp-Name wrong case", _named("tools/call", "echo"), {"Mcp-Name": "ECHO"}, 400, HEADER_MISMATCH),
    (
        "Mcp-Name unpadded base64",
        _named("tools/call", "Hello"),
        {"Mcp-Name": "=?base64?SGVsbG8?="},
        400,
        HEADER_MISMATCH,
    ),
    (
        "Mcp-Name non-alphabet base64",
        _named("tools/call", "Hello"),
        {"Mcp-Name": "=?base64?SGVs*G8=?="},
        400,
        HEADER_MISMATCH,
    ),
    ("Mcp-Name base64 of another name", _named("tools/call", "echo"), {"Mcp-Name": b64("ask")}, 400, HEADER_MISMATCH),
    ("Mcp-Name base64 not UTF-8", _named("tools/call", "echo"), {"Mcp-Name": "=?base64?/w==?="}, 400, HEADER_MISMATCH),
    (
        "Mcp-Name upper-case markers",
        _named("tools/call", "echo"),
        {"Mcp-Name": "=?BASE64?ZWNobw==?="},
        400,
        HEADER_MISMATCH,
    ),
    # the method is checked after the headers and the version: a removed one with a bad header is a header error
    ("removed method, bad header", modern_request("ping", id=27), {"Mcp-Method": "pong"}, 400, HEADER_MISMATCH),
]


@pytest.mark.parametrize(
    ("message", "headers", "status", "code"), [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS]
)
def test_refused_requests_get_their_status_code_and_id(
    http: Endpoint, message: dict[str, Any], headers: dict[str, str | None], status: int, code: int
) -> None:
    merged = {"MCP-Protocol-Version": MODERN, "Mcp-Method": message["method"], **headers}  # even without a valid _meta
    response, answer = http.call(message, headers=merged)
    error = assert_error(response, answer, status, code, message["id"])
    if code == HEADER_MISMATCH:
        assert "data" not in error, error  # -32020 has no data


@pytest.mark.parametrize("accept", [ACCEPT_BOTH, "application/json"])
@pytest.mark.parametrize("version", ["v999.0.0", "2099-01-01", LATEST])
def test_unsupported_version_lists_supported_ones(http: Endpoint, accept: str, version: str) -> None:
    """Header = body, a version the stateless era does not serve (a session-era one included): -32022."""
    discovered = http.result(modern_request("server/discover"))
    message = modern_request("tools/list", id="v999", meta={META_VERSION: version, META_CAPABILITIES: {}})
    response, answer = http.call(message, accept=accept)
    error = assert_error(response, answer, 400, UNSUPPORTED_VERSION, "v999")
    assert error["data"]["requested"] == version
    supported = error["data"]["supported"]
    assert isinstance(supported, list) and supported and all(isinstance(v, str) for v in supported)
    assert set(supported) <= set(discovered["supportedVersions"])
    assert MODERN in supported


@pytest.mark.parametrize(
    "method", ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"]
)
@pytest.mark.parametrize("accept", [ACCEPT_BOTH, "application/json"])
def test_removed_methods_are_not_found(live: LiveApp, http: Endpoint, method: str, accept: str) -> None:
    """The handler would answer them (session era): the transport refuses them first."""
    params: dict[str, Any] = {"uri": "test://static"} if "subscribe" in method else {}
    if method == "initialize":
        params = dict(initialize_message(LATEST)["params"], protocolVersion=MODERN)
    if method == "logging/setLevel":
        params = {"level": "info"}
    before = live.handler.count(f"{method}:{params.get('uri', '')}")
    response, answer = http.call(modern_request(method, params, id=f"removed-{method}"), accept=accept)
    assert_error(response, answer, 404, METHOD_NOT_FOUND, f"removed-{method}")
    assert live.handler.count(f"{method}:{params.get('uri', '')}") == before


@pytest.mark.parametrize("accept", [ACCEPT_BOTH, "application/json", "text/event-stream"])
def test_unknown_method_is_404(http: Endpoint, accept: str) -> None:
    response, answer = http.call(modern_request("no/such/method", id=77), accept=accept)
    assert_error(response, answer, 404, METHOD_NOT_FOUND, 77)


def test_no_client_info_is_fine(http: Endpoint) -> None:
    result = http.result(tool_call("ctx", id=5, client_info=False))
    assert result["structuredContent"]["client_info"] is None
    assert result["structuredContent"]["stateless"] is True


#: (case, message, Mcp-Name header): the name header as the client may send it, accepted.
ACCEPTED_NAMES = [
    ("spaces around", _named("tools/call", "echo", arguments={"text": "hi"}), "   echo  "),
    ("tab around", _named("tools/call", "echo", arguments={"text": "hi"}), "\techo"),
    ("base64 non-ASCII", _named("tools/call", "\u00e9cho", arguments={"text": "hi"}), b64("\u00e9cho")),
    ("base64 ASCII", _named("tools/call", "echo", arguments={"text": "hi"}), b64("echo")),
    ("base64 with spaces around", _named("tools/call", "echo", arguments={"text": "hi"}), "  " + b64("echo") + " "),
    ("prompt spaces", _named("prompts/get", "ask_prompt"), " ask_prompt "),
    ("resource spaces", _named("resources/read", "test://static"), " test://static "),
    ("resource base64", _named("resources/read", "test://static"), b64("test://static")),
]


@pytest.mark.parametrize(
    ("message", "name"), [case[1:] for case in ACCEPTED_NAMES], ids=[case[0] for case in ACCEPTED_NAMES]
)
def test_name_header_forms_accepted(http: Endpoint, message: dict[str, Any], name: str) -> None:
    message = json.loads(json.dumps(message))
    message["params"]["_meta"] = modern_meta(ALL_CAPABILITIES)
    status, body = raw_post(http.port, message, {**modern_headers(message), "Mcp-Name": name})  # spaces kept as sent
    answer = json.loads(body)
    assert status == 200, answer
    assert "result" in answer, answer
    assert answer["id"] == message["id"]


def test_value_missing_a_base64_marker_is_literal(http: Endpoint) -> None:
    """``=?base64?SGVsbG8=`` (no closing marker) is a name like any other: compared as is."""
    literal = "=?base64?SGVsbG8="
    response, answer = http.call(_named("tools/call", literal), headers={"Mcp-Name": literal})
    assert response.status_code == 200, answer  # past the header checks: the tool is unknown
    assert answer["error"]["code"] == INVALID_PARAMS and "Unknown tool" in answer["error"]["message"]
    response, answer = http.call(_named("tools/call", "Hello"), headers={"Mcp-Name": literal})
    assert_error(response, answer, 400, HEADER_MISMATCH, "named-tools/call")


def test_header_names_are_case_insensitive(http: Endpoint) -> None:
    message = _named("tools/call", "echo", arguments={"text": "x"})
    headers = {name: None for name in modern_headers(message)}
    headers.update({"mcp-protocol-version": MODERN, "MCP-METHOD": "tools/call", "mcp-name": "echo"})
    response, answer = http.call(message, headers=headers)
    assert response.status_code == 200 and answer["result"]["content"][0]["text"] == "x", answer


def raw_post(port: int, message: dict[str, Any], headers: dict[str, str]) -> tuple[int, bytes]:
    """POST with headers as given, byte for byte (control characters included); status and body."""
    body = json.dumps(message).encode()
    merged = {"Content-Type": "application/json", "Accept": "application/json", "Connection": "close", **headers}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(build_request("POST", "/mcp", port, merged, body))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


@pytest.mark.parametrize(
    ("body_name", "header_name"),
    [("echo", "ec\x01ho"), ("echo", "echo\x7f"), ("ec\x01ho", "ec\x01ho"), ("a\x1bb", "a\x1bb")],
    ids=["mismatch SOH", "mismatch DEL", "raw SOH equal to the body", "raw ESC equal to the body"],
)
def test_name_header_with_control_characters_is_refused(live: LiveApp, body_name: str, header_name: str) -> None:
    """Such values must come base64-encoded (digest §3: "bad characters" -> -32020); never a 500."""
    message = _named("tools/call", body_name)
    headers = {**modern_headers(message), "Mcp-Name": header_name}
    status, body = raw_post(live.endpoint.port, message, headers)
    answer = json.loads(body)
    assert (status, answer["error"]["code"], answer["id"]) == (400, HEADER_MISMATCH, message["id"]), answer


MALFORMED: list[tuple[str, bytes | dict[str, Any], dict[str, str | None]]] = [
    ("params a list", {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]}, {}),
    ("params a string", {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": "x"}, {}),
    (
        "method a number",
        {"jsonrpc": "2.0", "id": 1, "method": 5, "params": {"_meta": modern_meta()}},
        {"Mcp-Method": "5"},
    ),
    (
        "id an object",
        {"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list", "params": {"_meta": modern_meta()}},
        {},
    ),
    ("not JSON", b"{not json", {"Mcp-Method": "tools/list"}),
    ("a batch", [modern_request("tools/list")], {"Mcp-Method": "tools/list"}),  # type: ignore[list-item]
    (
        "version a number",
        modern_request("tools/list", meta={META_VERSION: 2026, META_CAPABILITIES: {}}),
        {"MCP-Protocol-Version": "2026"},
    ),
    ("version a list", modern_request("tools/list", meta={META_VERSION: [MODERN], META_CAPABILITIES: {}}), {}),
    ("name a number", modern_request("tools/call", {"name": 5}), {"Mcp-Name": "5"}),
    ("name an object", modern_request("tools/call", {"name": {"a": 1}}), {"Mcp-Name": "x"}),
    ("uri null", modern_request("resources/read", {"uri": None}), {}),
    ("arguments a list", modern_request("tools/call", {"name": "echo", "arguments": [1]}), {"Mcp-Name": "echo"}),
    (
        "inputResponses a list",
        modern_request("tools/call", {"name": "ask", "inputResponses": [1]}),
        {"Mcp-Name": "ask"},
    ),
    ("requestState a number", modern_request("tools/call", {"name": "ask", "requestState": 5}), {"Mcp-Name": "ask"}),
    (
        "requestState garbage",
        modern_request("tools/call", {"name": "ask", "requestState": "a.b.c"}),
        {"Mcp-Name": "ask"},
    ),
    (
        "requestState bad base64",
        modern_request("tools/call", {"name": "ask", "requestState": "%%%.%%%"}),
        {"Mcp-Name": "ask"},
    ),
    ("huge header", modern_request("tools/list"), {"Mcp-Method": "x" * 6000}),
    (
        "_meta progressToken an object",
        modern_request("tools/list", meta={**modern_meta(), "progressToken": {"a": 1}}),
        {},
    ),
]


@pytest.mark.parametrize(("message", "headers"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_requests_never_get_a_500(http: Endpoint, message: Any, headers: dict[str, str | None]) -> None:
    merged = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list", **headers}
    if isinstance(message, dict) and isinstance(message.get("method"), str) and "Mcp-Method" not in headers:
        merged["Mcp-Method"] = message["method"]
    response = http.post(message if isinstance(message, bytes) else json.dumps(message).encode(), headers=merged)
    assert response.status_code < 500, (response.status_code, response.text)
    answer = reply(response)
    assert answer.get("jsonrpc") == "2.0" and ("error" in answer or "result" in answer), answer


@pytest.mark.parametrize("verb", ["GET", "DELETE"])
def test_get_and_delete_with_a_modern_version_are_405(http: Endpoint, verb: str) -> None:
    headers = {"MCP-Protocol-Version": MODERN, "Accept": "text/event-stream", "Mcp-Session-Id": "whatever"}
    response = http.http.request(verb, http.url, headers=headers, timeout=10)
    assert response.status_code == 405, response.text
    assert "POST" in response.headers.get("Allow", "")


def test_notification_is_202(live: LiveApp, http: Endpoint) -> None:
    note = {"jsonrpc": "2.0", "method": "notifications/whatever", "params": {"_meta": modern_meta()}}
    response = http.post(note)
    assert response.status_code == 202 and response.content == b"", response.text
    assert "mcp-session-id" not in {name.lower() for name in response.headers}
    method, ctx = live.handler.notifications.get(timeout=5)
    assert (method, ctx.stateless, ctx.session_id, ctx.request_id) == ("notifications/whatever", True, None, None)


def test_session_headers_are_ignored_and_never_sent(live: LiveApp, http: Endpoint) -> None:
    """No Mcp-Session-Id is minted or echoed; one sent (live legacy session, or garbage) and Last-Event-ID are ignored."""
    legacy = http.post(initialize_message(LATEST), headers={"MCP-Protocol-Version": None, "Mcp-Method": None})
    assert legacy.status_code == 200
    sid = legacy.headers["Mcp-Session-Id"]
    for session in (sid, "not-a-session", None):
        for last_event_id in ("0", "abc-123", None):
            headers = {"Mcp-Session-Id": session, "Last-Event-ID": last_event_id}
            for accept in (ACCEPT_BOTH, "application/json"):
                response, answer = http.call(tool_call("ctx", id=9, progress_token="t"), headers=headers, accept=accept)
                assert response.status_code == 200, answer
                assert "mcp-session-id" not in {name.lower() for name in response.headers}
                seen = answer["result"]["structuredContent"]
                assert (seen["stateless"], seen["session_id"], seen["protocol_version"]) == (True, None, MODERN)
                assert seen["progress_token"] == "t" and seen["request_id"] == 9
    for message in (modern_request("server/discover"), modern_request("tools/list"), modern_request("nope", id=3)):
        response = http.post(message, headers={"Mcp-Session-Id": sid})
        assert "mcp-session-id" not in {name.lower() for name in response.headers}, response.headers


@pytest.fixture
def resumable(serve: Callable[..., LiveApp]) -> LiveApp:
    """A server whose session-era streams are resumable (an event store): stateless ones must still have no ids."""
    return serve(managers=SessionManagers(InMemoryStreamSessionManager(event_store=InMemoryEventStore())))


def test_sse_answers_carry_no_event_ids(resumable: LiveApp) -> None:
    http = resumable.endpoint
    for message in (
        modern_request("tools/list"),
        tool_call("progress_log", id=2, log_level="debug", progress_token=1),
        tool_call("ask", id=3, capabilities=ALL_CAPABILITIES),
        modern_request("server/discover"),
    ):
        response = http.post(message, headers={"Last-Event-ID": "0"})
        assert response.status_code == 200 and response.headers["Content-Type"] == "text/event-stream"
        assert response.headers.get("X-Accel-Buffering") == "no"
        events = sse_events(response)
        assert events and all(event.data for event in events), events  # no priming event
        assert all(event.id is None for event in events), events
        for event in events:  # never a request (a frame with both method and id)
            frame = json.loads(event.data)
            assert not ("method" in frame and "id" in frame), frame
        assert json.loads(events[-1].data)["id"] == message["id"]


def test_an_answer_ready_at_once_is_one_sse_event_of_known_length_and_a_streamed_one_stays_a_stream(
    http: Endpoint,
) -> None:
    """A handler that replies before sending anything else: the whole answer is known, so it goes as one body."""
    response = http.post(tool_call("echo", id=7, arguments={"text": "hi"}))
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Content-Length"] == str(len(response.content))
    (event,) = sse_events(response)
    assert json.loads(event.data)["id"] == 7 and not response.content.startswith(b":")
    streamed = http.post(tool_call("progress_log", id=8, log_level="debug", progress_token=1))
    assert "Content-Length" not in streamed.headers and streamed.headers["Content-Type"] == "text/event-stream"
    events = sse_events(streamed)
    assert len(events) > 1 and json.loads(events[-1].data)["id"] == 8


# -- 2. server/discover, resultType, cache hints --------------------------------------------


def test_discover(http: Endpoint) -> None:
    for accept in (ACCEPT_BOTH, "application/json"):
        response, answer = http.call(modern_request("server/discover", id="d"), accept=accept)
        assert response.status_code == 200 and answer["id"] == "d", answer
        result = answer["result"]
        assert MODERN in result["supportedVersions"]
        assert all(isinstance(version, str) for version in result["supportedVersions"])
        assert result["capabilities"] == CAPABILITIES
        assert result["instructions"] == INSTRUCTIONS
        assert result["_meta"][META_SERVER_INFO] == SERVER_INFO
        assert "serverInfo" not in result and "protocolVersion" not in result
        assert result["resultType"] == "complete"
        assert type(result["ttlMs"]) is int and result["ttlMs"] >= 0
        assert result["cacheScope"] in ("public", "private")


CACHEABLE: list[tuple[str, dict[str, Any]]] = [
    ("server/discover", {}),
    ("tools/list", {}),
    ("prompts/list", {}),
    ("resources/list", {}),
    ("resources/templates/list", {}),
    ("resources/read", {"uri": "test://static"}),
]


@pytest.mark.parametrize(("method", "params"), CACHEABLE, ids=[case[0] for case in CACHEABLE])
def test_cacheable_results_carry_cache_hints(http: Endpoint, method: str, params: dict[str, Any]) -> None:
    result = http.result(modern_request(method, params))
    assert result["resultType"] == "complete"
    assert (result["ttlMs"], result["cacheScope"]) == (0, "private")  # the defaults: nothing cached


def test_every_result_has_a_result_type(http: Endpoint) -> None:
    complete = [
        tool_call("echo", {"text": "x"}),
        tool_call("progress_log"),
        modern_request("tools/list"),
        modern_request("prompts/list"),
        modern_request("resources/list"),
        modern_request("resources/templates/list"),
        modern_request("resources/read", {"uri": "test://static"}),
        modern_request("server/discover"),
    ]
    for message in complete:
        assert http.result(message)["resultType"] == "complete", message
    asking = [
        tool_call("ask", capabilities=ALL_CAPABILITIES),
        modern_request("prompts/get", {"name": "ask_prompt"}, capabilities=ALL_CAPABILITIES),
        modern_request("resources/read", {"uri": "test://ask"}, capabilities=ALL_CAPABILITIES),
    ]
    for message in asking:
        result = http.result(message)
        assert result["resultType"] == "input_required", result
        assert "ttlMs" not in result and "cacheScope" not in result, result  # InputRequiredResult: no cache hints


def test_cache_options_are_honoured_and_handler_values_kept(serve: Callable[..., LiveApp]) -> None:
    http = serve(cache_ttl_ms=60_000, cache_scope="public").endpoint
    for method, params in CACHEABLE:
        result = http.result(modern_request(method, params))
        assert (result["ttlMs"], result["cacheScope"]) == (60_000, "public"), (method, result)
    own = http.result(modern_request("resources/read", {"uri": OWN_CACHE_URI}))
    assert (own["ttlMs"], own["cacheScope"]) == (OWN_TTL_MS, OWN_SCOPE)
    # an MRTR retry's complete result of resources/read is cacheable like any
    first = http.result(modern_request("resources/read", {"uri": "test://ask"}, capabilities=ALL_CAPABILITIES))
    assert "ttlMs" not in first
    again = retry_of(
        modern_request("resources/read", {"uri": "test://ask"}, capabilities=ALL_CAPABILITIES),
        {"roots": ROOTS_RESULT},
        first["requestState"],
    )
    done = http.result(again)
    assert done["resultType"] == "complete" and done["contents"][0]["text"] == json.dumps(ROOTS_RESULT)


def test_handler_discover_result_is_completed(serve: Callable[..., LiveApp]) -> None:
    """A handler that answers server/discover itself keeps its fields; the transport completes the rest."""
    app = serve()
    original = app.handler.__call__

    def handler(message: dict[str, Any], ctx: Any) -> Any:
        if message.get("method") == "server/discover":
            return {"capabilities": {"tools": {"listChanged": True}}, "ttlMs": 99, "cacheScope": "public"}
        return original(message, ctx)

    app.app.handler = handler
    result = app.endpoint.result(modern_request("server/discover"))
    assert result["capabilities"] == {"tools": {"listChanged": True}}
    assert (result["ttlMs"], result["cacheScope"], result["resultType"]) == (99, "public", "complete")
    assert result["_meta"][META_SERVER_INFO] == SERVER_INFO and MODERN in result["supportedVersions"]


# -- 3. logging and progress --------------------------------------------------------------


def _frames(response: Any) -> list[dict[str, Any]]:
    return [json.loads(event.data) for event in sse_events(response) if event.data]


def test_no_logs_without_a_log_level(http: Endpoint) -> None:
    response = http.post(tool_call("progress_log", id=4, progress_token="p"))
    frames = _frames(response)
    assert [frame.get("method") for frame in frames[:-1]] == ["notifications/progress"] * 3
    assert frames[-1]["id"] == 4
    sent = frames[-1]["result"]["structuredContent"]
    assert sent == {"progress": [True] * 3, "log": [False] * 12}


def test_logs_at_and_above_the_level_before_the_result(http: Endpoint) -> None:
    response = http.post(tool_call("progress_log", id=5, progress_token=7, log_level="warning"))
    frames = _frames(response)
    assert frames[-1]["id"] == 5 and "result" in frames[-1]
    notes = frames[:-1]
    progress = [frame["params"] for frame in notes if frame["method"] == "notifications/progress"]
    logs = [frame["params"] for frame in notes if frame["method"] == "notifications/message"]
    assert [p["progress"] for p in progress] == [1, 2, 3] and {p["progressToken"] for p in progress} == {7}
    assert [(log["level"], log["data"]["step"]) for log in logs] == [
        (level, step) for step in (1, 2, 3) for level in ("warning", "error")
    ]
    assert all(log["logger"] == "progress_log" for log in logs)
    assert len(notes) == len(progress) + len(logs)


def test_logs_only_on_the_requests_own_stream(live: LiveApp, http: Endpoint) -> None:
    """A JSON answer has no stream: nothing is sent, and nothing reaches a session's GET stream either."""
    legacy = http.post(initialize_message(LATEST), headers={"MCP-Protocol-Version": None, "Mcp-Method": None})
    sid = legacy.headers["Mcp-Session-Id"]
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
    stream = RawStream(http.port, "GET", "/mcp", headers)
    try:
        assert stream.status == 200
        stream.start_reader()
        wait_until(lambda: live.managers.streams.has(sid), what="the GET stream")
        message = tool_call("progress_log", id=6, progress_token="p", log_level="debug")
        response, answer = http.call(message, accept="application/json", headers={"Mcp-Session-Id": sid})
        assert response.headers["Content-Type"] == "application/json"
        assert answer["result"]["structuredContent"] == {"progress": [False] * 3, "log": [False] * 12}
        streamed = _frames(http.post(message, headers={"Mcp-Session-Id": sid}))
        assert len(streamed) == 3 + 12 + 1
        time.sleep(0.3)
        assert stream.events.empty(), stream.events.get_nowait()
    finally:
        stream.close()


# -- 4. multi round-trip requests ------------------------------------------------------------


@pytest.mark.parametrize("accept", [ACCEPT_BOTH, "application/json"])
def test_mrtr_one_round(http: Endpoint, accept: str) -> None:
    first_call = tool_call("ask", {"tag": "one"}, id=10, capabilities={"elicitation": {}})
    response, answer = http.call(first_call, accept=accept)
    assert response.status_code == 200 and answer["id"] == 10, answer
    first = answer["result"]
    assert first["resultType"] == "input_required"
    assert first["inputRequests"] == {
        "user_name": {"method": "elicitation/create", "params": first["inputRequests"]["user_name"]["params"]}
    }
    assert first["inputRequests"]["user_name"]["params"]["message"] == "What is your name?"
    assert isinstance(first["requestState"], str) and first["requestState"]
    _response, answer = http.call(
        retry_of(first_call, {"user_name": elicit_result(name="Ada")}, first["requestState"], id=11), accept=accept
    )
    assert answer["id"] == 11 and answer["result"]["resultType"] == "complete"
    assert answer["result"]["content"][0]["text"] == "hello Ada"
    # the answers alone complete it too (no state), and extra keys are ignored
    extra = {"user_name": elicit_result(name="Bo"), "unrelated": {"x": 1}}
    assert http.result(retry_of(first_call, extra, None))["content"][0]["text"] == "hello Bo"


def test_mrtr_prompt(http: Endpoint) -> None:
    message = modern_request("prompts/get", {"name": "ask_prompt"}, id=20, capabilities=ALL_CAPABILITIES)
    first = http.result(message)
    assert first["resultType"] == "input_required" and set(first["inputRequests"]) == {"style"}
    done = http.result(retry_of(message, {"style": elicit_result(name="tersely")}, first["requestState"]))
    assert done["resultType"] == "complete"
    assert done["messages"][0]["content"]["text"] == "Write it tersely."


def test_mrtr_multi_round(http: Endpoint) -> None:
    message = tool_call("multi_round", id=30, capabilities={"elicitation": {}})
    first = http.result(message)
    assert set(first["inputRequests"]) == {"step1"}
    second = http.result(retry_of(message, {"step1": elicit_result(name="a")}, first["requestState"], id=31))
    assert second["resultType"] == "input_required" and set(second["inputRequests"]) == {"step2"}
    assert second["inputRequests"]["step2"]["params"]["message"] == "Step 2 after a?"
    assert isinstance(second["requestState"], str) and second["requestState"] != first["requestState"]
    third = http.result(retry_of(message, {"step2": elicit_result(name="b")}, second["requestState"], id=32))
    assert third["resultType"] == "complete" and third["content"][0]["text"] == "a+b"


def test_mrtr_request_all(http: Endpoint) -> None:
    message = tool_call("ask_all", id=40, capabilities=ALL_CAPABILITIES)
    first = http.result(message)
    requests_ = first["inputRequests"]
    assert {key: request["method"] for key, request in requests_.items()} == {
        "who": "elicitation/create",
        "draft": "sampling/createMessage",
        "roots": "roots/list",
    }
    assert all(set(request) == {"method", "params"} for request in requests_.values())
    answers = {"who": elicit_result(name="x"), "draft": SAMPLE_RESULT, "roots": ROOTS_RESULT}
    done = http.result(retry_of(message, answers, first["requestState"]))
    assert done["resultType"] == "complete"
    assert json.loads(done["content"][0]["text"]) == answers
    # partly answered: a new round for what is missing only (a new first round: a state serves one retry)
    fresh = http.result(message)
    partial = http.result(retry_of(message, {"who": elicit_result(name="x")}, fresh["requestState"]))
    assert partial["resultType"] == "input_required" and set(partial["inputRequests"]) == {"draft", "roots"}


def test_mrtr_wrong_key_asks_again(http: Endpoint) -> None:
    message = tool_call("ask", id=50, capabilities={"elicitation": {}})
    first = http.result(message)
    again = http.result(retry_of(message, {"wrong_key": elicit_result(name="x")}, first["requestState"]))
    assert again["resultType"] == "input_required" and set(again["inputRequests"]) == {"user_name"}
    assert isinstance(again["requestState"], str)
    # inputResponses null: not an answer either
    null_answers = retry_of(message, None, again["requestState"])
    null_answers["params"]["inputResponses"] = None
    again = http.result(null_answers)
    assert again["resultType"] == "input_required"


@pytest.mark.parametrize("answer", ["Ada", 12345, None, ["x"]], ids=["string", "number", "null", "list"])
def test_mrtr_non_object_answer_is_an_error(http: Endpoint, answer: Any) -> None:
    message = tool_call("ask", id=60, capabilities={"elicitation": {}})
    first = http.result(message)
    response, reply_ = http.call(retry_of(message, {"user_name": answer}, first["requestState"], id=61))
    assert reply_["id"] == 61 and "result" not in reply_, reply_
    assert reply_["error"]["code"] == INVALID_PARAMS, reply_
    assert response.status_code < 500


def test_mrtr_input_responses_not_an_object_is_an_error(http: Endpoint) -> None:
    message = tool_call("ask", id=62, capabilities={"elicitation": {}})
    _response, answer = http.call(retry_of(message, "nope", None, id=63))  # type: ignore[arg-type]
    assert answer["id"] == 63 and answer["error"]["code"] == INVALID_PARAMS, answer


def _flip(state: str) -> str:
    index = len(state) // 3
    return state[:index] + ("A" if state[index] != "A" else "B") + state[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        "flip a payload char",
        "flip a mac char",
        "append -TAMPERED",
        "another call's state",
        "another tool's state",
        "another principal",
        "truncated",
    ],
)
def test_mrtr_tampered_state_is_refused_before_the_handler(live: LiveApp, http: Endpoint, tamper: str) -> None:
    tag = f"tamper-{tamper}"
    alice = {"X-User": "alice"}
    message = tool_call("ask", {"tag": tag}, id=70, capabilities={"elicitation": {}})
    state = http.result(message, headers=alice)["requestState"]
    headers = alice
    if tamper == "flip a payload char":
        state = _flip(state)
    elif tamper == "flip a mac char":
        payload, mac = state.split(".")
        state = payload + "." + _flip(mac)
    elif tamper == "append -TAMPERED":
        state += "-TAMPERED"
    elif tamper == "another call's state":
        state = http.result(tool_call("ask", {"tag": tag + "-other"}, capabilities={"elicitation": {}}), headers=alice)[
            "requestState"
        ]
    elif tamper == "another tool's state":
        state = http.result(tool_call("multi_round", capabilities={"elicitation": {}}), headers=alice)["requestState"]
    elif tamper == "another principal":
        headers = {"X-User": "bob"}
    elif tamper == "truncated":
        state = state[:-4]
    entries = live.handler.count("tools/call:ask")
    response, answer = http.call(
        retry_of(message, {"user_name": elicit_result(name="x")}, state, id=71), headers=headers
    )
    assert answer["id"] == 71 and answer["error"]["code"] == INVALID_PARAMS, answer
    assert "result" not in answer and response.status_code < 500
    assert live.handler.count("tools/call:ask") == entries  # refused before the handler ran
    # the genuine state still works for its principal
    good = http.call(retry_of(message, {}, http.result(message, headers=alice)["requestState"]), headers=alice)[1]
    assert good["result"]["resultType"] == "input_required"


def test_mrtr_expired_state_is_refused(serve: Callable[..., LiveApp]) -> None:
    app = serve(state_ttl=0.5)
    message = tool_call("multi_round", id=80, capabilities={"elicitation": {}})
    first = app.endpoint.result(message)
    second = app.endpoint.result(retry_of(message, {"step1": elicit_result(name="a")}, first["requestState"]))
    assert second["resultType"] == "input_required"
    time.sleep(0.7)
    entries = app.handler.count("tools/call:multi_round")
    _response, answer = app.endpoint.call(
        retry_of(message, {"step2": elicit_result(name="b")}, second["requestState"], id=81)
    )
    assert answer["id"] == 81 and answer["error"]["code"] == INVALID_PARAMS, answer
    assert "expired" in answer["error"]["message"]
    assert app.handler.count("tools/call:multi_round") == entries


def test_mrtr_state_survives_a_server_with_the_same_keys(serve: Callable[..., LiveApp]) -> None:
    """With ``state_keys``, another process opens the state; with other keys it does not; the second key opens too."""
    key_a, key_b = b"a" * 32, b"b" * 32
    one, two, other = serve(state_keys=[key_a]), serve(state_keys=[key_b, key_a]), serve(state_keys=[key_b])
    message = tool_call("ask", id=90, capabilities={"elicitation": {}})
    state = one.endpoint.result(message)["requestState"]
    answers = {"user_name": elicit_result(name="Z")}
    assert two.endpoint.result(retry_of(message, answers, state))["content"][0]["text"] == "hello Z"
    answer = other.endpoint.call(retry_of(message, answers, state, id=91))[1]
    assert answer["error"]["code"] == INVALID_PARAMS, answer


@pytest.mark.parametrize("accept", [ACCEPT_BOTH, "application/json"])
@pytest.mark.parametrize(
    ("name", "declared", "needed"),
    [
        ("ask", {"sampling": {}}, "elicitation"),
        ("sample", {"elicitation": {}}, "sampling"),
        ("ask_all", {"elicitation": {}, "sampling": {}}, "roots"),
    ],
)
def test_missing_capability_is_32021(
    http: Endpoint, accept: str, name: str, declared: dict[str, Any], needed: str
) -> None:
    response, answer = http.call(tool_call(name, id="cap", capabilities=declared), accept=accept)
    error = assert_error(response, answer, 400, MISSING_CAPABILITY, "cap")
    assert isinstance(error["data"]["requiredCapabilities"], dict)
    assert needed in error["data"]["requiredCapabilities"]
    assert isinstance(error["data"]["requiredCapabilities"][needed], dict)


def test_lists_never_ask_for_input(live: LiveApp, http: Endpoint) -> None:
    for accept in (ACCEPT_BOTH, "application/json"):
        response, answer = http.call(
            modern_request("tools/list", {"cursor": "ask"}, id=99, capabilities=ALL_CAPABILITIES), accept=accept
        )
        assert answer["id"] == 99 and "result" not in answer, answer
        assert response.status_code < 500
        # ctx.request is documented to raise ClientRequestError when it cannot ask; not a handler crash (-32603)
        assert answer["error"]["code"] != INTERNAL_ERROR, answer
    assert http.result(modern_request("prompts/list"))["resultType"] == "complete"


# -- 5. the official client ------------------------------------------------------------------


class Callbacks:
    """The official client's callbacks, recording what the server asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def elicitation(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append("elicitation")
        return types.ElicitResult(action="accept", content={"name": "Grace", "text": "from the client"})

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.asked.append("sampling")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="drafted"), model="m"
        )

    async def roots(self, context: Any) -> types.ListRootsResult:
        self.asked.append("roots")
        return types.ListRootsResult(roots=[types.Root(uri="file:///tmp/project", name="project")])

    def client(self, server: Any, mode: str) -> Client:
        return Client(
            server,
            mode=mode,
            elicitation_callback=self.elicitation,
            sampling_callback=self.sampling,
            list_roots_callback=self.roots,
            read_timeout_seconds=CLIENT_TIMEOUT,
        )


def _text_of(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


@pytest.mark.parametrize("mode", [MODERN, "auto"])
def test_official_client(live: LiveApp, mode: str) -> None:
    callbacks = Callbacks()
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def main() -> None:
        with anyio.fail_after(CLIENT_TIMEOUT):
            async with callbacks.client(live.url, mode) as client:
                assert client.protocol_version == MODERN
                tools = await client.list_tools()
                assert "ask" in [tool.name for tool in tools.tools]
                assert _text_of(await client.call_tool("ask", {})) == "hello Grace"
                answers = json.loads(_text_of(await client.call_tool("ask_all", {})))
                assert answers["draft"]["content"]["text"] == "drafted" and answers["roots"] == ROOTS_RESULT
                assert _text_of(await client.call_tool("multi_round", {})) == "Grace+Grace"
                assert _text_of(await client.call_tool("progress_log", {}, progress_callback=on_progress)) == "done"
                prompt = await client.get_prompt("ask_prompt")
                assert prompt.messages[0].content.text == "Write it Grace."  # type: ignore[union-attr]
                if mode == "auto":
                    assert client.server_info is not None and client.server_info.name == SERVER_INFO["name"]

    anyio.run(main)
    assert progress == [1, 2, 3]
    assert callbacks.asked.count("elicitation") == 5 and {"sampling", "roots"} <= set(callbacks.asked)


@pytest.mark.parametrize(("eras", "negotiated"), [(("modern",), MODERN), (("handshake",), LATEST)])
def test_eras_option(serve: Callable[..., LiveApp], eras: tuple[str, ...], negotiated: str) -> None:
    """One era only: ``mode="auto"`` ends on it; a modern-only endpoint has no GET and no initialize."""
    app = serve(eras=eras)
    callbacks = Callbacks()

    async def main() -> None:
        with anyio.fail_after(CLIENT_TIMEOUT):
            async with callbacks.client(app.url, "auto") as client:
                assert client.protocol_version == negotiated
                assert _text_of(await client.call_tool("ask", {})) == "hello Grace"

    anyio.run(main)
    assert callbacks.asked == ["elicitation"]
    if eras == ("modern",):
        http = app.endpoint
        assert http.http.get(app.url, headers={"Accept": "text/event-stream"}, timeout=10).status_code == 405
        response = http.post(initialize_message(LATEST), headers={"MCP-Protocol-Version": None, "Mcp-Method": None})
        assert response.status_code == 400 and "mcp-session-id" not in {name.lower() for name in response.headers}
        assert response.json()["error"]["code"] == INVALID_PARAMS
        discovered = http.result(modern_request("server/discover"))
        assert discovered["supportedVersions"] == [MODERN]


def test_both_eras_at_once(live: LiveApp) -> None:
    """The stateless client and a session (initialize) on the same URL, interleaved, both keep working."""
    modern, legacy = Callbacks(), Callbacks()
    results: dict[str, list[str]] = {"modern": [], "legacy": []}

    async def run_modern() -> None:
        async with modern.client(live.url, MODERN) as client:
            for _ in range(5):
                results["modern"].append(_text_of(await client.call_tool("ask", {})))

    async def run_legacy() -> None:
        async with (
            streamable_http_client(live.url) as (read, write),
            ClientSession(read, write, elicitation_callback=legacy.elicitation) as session,
        ):
            initialized = await session.initialize()
            assert initialized.protocol_version == LATEST
            for _ in range(5):
                results["legacy"].append(_text_of(await session.call_tool("ask", {})))

    async def main() -> None:
        with anyio.fail_after(CLIENT_TIMEOUT):
            async with anyio.create_task_group() as group:
                group.start_soon(run_modern)
                group.start_soon(run_legacy)

    anyio.run(main)
    assert results == {"modern": ["hello Grace"] * 5, "legacy": ["hello Grace"] * 5}
    assert modern.asked == ["elicitation"] * 5 and legacy.asked == ["elicitation"] * 5


# -- 6. any worker: gunicorn -k gevent -w 3, Redis ------------------------------------------------


@pytest.fixture(scope="module")
def example_gunicorn(redis_server: Any) -> Iterator[Gunicorn]:
    """examples/server.py (tests/gunicorn_app.py) on 3 gevent workers, Redis managers, no state key."""
    server = Gunicorn(redis_server.url)
    yield server
    server.close()


def _pinned_call(worker: Pinned, message: dict[str, Any]) -> dict[str, Any]:
    headers = {name.replace("-", "_"): value for name, value in modern_headers(message).items()}
    response = worker.send("POST", message, **headers)
    assert response.status_code == 200, response.text
    answer = reply(response)
    assert "result" in answer, answer
    return answer["result"]


def test_rounds_on_different_workers(example_gunicorn: Gunicorn, redis_server: Any) -> None:
    workers = example_gunicorn.pinned()
    try:
        assert len({worker.pid for worker in workers}) == 3
        for index, (tool, arguments, key, answer) in enumerate(
            [
                ("draft_note", {"topic": "tests"}, "r0", SAMPLE_RESULT),
                ("ask_note", {}, "r0", elicit_result(text="set on another worker")),
                ("draft_note", {"topic": "more"}, "r0", SAMPLE_RESULT),
            ]
        ):
            first_worker, retry_worker = workers[index], workers[(index + 1) % 3]
            message = tool_call(tool, arguments, id=100 + index, capabilities=ALL_CAPABILITIES)
            first = _pinned_call(first_worker, message)
            assert first["resultType"] == "input_required" and set(first["inputRequests"]) == {key}, first
            done = _pinned_call(retry_worker, retry_of(message, {key: answer}, first["requestState"]))
            assert done["resultType"] == "complete", done
            expected = "drafted" if tool == "draft_note" else "note updated"
            assert done["content"][0]["text"] == expected
        tampered = retry_of(message, {"r0": SAMPLE_RESULT}, first["requestState"] + "-TAMPERED")
        headers = {name.replace("-", "_"): value for name, value in modern_headers(tampered).items()}
        answer_ = reply(workers[2].send("POST", tampered, **headers))
        assert answer_["error"]["code"] == INVALID_PARAMS, answer_
    finally:
        for worker in workers:
            worker.close()
    # no key configured: the one sealing secret every worker uses is in Redis
    assert redis_server.client().keys("*secret:request-state")


def test_official_client_through_gunicorn(example_gunicorn: Gunicorn) -> None:
    callbacks = Callbacks()
    served = ServedBy()

    async def main() -> None:
        http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(CLIENT_TIMEOUT),
            limits=httpx2.Limits(max_keepalive_connections=0),  # a new connection, so maybe another worker, per POST
            event_hooks={"response": [served.hook]},
        )
        async with http:
            transport = streamable_http_client(example_gunicorn.url, http_client=http)
            with anyio.fail_after(CLIENT_TIMEOUT):
                async with callbacks.client(transport, MODERN) as client:
                    for round_ in range(3):
                        assert _text_of(await client.call_tool("draft_note", {"topic": f"t{round_}"})) == "drafted"
                        assert _text_of(await client.call_tool("ask_note", {})) == "note updated"

    anyio.run(main)
    assert callbacks.asked == ["sampling", "elicitation"] * 3
    calls = [record for record in served.records if record[1] == "tools/call"]
    assert len(calls) == 12 and all(record[2] == 200 for record in calls), served.records
    assert not [record for record in served.records if record[0] != "POST"], served.records  # no GET, no DELETE


# -- 7. cancellation: the client closes the stream -------------------------------------------------


def _cancel(endpoint: Endpoint, tag: str) -> None:
    """Call wait_cancel, read its first progress event, hang up."""
    stream = endpoint.open(tool_call("wait_cancel", {"tag": tag}, id=tag, progress_token=tag))
    try:
        (event,) = stream.take(1)
        assert event["method"] == "notifications/progress" and event["params"]["progressToken"] == tag, event
    finally:
        stream.close()


def test_cancellation_werkzeug(live: LiveApp) -> None:
    _cancel(live.endpoint, "werkzeug")
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 5
    while not [what for tag, what in seen if tag == "werkzeug" and what != "started"]:
        try:
            tag, what, _seconds = live.handler.cancel_reports.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append((tag, what))
    outcomes = [what for tag, what in seen if tag == "werkzeug"]
    assert outcomes == ["started", "cancelled"], f"the handler never saw ctx.cancelled within 5 s: {outcomes}"


@pytest.mark.parametrize("accept", [ACCEPT_BOTH, "application/json"])
def test_not_cancelled_while_the_client_waits(live: LiveApp, accept: str) -> None:
    """Keepalives on an open stream (or a JSON answer, which has none) cancel nothing: the result comes."""
    tag = f"patient-{accept}"
    response, answer = live.endpoint.call(
        tool_call("wait_cancel", {"tag": tag, "limit": 1.2}, id=tag, progress_token=tag), accept=accept
    )
    assert response.status_code == 200 and answer["result"]["content"][0]["text"] == "not cancelled", answer
    if accept == ACCEPT_BOTH:
        frames = _frames(response)
        assert [frame.get("method") for frame in frames] == ["notifications/progress", None]


def _wait_for_report(path: str, tag: str, timeout: float = 5.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in read_report(path) if line[0] == tag]
        if any(line[1] != "started" for line in lines):
            return lines
        time.sleep(0.05)
    return [line for line in read_report(path) if line[0] == tag]


@pytest.fixture
def report(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "report.jsonl")
    monkeypatch.setenv(REPORT_ENV, path)  # inherited by the server subprocess
    return path


def test_cancellation_gevent_pywsgi(report: str) -> None:
    port = free_port()
    server = ServerProcess([PYTHON, "-m", "tests.stateless_support", "--port", str(port)], port)
    try:
        _cancel(Endpoint(server.url), "gevent")
        lines = _wait_for_report(report, "gevent")
        assert [line[1] for line in lines] == ["started", "cancelled"], (
            f"the handler never saw ctx.cancelled within 5 s: {lines}; {server.stderr()}"
        )
    finally:
        server.close()


def test_cancellation_gunicorn(report: str, redis_server: Any) -> None:
    server = Gunicorn(redis_server.url, app="tests.stateless_support:gunicorn_app()")
    try:
        _cancel(Endpoint(server.url), "gunicorn")
        lines = _wait_for_report(report, "gunicorn")
        assert [line[1] for line in lines] == ["started", "cancelled"], (
            f"the handler never saw ctx.cancelled within 5 s: {lines}; {server.stderr()}"
        )
    finally:
        server.close()


def test_mrtr_a_state_serves_one_retry_and_its_answers_cannot_be_replaced(http: Endpoint) -> None:
    """requestState is single use (its nonce is claimed), and what it sealed stands against inputResponses."""
    message = tool_call("ask_all", id=70, capabilities=ALL_CAPABILITIES)
    first = http.result(message)
    partial = http.result(retry_of(message, {"who": elicit_result(name="alice")}, first["requestState"]))
    assert partial["resultType"] == "input_required"
    _, replayed = http.call(retry_of(message, {"who": elicit_result(name="x")}, first["requestState"], id=72))
    assert replayed["error"]["code"] == -32602 and "already used" in replayed["error"]["message"]
    answers = {"who": elicit_result(name="mallory"), "draft": SAMPLE_RESULT, "roots": ROOTS_RESULT}
    done = http.result(retry_of(message, answers, partial["requestState"], id=73))
    assert json.loads(done["content"][0]["text"])["who"] == elicit_result(name="alice")  # the sealed answer stands
    _, again = http.call(retry_of(message, answers, partial["requestState"], id=74))
    assert again["error"]["code"] == -32602  # and that state is spent too
