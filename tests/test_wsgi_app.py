"""session_manager.wsgi.McpApp on its own: a WSGI application with no Flask (issue 10).

In-process through werkzeug's test client and WSGI middleware; the examples
serving it under gevent and inside Django are in tests/test_wsgi_examples.py.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import subprocess
import textwrap
import weakref
from typing import Any

import pytest
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request

from session_manager import SessionManagers
from session_manager.flask import LegacySseBlueprint, McpBlueprint
from session_manager.wsgi import DEFAULT_ALLOWED_HOSTS, DEFAULT_RETRY, McpApp, McpOptions

from .flask_support import ACCEPT_BOTH, LATEST, PYTHON, REPO, TestHandler, initialize_message, wait_until
from .stateless_support import modern_headers, tool_call

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def post(client: Client, path: str, message: Any, **headers: str) -> Any:
    return client.post(path, data=json.dumps(message), headers={"Content-Type": "application/json", **headers})


def initialize(client: Client, path: str = "/mcp", **headers: str) -> str:
    response = post(client, path, initialize_message(), Accept="application/json", **headers)
    assert response.status_code == 200, response.text
    assert response.json["result"]["protocolVersion"] == LATEST
    return response.headers["Mcp-Session-Id"]


def ping(client: Client, sid: str, **headers: str) -> Any:
    return post(client, "/mcp", PING, Accept="application/json", **{"Mcp-Session-Id": sid, **headers})


def first_chunk(response: Any) -> bytes:
    try:
        return next(response.iter_encoded())
    finally:
        response.close()


def test_the_transport_package_imports_and_serves_without_flask() -> None:
    code = """
        import json, sys
        from werkzeug.test import Client
        from session_manager.wsgi import McpApp

        app = McpApp(lambda message, ctx: {}, json_response=True)
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        response = Client(app).post("/mcp", data=json.dumps(body),
                                    headers={"Content-Type": "application/json", "Accept": "application/json"})
        assert response.status_code == 200 and "Mcp-Session-Id" in response.headers, response.text
        loaded = sorted(name for name in sys.modules if name.split(".")[0] == "flask")
        assert not loaded, loaded
    """
    done = subprocess.run([PYTHON, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_a_bare_app_serves_its_paths_and_404s_the_rest() -> None:
    handler = TestHandler()
    app = McpApp(handler)
    client = Client(app)
    assert app.paths == ("/mcp",) and app.legacy is None
    sid = initialize(client)
    assert ping(client, sid).json == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert [m["method"] for m in handler.messages()] == ["initialize", "ping"]
    assert client.get("/elsewhere").status_code == 404
    assert client.get("/sse").status_code == 404  # no legacy URLs unless asked for
    response = client.delete("/mcp", headers={"Mcp-Session-Id": sid})
    assert response.status_code == 204 and ping(client, sid).status_code == 404


@pytest.mark.parametrize("method", ["BREW", "PUT", "PROPFIND"])
def test_any_other_method_is_a_json_rpc_405(method: str) -> None:
    response = Client(McpApp(TestHandler())).open("/mcp", method=method)
    assert response.status_code == 405 and response.json["error"]["code"] == -32000
    assert response.headers["Allow"] == "GET, POST, DELETE" and "Origin" in response.headers["Vary"]


def test_peer_checks_and_errors_answer_with_json_rpc_bodies() -> None:
    client = Client(McpApp(TestHandler()))
    forbidden = post(client, "/mcp", PING, Accept=ACCEPT_BOTH, Host="evil.example")
    assert forbidden.status_code == 403 and forbidden.json["error"]["code"] == -32000
    malformed = client.post("/mcp", data=b"{", headers={"Content-Type": "application/json", "Accept": ACCEPT_BOTH})
    assert malformed.status_code == 400 and malformed.json["error"]["code"] == -32700


def test_the_legacy_endpoint_url_follows_the_mount_point() -> None:
    mcp = McpApp(TestHandler(), legacy_sse=True, sse_path="/events", messages_path="/rpc")
    assert mcp.paths == ("/mcp", "/events", "/rpc")
    client = Client(DispatcherMiddleware(McpApp(TestHandler()), {"/tools": mcp}))
    stream = client.get("/tools/events", buffered=False)
    try:
        first = next(stream.iter_encoded())
        assert first.startswith(b"event: endpoint\ndata: /tools/rpc?sessionId="), first
        endpoint = first.split(b"data: ", 1)[1].split(b"\n", 1)[0].decode()
        response = client.post(endpoint, data=json.dumps(initialize_message()), headers={"Content-Type": "application/json"})
        assert response.status_code == 202  # the reply travels on the stream
    finally:
        stream.close()  # the session ends with its stream


def test_the_principal_is_given_the_werkzeug_request() -> None:
    seen: list[Request] = []

    def principal(request: Request) -> str | None:
        seen.append(request)
        return request.headers.get("X-User")

    managers = SessionManagers()
    client = Client(McpApp(TestHandler(), managers=managers, principal=principal))
    sid = initialize(client, **{"X-User": "alice"})
    assert managers.info.exists(f"alice:{sid}") and isinstance(seen[0], Request)
    assert ping(client, sid, **{"X-User": "alice"}).status_code == 200
    assert ping(client, sid, **{"X-User": "bob"}).status_code == 404


class _Environ(dict):  # type: ignore[type-arg]
    """A WSGI environ that can be weakly referenced."""


@pytest.mark.parametrize(
    ("message", "headers", "answer"),
    [
        (initialize_message(), {"Accept": "application/json"}, b'"result"'),
        (tool_call("echo"), {"Accept": "application/json"}, b'"result"'),
        (tool_call("echo"), {}, b'"result"'),  # answered from a handler thread
        (tool_call("echo", progress_token=7), {}, b'"result"'),  # a stream: progress, then the reply
        (tool_call("echo"), {"Mcp-Name": "other"}, b'"error"'),  # refused once the message was read
    ],
    ids=["initialize", "modern-json", "modern-sse", "modern-stream", "refused"],
)
def test_a_served_request_is_freed_with_its_response_not_left_to_the_garbage_collector(
    message: Any, headers: dict[str, str], answer: bytes
) -> None:
    # werkzeug's Request puts itself in the environ by default (a cycle per request, holding the
    # server's input stream until the next collection); a refusal's traceback holds the frames.
    def handler(message: dict[str, Any], ctx: Any) -> dict[str, Any]:
        if message["method"] == "tools/call" and ctx.progress_token is not None:
            ctx.progress(1, 2)
        return {"tools": []} if message["method"] == "tools/list" else {}

    app = McpApp(handler)
    sent = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
    if message["method"] != "initialize":
        sent.update(modern_headers(message))
    builder = EnvironBuilder(path="/mcp", method="POST", headers={**sent, **headers}, data=json.dumps(message))
    environ = _Environ(builder.get_environ())
    freed = weakref.ref(environ)
    gc.disable()  # refcounting alone must free it
    try:
        body = app(environ, lambda status, response_headers, exc_info=None: None)
        try:
            assert answer in b"".join(body)
        finally:
            getattr(body, "close", lambda: None)()
        del environ, body
        wait_until(lambda: freed() is None, what="the environ to be freed (its handler thread done)")
    finally:
        gc.enable()
        app.close()


def test_close_ends_the_app_and_new_requests_get_503() -> None:
    app = McpApp(TestHandler())
    client = Client(app)
    initialize(client)
    assert app.close(timeout=1) is True
    response = post(client, "/mcp", initialize_message(), Accept="application/json")
    assert response.status_code == 503 and response.json["error"]["code"] == -32603


# -- one options object ------------------------------------------------------------------


def test_options_are_one_frozen_object_with_the_defaults_defined_once() -> None:
    options = McpOptions()
    assert options.allowed_hosts == DEFAULT_ALLOWED_HOSTS and options.retry == DEFAULT_RETRY
    assert options.server_info["name"] == "session_manager" and options.capabilities == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.retry = 5  # type: ignore[misc]
    mcp = McpBlueprint(TestHandler())
    legacy = LegacySseBlueprint(TestHandler())
    assert mcp.transport.options == legacy.transport.options == McpApp(TestHandler()).options == options
    assert mcp.legacy_sse_blueprint().transport is mcp.transport  # one transport, one options object
    hosts = McpOptions(allowed_hosts=(h for h in ["example.com"]))  # an iterator is read once
    assert hosts.allowed_hosts == ("example.com",) and hosts.hosts is not None and hosts.hosts.allows("example.com")


@pytest.mark.parametrize(
    "options, error",
    [
        ({"max_body_size": 0}, ValueError),
        ({"keepalive": 0}, ValueError),
        ({"stream_maxsize": 0}, ValueError),
        ({"retry": -1}, ValueError),
        ({"principal": "alice"}, TypeError),
        ({"allowed_hosts": "localhost"}, TypeError),
        ({"allowed_origins": ["not an origin"]}, ValueError),
        ({"no_such_option": 1}, TypeError),
        ({"max_handlers": 0}, ValueError),
        ({"max_session_info": 0}, ValueError),
        ({"eras": "modern"}, ValueError),
        ({"eras": ("modern", "future")}, ValueError),
        ({"cache_ttl_ms": -1}, ValueError),
        ({"cache_scope": "shared"}, ValueError),
        ({"state_keys": [b"short"]}, ValueError),
        ({"state_ttl": 0}, ValueError),
    ],
)
def test_every_entry_point_checks_options_the_same_way(options: dict[str, Any], error: type[Exception]) -> None:
    for entry_point in (McpApp, McpBlueprint, LegacySseBlueprint):
        with pytest.raises(error):
            entry_point(TestHandler(), **options)
    with pytest.raises(error):
        McpOptions(**options)


def test_options_come_as_keywords_or_as_one_object_not_both() -> None:
    options = McpOptions(instructions="hi")
    assert McpApp(TestHandler(), options=options).options is options
    with pytest.raises(TypeError):
        McpApp(TestHandler(), options=options, keepalive=1)
    with pytest.raises(TypeError):
        McpApp("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        McpApp(TestHandler(), legacy_sse=True, sse_path="/mcp")
    with pytest.raises(TypeError):
        LegacySseBlueprint(TestHandler(), json_response=True)


# -- the Flask adapters over an McpApp ---------------------------------------------------------


def test_blueprints_over_an_existing_app_share_its_sessions() -> None:
    mcp_app = McpApp(TestHandler(), server_info={"name": "shared", "version": "1"})
    flask_app = Flask(__name__)
    blueprint = McpBlueprint(mcp_app)
    flask_app.register_blueprint(blueprint)
    flask_app.register_blueprint(LegacySseBlueprint(mcp_app))
    assert blueprint.transport is mcp_app and blueprint.managers is mcp_app.managers
    sid = initialize(flask_app.test_client())  # through Flask
    assert ping(Client(mcp_app), sid).status_code == 200  # the same session, straight to the app
    first = first_chunk(flask_app.test_client().get("/sse", buffered=False))
    assert first.startswith(b"event: endpoint\ndata: /messages?sessionId="), first
    with pytest.raises(TypeError):
        McpBlueprint(mcp_app, keepalive=1)
    with pytest.raises(TypeError):
        LegacySseBlueprint(mcp_app, managers=SessionManagers())


def test_the_flask_principal_takes_no_argument_and_reads_flask_request() -> None:
    from flask import request

    managers = SessionManagers()
    app = Flask(__name__)
    app.register_blueprint(McpBlueprint(TestHandler(), managers=managers, principal=lambda: request.headers.get("X-User")))
    sid = initialize(app.test_client(), **{"X-User": "carol"})
    assert managers.info.exists(f"carol:{sid}")


def test_a_handler_thread_under_the_blueprint_sees_flasks_request_and_g() -> None:
    """The request thread runs in the request's context variables: ``flask.request`` and ``g`` work there."""
    import flask

    seen: dict[str, Any] = {}

    def handler(message: dict[str, Any], ctx: Any) -> Any:
        if message.get("method") == "tools/call":  # on its own thread: the answer is an SSE stream
            seen["header"] = flask.request.headers.get("X-Trace")
            seen["user"] = flask.g.user
            return {"content": []}
        return {}

    app = Flask(__name__)
    app.register_blueprint(McpBlueprint(handler))

    @app.before_request
    def authenticate() -> None:
        flask.g.user = "alice"

    client = app.test_client()
    sid = initialize(client)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "t", "arguments": {}}}
    response = post(client, "/mcp", call, Accept=ACCEPT_BOTH, **{"Mcp-Session-Id": sid, "X-Trace": "t-1"})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert b'"result"' in response.get_data()  # the stream ends after the response
    assert seen == {"header": "t-1", "user": "alice"}


_GEVENT_WORKERS = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import logging, threading, gevent
    from session_manager import SessionManagers
    from session_manager.wsgi._lifecycle import Lifecycle, _Greenlet
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    lifecycle, done, release = Lifecycle(), [], threading.Event()
    def boom(): raise RuntimeError("boom")
    def exit_(): raise SystemExit(3)
    for i in range(50):
        lifecycle.start(f"key{i % 5}", "quick", done.append, i)
    lifecycle.start("bad", "failing", boom)
    lifecycle.start("bad", "exiting", exit_)
    lifecycle.start("slow", "slow", release.wait)
    assert all(type(worker) is _Greenlet for worker in lifecycle._workers)
    gevent.sleep(0.05)
    assert sorted(done) == list(range(50)), done
    assert lifecycle.is_running("slow") and not lifecycle.is_running("key0") and not lifecycle.is_running("bad")
    gevent.spawn_later(0.5, release.set)
    print("left" if not lifecycle.close(SessionManagers(), 0.2) else "none left")
    gevent.sleep(0.5)
    print("still running" if lifecycle.is_running("slow") else "over")
    """
)


def test_under_gevent_request_handlers_are_greenlets_that_close_waits_for_and_errors_do_not_escape() -> None:
    """A bare greenlet per handler: every one runs, a failure (even SystemExit) is logged, close() reports a laggard."""
    proc = subprocess.run([PYTHON, "-c", _GEVENT_WORKERS], check=False, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["left", "over"], proc.stdout
    assert "MCP request thread failed on failing" in proc.stderr
    assert "MCP request greenlet mcp-exiting failed" in proc.stderr
    assert "1 MCP handler(s) still running at shutdown: mcp-slow" in proc.stderr
