"""What a server lets a ``subscriptions/listen`` stream watch: its capabilities, its handler's say, its bounds.

A live McpApp on a threaded werkzeug server and raw HTTP (the acknowledgement is the stream's first message).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from session_manager.wsgi import METHOD_NOT_FOUND, JsonRpcError, McpApp

from .flask_support import ThreadedServer
from .sse_parser import iter_events
from .stateless_support import modern_headers, modern_request

EVERYTHING = {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}


def listen(url: str, notifications: Any, *, id: Any = 1, accept: str = "application/json, text/event-stream") -> requests.Response:
    message = modern_request("subscriptions/listen", {"notifications": notifications}, id=id)
    headers = modern_headers(message) | {"Accept": accept, "Content-Type": "application/json"}
    return requests.post(url, data=json.dumps(message), headers=headers, stream=True, timeout=10)


def acknowledged(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    first = next(e for e in iter_events(response.iter_content(chunk_size=None)) if e.data)
    message = json.loads(first.data)
    assert message["method"] == "notifications/subscriptions/acknowledged"
    response.close()
    return message["params"]["notifications"]


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    made: list[tuple[McpApp, ThreadedServer]] = []

    def make(handler: Any = None, **options: Any) -> str:
        app = McpApp(handler or (lambda message, ctx: None), keepalive=0.5, **options)
        server = ThreadedServer(app)
        made.append((app, server))
        return f"http://127.0.0.1:{server.port}/mcp"

    yield make
    for app, server in made:
        app.close(1)
        server.close()


def test_the_acknowledgement_names_only_what_the_declared_capabilities_honour(serve: Callable[..., str]) -> None:
    url = serve(capabilities={"tools": {"listChanged": True}, "resources": {}})
    wanted = EVERYTHING | {"resourceSubscriptions": ["file:///a"]}
    assert acknowledged(listen(url, wanted)) == {"toolsListChanged": True, "resourcesListChanged": True}
    subscribe = serve(capabilities={"resources": {"subscribe": True}})
    assert acknowledged(listen(subscribe, wanted)) == {"resourcesListChanged": True, "resourceSubscriptions": ["file:///a"]}
    undeclared = serve()  # a server that declares nothing honours everything
    assert acknowledged(listen(undeclared, wanted)) == wanted


def test_the_handler_may_refuse_a_listen_or_grant_less(serve: Callable[..., str]) -> None:
    def handler(message: dict[str, Any], ctx: Any) -> Any:
        if message.get("method") != "subscriptions/listen":
            raise JsonRpcError(METHOD_NOT_FOUND, "no")
        uris = message["params"]["notifications"].get("resourceSubscriptions", [])
        if any(uri.startswith("secret://") for uri in uris):
            raise JsonRpcError(-32003, "Forbidden: not your resource")
        return {"notifications": {"toolsListChanged": True}}  # whatever was asked: tools only

    url = serve(handler)
    refused = listen(url, {"resourceSubscriptions": ["secret://other-tenant"]}, id="x")
    assert refused.status_code == 403 and refused.json() == {
        "jsonrpc": "2.0", "id": "x", "error": {"code": -32003, "message": "Forbidden: not your resource"}
    }
    assert acknowledged(listen(url, EVERYTHING)) == {"toolsListChanged": True}


def test_a_listen_stream_is_sse_even_when_the_server_answers_requests_with_json(serve: Callable[..., str]) -> None:
    url = serve(json_response=True)
    assert acknowledged(listen(url, {"toolsListChanged": True})) == {"toolsListChanged": True}
    only_json = listen(url, {"toolsListChanged": True}, accept="application/json")
    assert only_json.status_code == 406 and only_json.json()["id"] == 1


def test_listen_streams_are_bounded_in_number_and_in_uri_bytes(serve: Callable[..., str]) -> None:
    url = serve(max_listen_streams=1)
    first = listen(url, {"toolsListChanged": True})
    assert first.status_code == 200
    second = listen(url, {"toolsListChanged": True}, id=2)
    assert second.status_code == 503 and second.headers["Retry-After"] == "1" and second.json()["id"] == 2
    first.close()
    big = serve()
    uris = [f"file:///{i:04d}/" + "x" * 100 for i in range(1000)]  # 1,000 URIs of ~110 bytes: over 64 KiB
    refused = listen(big, {"resourceSubscriptions": uris}, id=3)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == -32602 and refused.json()["id"] == 3
