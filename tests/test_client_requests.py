"""Server-to-client requests (``ctx.request``) and closing a request's stream (``ctx.close_stream``), in one process.

Real servers (threaded werkzeug) and real clients: the official ``mcp``
client answering elicitation, sampling and roots requests, and raw HTTP for
everything a well-behaved client never does (error replies, late, duplicate
and foreign replies). Across worker processes with Redis: test_redis_client_requests.py.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest
import requests
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, SessionManagers
from session_manager.flask import METHOD_NOT_FOUND, REQUEST_TIMEOUT, ClientRequestError, JsonRpcError, RequestContext
from session_manager.wsgi import McpApp

from .flask_support import LATEST, Harness, ThreadedServer, events_of, initialize_message, reply_of, serve, wait_until
from .legacy_support import LegacyServer
from .sse_parser import Event, SSEParser, iter_events

ACCEPT = "application/json, text/event-stream"

__all__ = ["serve"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")


class AskingHandler:
    """Tools that ask the client something through ``ctx.request``; records how each ended."""

    def __init__(self) -> None:
        self.outcomes: queue.Queue[Any] = queue.Queue()
        self.release = threading.Event()

    def __call__(self, message: dict[str, Any], ctx: RequestContext) -> dict[str, Any] | None:
        method, params = message.get("method"), message.get("params") or {}
        if "id" not in message or method is None:
            return None
        if method == "initialize" or method == "ping":
            return {}
        if method == "tools/list":  # the official client validates results against it
            schema = {"type": "object"}
            return {"tools": [{"name": n, "inputSchema": schema} for n in ("ask", "close_then_answer")]}
        if method == "tools/call":
            return self.call(params["name"], params.get("arguments") or {}, ctx)
        raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    def call(self, name: str, arguments: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        if name == "close_then_answer":  # SEP-1699: the stream ends, the handler goes on
            ctx.notify("notifications/test", {"before": True})
            closed = ctx.close_stream(retry=arguments.get("retry", 50))
            self.release.wait(10)
            ctx.notify("notifications/test", {"after": True})
            return text(f"closed={closed}")
        try:
            result = ctx.request(arguments["method"], arguments.get("params"), timeout=arguments.get("timeout", 10))
        except ClientRequestError as error:
            self.outcomes.put(error)
            raise
        self.outcomes.put(result)
        return text(json.dumps(result, sort_keys=True))


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


def tool_call(name: str, arguments: dict[str, Any], id: Any = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


class StreamedCall:
    """A POST whose SSE answer is read on a thread: events arrive in :attr:`events` as they come."""

    def __init__(self, harness: Harness, sid: str, message: dict[str, Any]) -> None:
        self.events: queue.Queue[Event | None] = queue.Queue()
        self.parser = SSEParser()
        self.response = harness.post(message, sid, stream=True)
        assert self.response.status_code == 200, self.response.text
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                for event in self.parser.feed(chunk):
                    self.events.put(event)
        except (requests.RequestException, AttributeError, OSError):
            pass  # closed under the reader by close()
        finally:
            self.events.put(None)

    def next_message(self, timeout: float = 10) -> dict[str, Any] | None:
        """The next message on the stream (priming events skipped); None once it ended."""
        while True:
            event = self.events.get(timeout=timeout)
            if event is None:
                return None
            if event.data:
                return json.loads(event.data)

    def close(self) -> None:
        """Wait for the stream to end (every test's stream does), then release the connection."""
        self.thread.join(10)
        self.response.close()


@pytest.fixture
def asking(serve: Any) -> Iterator[Harness]:
    harness: Harness = serve(AskingHandler())
    yield harness
    assert len(harness.managers.streams._pending_replies()) == 0  # nothing outlives its request


def client_request_of(call: StreamedCall) -> dict[str, Any]:
    message = call.next_message()
    assert message is not None and "method" in message and "id" in message, message
    return message


def reply(harness: Harness, sid: str, request_id: Any, *, result: Any = None, error: Any = None) -> requests.Response:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
    body.update({"error": error} if error is not None else {"result": result if result is not None else {}})
    return harness.post(body, sid)


# -- the official client -------------------------------------------------------------


def test_the_official_client_answers_elicitation_sampling_and_roots_through_ctx_request(asking: Harness) -> None:
    async def on_elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def on_sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked = params.messages[0].content.text
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"echo: {asked}"), model="test-model"
        )

    async def on_roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///tmp/project", name="project")])

    async def test() -> None:
        http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=60))
        async with (
            http,
            streamable_http_client(asking.url, http_client=http) as (read, write),
            ClientSession(
                read, write, sampling_callback=on_sample, elicitation_callback=on_elicit, list_roots_callback=on_roots
            ) as session,
        ):
            await session.initialize()
            elicit = {
                "method": "elicitation/create",
                "params": {
                    "mode": "form",
                    "message": "Your name?",
                    "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}},
                },
            }
            answered = await session.call_tool("ask", elicit)
            assert json.loads(answered.content[0].text) == {"action": "accept", "content": {"name": "Ada"}}
            sample = {
                "method": "sampling/createMessage",
                "params": {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}], "maxTokens": 5},
            }
            sampled = json.loads((await session.call_tool("ask", sample)).content[0].text)
            assert sampled["content"]["text"] == "echo: hi" and sampled["model"] == "test-model"
            roots = json.loads((await session.call_tool("ask", {"method": "roots/list"})).content[0].text)
            assert roots["roots"] == [{"uri": "file:///tmp/project", "name": "project"}]

    anyio.run(test)


# -- replies, good and bad, over raw HTTP ----------------------------------------------------


def test_a_reply_resumes_the_handler_with_the_clients_result(asking: Harness) -> None:
    sid = asking.initialize()
    call = StreamedCall(asking, sid, tool_call("ask", {"method": "roots/list"}))
    request = client_request_of(call)
    assert request["method"] == "roots/list" and request["id"].startswith("s2c-")
    assert reply(asking, sid, request["id"], result={"roots": []}).status_code == 202
    assert call.next_message() == {"jsonrpc": "2.0", "id": 7, "result": text('{"roots": []}')}
    call.close()


def test_an_error_reply_raises_client_request_error_with_the_clients_code(asking: Harness) -> None:
    sid = asking.initialize()
    call = StreamedCall(asking, sid, tool_call("ask", {"method": "roots/list"}))
    request = client_request_of(call)
    error = {"code": -32042, "message": "user declined", "data": {"why": "busy"}}
    assert reply(asking, sid, request["id"], error=error).status_code == 202
    outcome = asking.handler.outcomes.get(timeout=10)
    assert isinstance(outcome, ClientRequestError) and outcome.reason == "error"
    assert (outcome.code, outcome.message, outcome.data) == (-32042, "user declined", {"why": "busy"})
    assert call.next_message() == {"jsonrpc": "2.0", "id": 7, "error": error}  # uncaught: answers the tool call
    call.close()


def test_a_request_times_out_and_its_late_reply_is_dropped(asking: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="session_manager.wsgi._client_requests")  # any client can send these
    sid = asking.initialize()
    call = StreamedCall(asking, sid, tool_call("ask", {"method": "roots/list", "timeout": 0.2}))
    request = client_request_of(call)
    final = call.next_message()
    assert final is not None and final["error"]["code"] == REQUEST_TIMEOUT and "roots/list" in final["error"]["message"]
    assert asking.handler.outcomes.get(timeout=10).reason == "timeout"
    late = reply(asking, sid, request["id"], result={"roots": []})
    assert late.status_code == 202 and late.content == b""
    assert sum("dropped a client reply" in r.getMessage() for r in caplog.records) == 1  # logged once
    assert asking.handler.outcomes.empty()
    call.close()


def test_replies_from_another_session_duplicates_and_unknown_ids_reach_no_handler(asking: Harness) -> None:
    owner, other = asking.initialize(), asking.initialize()
    call = StreamedCall(asking, owner, tool_call("ask", {"method": "roots/list"}))
    request = client_request_of(call)
    # Another session presenting the id: accepted as a reply, but matched to nothing.
    assert reply(asking, other, request["id"], result={"roots": [{"uri": "file:///evil"}]}).status_code == 202
    assert reply(asking, owner, "s2c-0000000000000000", result={}).status_code == 202  # never issued
    assert asking.handler.outcomes.empty()
    assert reply(asking, owner, request["id"], result={"roots": []}).status_code == 202
    assert reply(asking, owner, request["id"], result={"roots": [{"uri": "file:///twice"}]}).status_code == 202
    assert asking.handler.outcomes.get(timeout=10) == {"roots": []}
    assert call.next_message() == {"jsonrpc": "2.0", "id": 7, "result": text('{"roots": []}')}
    assert asking.handler.outcomes.empty()
    call.close()


@pytest.mark.parametrize(
    "body",
    [
        {"jsonrpc": "2.0", "id": "s2c-0000000000000000", "result": ["not", "an", "object"]},
        {"jsonrpc": "2.0", "id": "s2c-0000000000000000", "error": {"code": "x", "message": 1}},
        {"jsonrpc": "2.0", "id": "s2c-0000000000000000"},
    ],
)
def test_a_malformed_reply_gets_400_with_its_id(asking: Harness, body: dict[str, Any]) -> None:
    sid = asking.initialize()
    response = asking.post(body, sid)
    assert response.status_code == 400
    assert response.json()["id"] == "s2c-0000000000000000" and response.json()["error"]["code"] == -32600


def test_a_client_without_the_capability_is_not_asked(asking: Harness) -> None:
    sid = asking.initialize()  # declares roots only
    response = asking.post(tool_call("ask", {"method": "sampling/createMessage", "params": {}}), sid)
    error = reply_of(response)["error"]
    assert "'sampling' capability" in error["message"]
    assert [json.loads(e.data).get("method") for e in events_of(response)] == [None]  # nothing was sent to the client
    assert asking.handler.outcomes.get(timeout=10).reason == "capability"


def test_a_session_deleted_while_its_handler_waits_ends_the_wait(asking: Harness) -> None:
    sid = asking.initialize()
    call = StreamedCall(asking, sid, tool_call("ask", {"method": "roots/list", "timeout": 30}))
    client_request_of(call)
    response = asking.http.delete(asking.url, headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST})
    assert response.status_code == 204
    outcome = asking.handler.outcomes.get(timeout=10)
    assert isinstance(outcome, ClientRequestError) and outcome.reason == "session"
    call.close()


# -- JSON answers: the request travels on the GET stream -----------------------------------------


def test_in_json_mode_a_request_travels_on_the_get_stream(serve: Any) -> None:
    harness: Harness = serve(AskingHandler(), json_response=True)
    sid = harness.initialize()
    stream = harness.open_stream(sid)
    answer: dict[str, Any] = {}
    params = tool_call("ask", {"method": "roots/list"})["params"]
    caller = threading.Thread(target=lambda: answer.update(harness.request(sid, "tools/call", params)))
    caller.start()
    request = stream.take(1)[0]
    assert request["method"] == "roots/list"
    assert reply(harness, sid, request["id"], result={"roots": []}).status_code == 202
    caller.join(10)
    assert answer["result"] == text('{"roots": []}')


def test_emit_without_a_get_stream_in_json_mode_returns_false_and_a_request_fails_at_once(serve: Any) -> None:
    """Regression: ctx.send said True for messages to a GET stream that was not open; they went nowhere."""
    harness: Harness = serve(json_response=True)
    sid = harness.initialize()
    assert harness.request(sid, "test/emit", {"count": 1})["result"]["sent"] == [False, False]
    asker: Harness = serve(AskingHandler(), json_response=True)
    sid = asker.initialize()
    error = asker.request(sid, "tools/call", tool_call("ask", {"method": "roots/list"})["params"])["error"]
    assert "no open stream" in error["message"]
    assert asker.handler.outcomes.get(timeout=10).reason == "undelivered"


# -- closing the request's stream (SEP-1699) ---------------------------------------------------


def resumable(serve: Any) -> Harness:
    store = InMemoryEventStore()
    return serve(AskingHandler(), SessionManagers(InMemoryStreamSessionManager(event_store=store)))


def test_close_stream_ends_the_post_stream_and_a_resume_gets_the_rest(serve: Any) -> None:
    harness = resumable(serve)
    sid = harness.initialize()
    response = harness.post(tool_call("close_then_answer", {"retry": 75}), sid)  # ends at close_stream
    parser = SSEParser()
    parser.feed(response.content)
    assert [json.loads(e.data)["params"] for e in parser.events if e.data] == [{"before": True}]
    assert parser.retry == 75
    last_id = parser.last_event_id
    harness.handler.release.set()
    wait_until(lambda: not harness.bp.transport._posts._open, what="the handler to finish")
    resumed = harness.http.get(
        harness.url,
        headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
        | {"Last-Event-ID": last_id},
        timeout=10,
    )
    messages = [json.loads(e.data) for e in events_of(resumed)]
    assert messages[0]["params"] == {"after": True}
    assert messages[1] == {"jsonrpc": "2.0", "id": 7, "result": text("closed=True")}


def test_close_stream_without_an_event_store_changes_nothing(serve: Any) -> None:
    harness: Harness = serve(AskingHandler())
    harness.handler.release.set()
    sid = harness.initialize()
    response = harness.post(tool_call("close_then_answer", {}), sid)
    messages = [json.loads(e.data) for e in events_of(response)]
    assert [m.get("params") for m in messages[:2]] == [{"before": True}, {"after": True}]
    assert messages[2]["result"] == text("closed=False")


def test_errors_of_a_request_whose_id_is_known_carry_that_id(serve: Any) -> None:
    """Regression: errors after the message was read answered with "id": null."""
    harness: Harness = serve()
    unknown = harness.post({"jsonrpc": "2.0", "id": 41, "method": "ping"}, "not-a-session")
    assert unknown.status_code == 404 and unknown.json()["id"] == 41
    missing = harness.post({"jsonrpc": "2.0", "id": "x-42", "method": "ping"}, headers={})
    assert missing.status_code == 400 and missing.json()["id"] == "x-42"
    sid = harness.initialize()
    bad_version = harness.post(
        {"jsonrpc": "2.0", "id": 43, "method": "ping"}, sid, headers={"MCP-Protocol-Version": "1999-01-01"}
    )
    assert bad_version.status_code == 400 and bad_version.json()["id"] == 43
    again = harness.post(initialize_message(id=44), headers={"Accept": "text/plain"})
    assert again.status_code == 406  # refused before the body is read: its id is unknown
    assert again.json()["id"] is None


def test_shutdown_ends_the_wait_of_a_handler_at_once(asking: Harness) -> None:
    sid = asking.initialize()
    call = StreamedCall(asking, sid, tool_call("ask", {"method": "roots/list", "timeout": 60}))
    client_request_of(call)
    assert asking.bp.transport.close(timeout=10) is True  # the handler did not wait for its 60 s
    outcome = asking.handler.outcomes.get(timeout=1)
    assert isinstance(outcome, ClientRequestError) and outcome.reason == "closing"
    call.close()


def test_on_the_legacy_transport_the_request_and_the_reply_share_the_sessions_one_stream() -> None:
    server = LegacyServer(handler=AskingHandler())
    try:
        client = server.connect()
        client.initialize()
        assert client.post(tool_call("ask", {"method": "roots/list"}, id="call")).status_code == 202
        request = client.message()
        assert request["method"] == "roots/list"
        assert client.post({"jsonrpc": "2.0", "id": request["id"], "result": {"roots": []}}).status_code == 202
        assert client.reply_to("call")["result"] == text('{"roots": []}')
    finally:
        server.close()

class TwoWorkers:
    """Two apps on one set of in-memory managers act as two workers, A and B, with a tool call cut short on A.

    The handler on A ran ``close_then_answer``: its stream ended at ``close_stream`` and it waits for
    ``running.release``; :attr:`last_event_id` is where the client resumes (on B, as the tests do).
    """

    def __init__(self, **options_b: Any) -> None:
        self.managers = SessionManagers(InMemoryStreamSessionManager(event_store=InMemoryEventStore()))
        self.running = AskingHandler()
        self.apps = [
            McpApp(self.running, managers=self.managers),
            McpApp(AskingHandler(), managers=self.managers, **options_b),
        ]
        self.servers = [ThreadedServer(app) for app in self.apps]
        self.url_a, self.url_b = (f"http://127.0.0.1:{server.port}/mcp" for server in self.servers)
        self.http = requests.Session()
        hello = self.http.post(self.url_a, json=initialize_message(), headers={"Accept": ACCEPT})
        self.headers = {"Accept": ACCEPT, "Mcp-Session-Id": hello.headers["Mcp-Session-Id"], "MCP-Protocol-Version": LATEST}
        call = tool_call("close_then_answer", {"retry": 10})
        closed = self.http.post(self.url_a, json=call, headers=self.headers, timeout=10)
        parser = SSEParser()
        parser.feed(closed.content)  # ends at close_stream; the handler waits for release
        self.last_event_id = parser.last_event_id

    def resume_on_b(self) -> requests.Response:
        return requests.get(self.url_b, headers=self.headers | {"Last-Event-ID": self.last_event_id}, stream=True, timeout=10)

    def close(self) -> None:
        self.running.release.set()
        self.http.close()
        for server in self.servers:
            server.close()
        self.managers.close()


@pytest.fixture
def two_workers() -> Iterator[Callable[..., TwoWorkers]]:
    made: list[TwoWorkers] = []

    def make(**options_b: Any) -> TwoWorkers:
        made.append(TwoWorkers(**options_b))
        return made[-1]

    yield make
    for workers in made:
        workers.close()


def test_a_resume_on_another_worker_follows_the_stream_until_its_response(two_workers: Callable[..., TwoWorkers]) -> None:
    """The handler runs on one worker, the client resumes on the other."""
    workers = two_workers()
    resumed = workers.resume_on_b()
    assert resumed.status_code == 200
    workers.running.release.set()  # the handler on A goes on: its messages reach B's resume through the store
    events = [json.loads(e.data) for e in iter_events(resumed.iter_content(chunk_size=None)) if e.data]
    assert events == [
        {"jsonrpc": "2.0", "method": "notifications/test", "params": {"after": True}},
        {"jsonrpc": "2.0", "id": 7, "result": text("closed=True")},
    ]


def test_a_reply_from_another_principal_never_reaches_the_handler(serve: Any) -> None:
    from flask import request

    harness: Harness = serve(AskingHandler(), principal=lambda: request.headers.get("X-User"))
    alice, bob = {"X-User": "alice"}, {"X-User": "bob"}
    sid = harness.initialize(**alice)
    response = harness.post(tool_call("ask", {"method": "roots/list"}), sid, headers=alice, stream=True)
    events = iter_events(response.iter_content(chunk_size=None))
    request_id = next(json.loads(e.data) for e in events if e.data)["id"]
    forged = {"jsonrpc": "2.0", "id": request_id, "result": {"roots": [{"uri": "file:///bob"}]}}
    assert harness.post(forged, sid, headers=bob).status_code == 404  # bob does not even see alice's session
    assert harness.handler.outcomes.empty()
    assert harness.post(forged | {"result": {"roots": []}}, sid, headers=alice).status_code == 202
    assert harness.handler.outcomes.get(timeout=10) == {"roots": []}
    response.close()


def test_in_json_mode_progress_travels_on_the_get_stream_not_in_the_json_body(serve: Any) -> None:
    """What json_response cannot order (README): the body holds only the response; progress goes to the GET stream."""
    harness: Harness = serve(json_response=True)
    sid = harness.initialize()
    stream = harness.open_stream(sid)
    message = {"jsonrpc": "2.0", "id": 9, "method": "test/emit", "params": {"count": 2, "_meta": {"progressToken": "t"}}}
    response = harness.post(message, sid)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"jsonrpc": "2.0", "id": 9, "result": {"sent": [True, True, True, True]}}
    pushed = stream.take(4)
    assert [m["method"] for m in pushed] == ["notifications/test", "notifications/progress"] * 2


# -- bounds: handlers per process, what a session stores ------------------------------------


def test_past_max_handlers_a_request_gets_503_with_retry_after_and_others_go_on(serve: Any) -> None:
    harness: Harness = serve(AskingHandler(), max_handlers=2)
    sid = harness.initialize()
    held = [StreamedCall(harness, sid, tool_call("close_then_answer", {}, id=i)) for i in (1, 2)]  # both wait
    wait_until(lambda: len(harness.bp.transport._lifecycle._workers) == 2, what="two running handlers")
    refused = harness.post(tool_call("close_then_answer", {}, id=3), sid)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["id"] == 3 and "retry shortly" in refused.json()["error"]["message"]
    ping = harness.post({"jsonrpc": "2.0", "id": 9, "method": "ping"}, sid, headers={"Accept": "application/json"})
    assert ping.json()["result"] == {}  # a JSON answer runs inline: no handler thread
    harness.handler.release.set()
    for call in held:
        assert call.next_message()["params"] == {"before": True}
        call.close()
    wait_until(lambda: not harness.bp.transport._lifecycle._workers, what="the handlers to end")
    again = StreamedCall(harness, sid, tool_call("close_then_answer", {}, id=4))
    assert again.next_message()["params"] == {"before": True}
    again.close()


def test_a_session_stores_at_most_max_session_info_bytes(serve: Any) -> None:
    harness: Harness = serve(max_session_info=1000)
    message = initialize_message()
    message["params"]["clientInfo"] = {"name": "x" * 2000, "version": "1"}
    refused = harness.post(message)
    assert refused.status_code == 400 and refused.headers.get("Mcp-Session-Id") is None
    error = refused.json()["error"]
    assert error["code"] == -32602 and "at most 1000" in error["message"]
    assert len(harness.managers.info) == 0  # nothing stored
    assert harness.initialize()  # a normal client is fine


def test_resuming_the_same_stream_again_replaces_its_follower_instead_of_adding_one(
    two_workers: Callable[..., TwoWorkers],
) -> None:
    """Each follower is a thread: a client resuming over and over holds one per stream, never max_handlers of them."""
    workers = two_workers(max_handlers=4)
    resumes = [workers.resume_on_b() for _ in range(10)]
    assert [r.status_code for r in resumes] == [200] * 10  # never 503: one follower at a time
    lifecycle = workers.apps[1]._lifecycle
    wait_until(lambda: len(lifecycle._workers) == 1, what="the replaced followers to end")
    workers.running.release.set()
    events = [json.loads(e.data) for e in iter_events(resumes[-1].iter_content(chunk_size=None)) if e.data]
    assert events[-1] == {"jsonrpc": "2.0", "id": 7, "result": text("closed=True")}
    for response in resumes:
        response.close()


def test_a_response_is_told_by_its_top_level_not_by_the_word_method_in_it() -> None:
    from session_manager.wsgi._post_stream import has_response

    result = '{"jsonrpc":"2.0","id":3,"result":{"structuredContent":{"method":"POST"}}}'
    assert has_response([("p1.1", result)])
    assert not has_response([("p1.1", '{"jsonrpc":"2.0","method":"notifications/progress","params":{}}')])
    assert has_response([("p1.1", '{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"method"}}')])
