"""Unit tests of the Flask transport's pieces, and mounting (Flask test client)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Blueprint, Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from session_manager import SessionManagers
from session_manager._jsonrpc import HttpError, check_message, parse_message
from session_manager.flask import JsonRpcError, McpBlueprint, Notifier
from session_manager.wsgi._checks import Allowlist, read_body
from session_manager.wsgi._session_ids import is_minted, mint_session_id, session_key

from .flask_support import ACCEPT_BOTH, TestHandler, initialize_message


def test_json_rpc_error_checks_its_arguments() -> None:
    assert JsonRpcError(-1, "m", {"d": 1}).to_dict() == {"code": -1, "message": "m", "data": {"d": 1}}
    assert JsonRpcError(-1, "m").to_dict() == {"code": -1, "message": "m"}
    with pytest.raises(TypeError):
        JsonRpcError("-1", "m")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        JsonRpcError(-1, None)  # type: ignore[arg-type]


def test_message_kinds() -> None:
    request = check_message({"jsonrpc": "2.0", "id": "x", "method": "m", "params": {"a": 1}})
    assert (request.kind, request.id, request.method, request.params) == ("request", "x", "m", {"a": 1})
    note = check_message({"jsonrpc": "2.0", "method": "n"})
    assert (note.kind, note.id, note.params) == ("notification", None, {})
    assert check_message({"jsonrpc": "2.0", "id": 1, "result": {}}).kind == "response"
    assert check_message({"jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": "x"}}).kind == "response"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_parse_message_only_raises_http_400(body: bytes) -> None:
    try:
        parse_message(body)
    except HttpError as error:
        assert error.status == 400 and error.error.code in (-32700, -32600)
        json.loads(error.body())


def test_allowlists() -> None:
    hosts = Allowlist(["localhost", "[::1]", "example.com:8443", "wild.example:*"], origins=False)
    assert all(hosts.allows(h) for h in ["localhost", "LocalHost:80", "[::1]:1", "example.com:8443", "wild.example:9"])
    assert not any(hosts.allows(h) for h in [None, "", "example.com", "example.com:8444", "localhost:*", "localhost:x", "a@localhost", "[::2]"])
    origins = Allowlist(["https://app.example"], origins=True)
    assert origins.allows("https://app.example") and origins.allows("https://app.example:444")
    assert not any(origins.allows(o) for o in ["http://app.example", "https://app.example/path", "null", "app.example"])


def test_read_body_limit() -> None:
    import io

    assert read_body(io.BytesIO(b"x" * 10), None, 10) == b"x" * 10
    with pytest.raises(HttpError) as raised:
        read_body(io.BytesIO(b"x" * 11), None, 10)
    assert raised.value.status == 413
    with pytest.raises(HttpError):
        read_body(io.BytesIO(b""), 11, 10)


def test_session_ids_and_keys() -> None:
    sid = mint_session_id()
    assert is_minted(sid) and not is_minted(sid + ":") and not is_minted("x")
    assert session_key(None, sid) == sid
    assert session_key("alice", sid) == f"alice:{sid}"
    hashed = {session_key(p, sid) for p in ["~alice", "a b", "", "x" * 101, "é"]}
    assert len(hashed) == 5 and all(key.startswith("~") and key.endswith(":" + sid) for key in hashed)


def test_notifier_needs_managers() -> None:
    with pytest.raises(TypeError):
        Notifier(object())  # type: ignore[arg-type]


def test_blueprint_checks_its_options() -> None:
    with pytest.raises(TypeError):
        McpBlueprint("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        McpBlueprint(TestHandler(), max_body_size=0)
    with pytest.raises(ValueError):
        McpBlueprint(TestHandler(), keepalive=0)
    with pytest.raises(TypeError):
        McpBlueprint(TestHandler(), principal="alice")  # type: ignore[arg-type]


def _initialize(client: Any, path: str) -> Any:
    return client.post(path, json=initialize_message(), headers={"Accept": ACCEPT_BOTH})


@pytest.mark.parametrize(
    "prefix, mount, path",
    [("/mcp", {}, "/mcp"), (None, {}, "/"), ("/mcp", {"url_prefix": "/api/v1/mcp"}, "/api/v1/mcp")],
)
def test_mounting(prefix: Any, mount: dict[str, Any], path: str) -> None:
    app = Flask(__name__)
    app.register_blueprint(McpBlueprint(TestHandler(), url_prefix=prefix), **mount)
    client = app.test_client()
    assert _initialize(client, path).status_code == 200
    response = client.open(path, method="BREW")
    assert response.status_code == 405 and response.json["error"]["code"] == -32000


def test_two_endpoints_in_one_app_and_nested_blueprints() -> None:
    app = Flask(__name__)
    parent = Blueprint("api", __name__, url_prefix="/api")
    parent.register_blueprint(McpBlueprint(TestHandler(), name="inner", url_prefix="/mcp"))
    app.register_blueprint(parent)
    app.register_blueprint(McpBlueprint(TestHandler(), name="outer", url_prefix="/mcp2"))
    client = app.test_client()
    for path in ("/api/mcp", "/mcp2"):
        assert _initialize(client, path).status_code == 200
        assert client.open(path, method="BREW").json["error"]["code"] == -32000


def test_the_405_fallback_keeps_an_earlier_app_handler() -> None:
    from werkzeug.exceptions import MethodNotAllowed

    app = Flask(__name__)
    app.register_error_handler(MethodNotAllowed, lambda exc: ("app's own 405", 405))

    @app.get("/other")
    def other() -> str:
        return "ok"

    app.register_blueprint(McpBlueprint(TestHandler()))
    client = app.test_client()
    assert client.open("/other", method="BREW").data == b"app's own 405"
    assert client.open("/mcp", method="BREW").json["error"]["code"] == -32000


@pytest.mark.parametrize("host", [".", "..", "a..b"])
def test_an_unparsable_host_is_a_json_rpc_400_on_mcp_urls_only(host: str) -> None:
    from werkzeug.exceptions import BadRequest

    app = Flask(__name__)
    app.register_error_handler(BadRequest, lambda exc: ("app's own 400", 400))

    @app.post("/other")
    def other() -> str:
        return "ok"

    mcp = McpBlueprint(TestHandler())
    app.register_blueprint(mcp)
    app.register_blueprint(mcp.legacy_sse_blueprint())
    client = app.test_client()
    for path in ("/mcp", "/sse", "/messages"):
        response = client.post(path, headers={"Host": host})
        assert response.status_code == 400 and response.json["error"]["code"] == -32600, path
        assert "Origin" in response.headers["Vary"]
    assert client.post("/other", headers={"Host": host}).data == b"app's own 400"
    assert client.post("/other").data == b"ok"


def test_one_blueprint_on_two_apps_shares_its_managers() -> None:
    managers = SessionManagers()
    blueprint = McpBlueprint(TestHandler(), managers=managers)
    first, second = Flask("first"), Flask("second")
    first.register_blueprint(blueprint)
    second.register_blueprint(blueprint)
    sid = _initialize(first.test_client(), "/mcp").headers["Mcp-Session-Id"]
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    response = second.test_client().post("/mcp", json=ping, headers={"Accept": "application/json", "Mcp-Session-Id": sid})
    assert response.json == {"jsonrpc": "2.0", "id": 1, "result": {}}
