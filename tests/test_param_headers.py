"""``Mcp-Param-*`` headers (2026-07-28): a tools/call must mirror its ``x-mcp-header`` arguments, or get 400 -32020.

A live McpApp on a threaded werkzeug server and raw HTTP: the annotations
come from the handler's own ``tools/list``, learned by the transport.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from session_manager.wsgi import METHOD_NOT_FOUND, JsonRpcError, McpApp

from .flask_support import ThreadedServer
from .stateless_support import modern_headers, tool_call

SCHEMA = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "count": {"type": "integer", "x-mcp-header": "Count"},
        "dry": {"type": "boolean", "x-mcp-header": "Dry"},
        "target": {"type": "object", "properties": {"host": {"type": "string", "x-mcp-header": "Host-Name"}}},
        "note": {"type": "string"},
    },
}
BAD_SCHEMA = {"type": "object", "properties": {"size": {"type": "number", "x-mcp-header": "Size"}}}


class Tools:
    """Tools with annotated arguments; counts the tools/list calls the transport makes."""

    def __init__(self) -> None:
        self.listed = 0
        self.tools = [
            {"name": "deploy", "inputSchema": SCHEMA},
            {"name": "odd", "inputSchema": BAD_SCHEMA},
            {"name": "plain", "inputSchema": {"type": "object"}},
        ]

    def __call__(self, message: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
        method = message.get("method")
        if method == "tools/list":
            self.listed += 1
            return {"tools": list(self.tools)}
        if method == "tools/call":
            return {"content": [{"type": "text", "text": json.dumps(message["params"].get("arguments"))}]}
        if "id" in message:
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        return None


@pytest.fixture
def live() -> Iterator[tuple[McpApp, Tools, str]]:
    tools = Tools()
    app = McpApp(tools)
    server = ThreadedServer(app)
    yield app, tools, f"http://127.0.0.1:{server.port}/mcp"
    app.close(1)
    server.close()


def call(url: str, name: str, arguments: dict[str, Any], **params: str) -> requests.Response:
    message = tool_call(name, arguments)
    headers = modern_headers(message) | {"Accept": "application/json", "Content-Type": "application/json"}
    headers |= {f"Mcp-Param-{key}": value for key, value in params.items()}
    return requests.post(url, data=json.dumps(message), headers=headers, timeout=10)


def b64(text: str) -> str:
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


FULL = {"region": "eu-west-1", "count": 3, "dry": True, "target": {"host": "db1"}}
MIRRORED = {"Region": "eu-west-1", "Count": "3", "Dry": "true", "Host-Name": "db1"}


def test_mirrored_arguments_pass_and_the_tool_list_is_read_once(live: tuple[McpApp, Tools, str]) -> None:
    app, tools, url = live
    for _ in range(3):
        response = call(url, "deploy", FULL, **MIRRORED)
        assert response.status_code == 200 and "result" in response.json(), response.text
    assert call(url, "deploy", {"note": "no annotated argument"}).status_code == 200  # nothing to mirror
    assert tools.listed == 1
    app.tools_list_changed()  # the annotations are learned again
    assert call(url, "deploy", FULL, **MIRRORED).status_code == 200 and tools.listed == 2


@pytest.mark.parametrize(
    ("arguments", "headers"),
    [
        pytest.param(FULL, {k: v for k, v in MIRRORED.items() if k != "Region"}, id="header missing"),
        pytest.param(FULL, MIRRORED | {"Region": "us-east-1"}, id="string differs"),
        pytest.param(FULL, MIRRORED | {"Count": "4"}, id="integer differs"),
        pytest.param(FULL, MIRRORED | {"Dry": "false"}, id="boolean differs"),
        pytest.param(FULL, MIRRORED | {"Host-Name": "db2"}, id="nested differs"),
        pytest.param({"note": "x"}, {"Region": "eu-west-1"}, id="header without its argument"),
        pytest.param(FULL | {"region": "eu-west"}, MIRRORED | {"Region": "=?base64?ZXUtd2VzdA?="}, id="unpadded base64"),
        pytest.param(FULL, MIRRORED | {"Region": "=?base64?ZXUtd2VzdC0x!!?="}, id="not base64"),
    ],
)
def test_arguments_and_headers_that_disagree_get_400_header_mismatch(
    live: tuple[McpApp, Tools, str], arguments: dict[str, Any], headers: dict[str, str]
) -> None:
    _, _, url = live
    response = call(url, "deploy", arguments, **headers)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"]["code"] == -32020 and body["id"] == 1 and "Mcp-Param-" in body["error"]["message"]


def test_values_compare_as_the_client_meant_them(live: tuple[McpApp, Tools, str]) -> None:
    _, _, url = live
    arguments = FULL | {"region": "Zürich ", "count": 42}
    headers = MIRRORED | {"Region": b64("Zürich "), "Count": "42.0"}  # non-ASCII and edge spaces come in base64
    assert call(url, "deploy", arguments, **headers).status_code == 200


def test_tools_without_valid_annotations_are_not_checked(live: tuple[McpApp, Tools, str]) -> None:
    _, _, url = live
    assert call(url, "odd", {"size": 1.5}).status_code == 200  # x-mcp-header on a number: invalid, ignored
    assert call(url, "plain", {"x": 1}, Anything="goes").status_code == 200
    assert call(url, "unknown-tool", {}).status_code == 200  # the handler answers for it


def test_a_tool_list_that_fails_refuses_the_call_and_is_not_kept(live: tuple[McpApp, Tools, str]) -> None:
    """The check never turns itself off: a failed tools/list is a 503 for that call, then learned again."""
    _, tools, url = live
    original = tools.tools
    tools.tools = None  # type: ignore[assignment]  # tools/list now crashes
    refused = call(url, "deploy", FULL, **MIRRORED | {"Region": "elsewhere"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == -32603
    tools.tools = original
    assert call(url, "deploy", FULL, **MIRRORED | {"Region": "elsewhere"}).status_code == 400  # checked again
    assert call(url, "deploy", FULL, **MIRRORED).status_code == 200
