"""Hypothesis-generated HTTP requests against a live endpoint.

Methods, headers (session id, principal, protocol version, media types,
Host, Origin), bodies (random bytes, JSON, JSON-RPC-shaped messages with odd
ids and params, batches, oversized) are thrown at a threaded werkzeug
server. Every answer must be a non-5xx with a JSON-RPC error body when it is
an error, and a victim session (another principal, with a stream, a log
level and a subscription) must come out exactly as it went in.

A second test sends only hostile bodies, over raw sockets: JSON with lone
surrogate escapes (in strings, keys, the method, the id) or raw surrogate
bytes, non-finite numbers (``1e999``, ``-1e400``, ``NaN``, ``Infinity``),
and valid messages cut at a random byte, with an honest, a lying (larger)
or an oversized ``Content-Length``, or chunked. Each must get 400 with a
JSON-RPC parse error (413 where the declared size says so), create no
session, run no handler, store no event, log no error and at most one line,
and leave the victim untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from flask import request as flask_request
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, SessionManagers
from session_manager._jsonrpc import SERVER_ERROR
from session_manager.flask import PARSE_ERROR, SUPPORTED_PROTOCOL_VERSIONS

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    Harness,
    initialize_message,
    new_token,
    reply_of,
    serve,  # noqa: F401 - fixture
)
from .test_hostile_bodies import raw_post

MAX_BODY = 4096
VICTIM = "alice"

printable = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
ids = st.one_of(
    st.integers(),
    st.text(max_size=20),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
)
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
        "_meta": st.one_of(
            json_values,
            st.fixed_dictionaries({"progressToken": st.one_of(st.integers(), st.text(max_size=5), json_scalars)}),
        ),
    },
)
params = st.one_of(
    mcp_params, mcp_params, mcp_params, st.dictionaries(st.text(max_size=10), json_values, max_size=4), json_values
)
arbitrary_messages = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.one_of(st.just("2.0"), json_scalars),
        "id": ids,
        "method": methods,
        "params": params,
        "result": json_values,
        "error": st.one_of(
            json_values, st.fixed_dictionaries({"code": st.integers(), "message": st.text(max_size=10)})
        ),
    },
)
request_ids = st.one_of(st.integers(), st.text(max_size=10))
good_requests = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": request_ids, "method": known_methods}, optional={"params": mcp_params}
)
any_requests = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": request_ids, "method": methods}, optional={"params": params}
)
notifications = st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "method": methods}, optional={"params": params})
client_responses = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": request_ids}, optional={"result": json_values, "error": json_values}
)


# -- hostile JSON: lone surrogates, non-finite numbers ---------------------------------------------

#: Where a hostile token goes: the serialized placeholder is replaced by the token's JSON text.
HOLE = "@@hole@@"
_HOLE_JSON = json.dumps(HOLE)
plain_text = st.text(max_size=8)  # hypothesis never generates surrogates here: one inserted stays lone
lone_escapes = st.builds(
    lambda code, upper: ("\\u%04X" if upper else "\\u%04x") % code,
    st.integers(min_value=0xD800, max_value=0xDFFF),
    st.booleans(),
)
#: A JSON string holding one lone surrogate, as a ``\\udXXX`` escape or as the raw (invalid UTF-8) code point.
surrogate_strings = st.one_of(
    st.builds(
        lambda before, escape, after: json.dumps(before)[:-1] + escape + json.dumps(after)[1:],
        plain_text,
        lone_escapes,
        plain_text,
    ),
    st.builds(
        lambda before, code, after: json.dumps(before + chr(code) + after, ensure_ascii=False),
        plain_text,
        st.integers(min_value=0xD800, max_value=0xDFFF),
        plain_text,
    ),
)
#: JSON numbers no float holds, and the literals Python's json would otherwise accept.
non_finite_numbers = st.one_of(
    st.sampled_from(["1e999", "-1e400", "1E+999", "NaN", "Infinity", "-Infinity"]),
    st.builds(
        lambda sign, mantissa, exponent: f"{sign}{mantissa}e{exponent}",
        st.sampled_from(["", "-"]),
        st.sampled_from(["1", "9.5", "0.1", "123456"]),
        st.integers(min_value=400, max_value=10**6),
    ),
)
padding = json_values.filter(lambda value: HOLE not in json.dumps(value))


@dataclass(frozen=True)
class Spot:
    """A message with :data:`HOLE` at one place; *key*: the hole is an object key (only strings fit)."""

    name: str
    message: dict[str, Any]
    key: bool = False
    initialize: bool = False


def spots(pad: Any) -> list[Spot]:
    """Every place a hostile token goes, around some generated *pad*."""

    def call(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": arguments}}

    def init(client_info: dict[str, Any], capabilities: dict[str, Any]) -> dict[str, Any]:
        message = initialize_message()
        message["params"].update(clientInfo=client_info, capabilities=capabilities)
        return message

    return [
        Spot("method", {"jsonrpc": "2.0", "id": 1, "method": HOLE, "params": {"pad": pad}}),
        Spot("id", {"jsonrpc": "2.0", "id": HOLE, "method": "ping", "params": {"pad": pad}}),
        Spot("argument", call({"text": HOLE, "pad": pad})),
        Spot("argument key", call({HOLE: 1, "pad": pad}), key=True),
        Spot("nested", call({"list": [pad, {"deep": [1, HOLE]}]})),
        Spot(
            "progress token",
            {"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"_meta": {"progressToken": HOLE}}},
        ),
        Spot("client info", init({"name": HOLE, "version": "1", "pad": pad}, {}), initialize=True),
        Spot(
            "capability key",
            init({"name": "x", "version": "1"}, {"experimental": {HOLE: pad}}),
            key=True,
            initialize=True,
        ),
    ]


@st.composite
def hostile_json(draw: st.DrawFn) -> tuple[Spot, bytes]:
    """A message with a lone surrogate or a non-finite number in it (where the JSON grammar allows one)."""
    spot = draw(st.sampled_from(spots(draw(padding))))
    token = draw(surrogate_strings if spot.key else st.one_of(surrogate_strings, non_finite_numbers))
    text = json.dumps(spot.message).replace(_HOLE_JSON, token)
    return spot, text.encode("utf-8", "surrogatepass")


def bodies() -> st.SearchStrategy[bytes]:
    """Mostly well-formed messages; also anything JSON, batches, random bytes, sizes around the limit."""
    as_json = [good_requests] * 4 + [any_requests, notifications, client_responses, arbitrary_messages]
    as_json += [st.lists(good_requests, max_size=3), json_values]
    kinds = [kind.map(lambda value: json.dumps(value).encode()) for kind in as_json]
    kinds.append(st.binary(max_size=200))
    kinds.append(hostile_json().map(lambda spot_body: spot_body[1]))
    kinds.append(
        st.integers(min_value=MAX_BODY - 10, max_value=MAX_BODY + 10).map(lambda n: b"{" + b" " * (n - 2) + b"}")
    )
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
            "headers": st.sampled_from([st.just({}), changes])
            .flatmap(lambda kind: kind)
            .map(lambda changed: {**valid, **changed}),
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


class Victim:
    """A session of another principal with a GET stream, a log level and a subscription; :meth:`check` proves it untouched."""

    def __init__(self, mcp: Harness) -> None:
        self.mcp = mcp
        self.headers = {"X-Principal": VICTIM}
        self.sid = mcp.initialize(**self.headers)
        self.key = f"{VICTIM}:{self.sid}"
        assert self.request("logging/setLevel", {"level": "warning"})["result"] == {}
        assert self.request("resources/subscribe", {"uri": "note://v"})["result"] == {}
        self.stream = mcp.open_stream(self.sid, headers=self.headers, wait=False)
        assert self.stream.status == 200
        self.stream.start_reader()
        self.before = mcp.managers.info.get(self.key)

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        return reply_of(self.mcp.post(message, self.sid, headers=self.headers))

    def check(self) -> None:
        """Exactly as it was, and still fully working; another principal still cannot reach it."""
        mcp = self.mcp
        assert mcp.managers.info.get(self.key) == self.before
        assert self.key in mcp.managers.info.get_subscriptions("note://v")
        assert mcp.managers.streams.has(self.key)
        mcp.bp.notify(self.key, "notifications/after-fuzz", {"ok": True})
        assert self.stream.take(1) == [{"jsonrpc": "2.0", "method": "notifications/after-fuzz", "params": {"ok": True}}]
        assert self.request("ping", {})["result"] == {}
        assert mcp.bp.log(self.key, "error", "still here") is True
        assert self.stream.take(1)[0]["params"]["data"] == "still here"
        message = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        assert mcp.post(message, self.sid, headers={"X-Principal": "mallory"}).status_code == 404


def test_generated_requests_never_5xx_nor_touch_another_session(serve) -> None:  # noqa: F811
    mcp: Harness = serve(principal=principal, max_body_size=MAX_BODY, keepalive=0.2)
    victim = Victim(mcp)
    attacker_sid = mcp.initialize(**{"X-Principal": "mallory"})
    attacker = f"mallory:{attacker_sid}"

    session = requests.Session()

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(fuzz_requests(victim.sid, attacker_sid))
    def check(generated: dict[str, Any]) -> None:
        if not mcp.managers.info.exists(attacker):  # deleted by an earlier example: the attacker comes back
            mcp.managers.info.create(attacker, protocol_version=LATEST)
        headers = dict(generated["headers"])  # a None value removes the header, requests' defaults included
        response = session.request(
            generated["method"], mcp.url, data=generated["body"], headers=headers, timeout=10, stream=True
        )
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
    victim.check()


# -- hostile bodies over raw sockets -----------------------------------------------------------------


class CountingStore(InMemoryEventStore):
    """The in-memory event store, counting every log it opens and every event it stores."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def open(self, session_id: str, stream_id: str) -> str:
        self.writes += 1
        return super().open(session_id, stream_id)

    def append(self, session_id: str, stream_id: str, message: str) -> str | None:
        self.writes += 1
        return super().append(session_id, stream_id, message)

    def append_many(self, session_ids: Any, message: str) -> list[tuple[str, list[str]]]:
        self.writes += 1
        return super().append_many(session_ids, message)

    def append_broadcast(self, message: str) -> str | None:
        self.writes += 1
        return super().append_broadcast(message)


@dataclass(frozen=True)
class Hostile:
    """What a hostile request sends: *sent* bytes of body, framed as *framing* (declaring *declared* bytes), see :func:`raw_post`."""

    what: str
    initialize: bool
    sent: bytes
    framing: str  # "length" or "chunked"
    declared: int  # the Content-Length, or the size of the one chunk announced

    @property
    def status(self) -> int:
        """413 when the declared (or, chunked, the sent) size is past the limit; 400 otherwise."""
        size = self.declared if self.framing == "length" else len(self.sent)
        return 413 if size > MAX_BODY else 400


def whole_messages() -> st.SearchStrategy[tuple[bool, bytes]]:
    """Valid messages as sent (an ``initialize``, or a request of the session), each with whether it initializes."""
    inits = st.builds(
        lambda pad: initialize_message() | {"params": {**initialize_message()["params"], "pad": pad}}, padding
    )
    return st.one_of(
        inits.map(lambda message: (True, message)), good_requests.map(lambda message: (False, message))
    ).map(lambda pair: (pair[0], json.dumps(pair[1]).encode()))


@st.composite
def cut_messages(draw: st.DrawFn) -> Hostile:
    """A valid message cut at a random byte: honest, lying (larger) or oversized ``Content-Length``, or chunked."""
    initialize, body = draw(whole_messages())
    keep = draw(st.integers(min_value=0, max_value=len(body) - 1))
    framing = draw(st.sampled_from(["honest", "lying", "oversized", "chunked"]))
    if framing == "honest":
        declared = keep
    elif framing == "lying":
        declared = len(body) + draw(st.integers(min_value=0, max_value=64))
    elif framing == "oversized":
        declared = MAX_BODY + draw(st.integers(min_value=1, max_value=10**9))
    else:  # one chunk of the whole length announced
        declared = len(body)
    return Hostile(f"cut {framing}", initialize, body[:keep], "chunked" if framing == "chunked" else "length", declared)


def hostile_requests() -> st.SearchStrategy[Hostile]:
    surrogates_or_numbers = hostile_json().map(
        lambda spot_body: Hostile(
            f"json {spot_body[0].name}", spot_body[0].initialize, spot_body[1], "length", len(spot_body[1])
        )
    )
    return st.one_of(surrogates_or_numbers, cut_messages())


def test_hostile_bodies_get_a_parse_error_and_change_nothing(serve, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    store = CountingStore()
    managers = SessionManagers(streams=InMemoryStreamSessionManager(event_store=store))
    mcp: Harness = serve(managers=managers, principal=principal, max_body_size=MAX_BODY, keepalive=0.2)
    victim = Victim(mcp)
    attacker_sid = mcp.initialize(**{"X-Principal": "mallory"})
    in_session = {"Mcp-Session-Id": attacker_sid, "MCP-Protocol-Version": LATEST}
    base = {"X-Principal": "mallory", "Content-Type": "application/json", "Accept": ACCEPT_BOTH}
    caplog.set_level(logging.INFO)
    mcp.handler.messages()  # what setting up showed the handler

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(hostile_requests())
    def check(hostile: Hostile) -> None:
        sessions, writes, first_record = len(mcp.managers.info), store.writes, len(caplog.records)
        headers = base if hostile.initialize else {**base, **in_session}
        answer = raw_post(mcp.port, headers, hostile.sent, framing=hostile.framing, declared=hostile.declared)
        assert answer is not None
        head, content = answer
        event(f"{hostile.what} -> {head.status}")
        assert head.status == hostile.status, (hostile, head.status, content)
        assert head.headers["content-type"] == "application/json", head.headers
        error = json.loads(content)
        assert error["jsonrpc"] == "2.0" and error["id"] is None, error
        assert error["error"]["code"] == (PARSE_ERROR if hostile.status == 400 else SERVER_ERROR), error
        assert len(mcp.managers.info) == sessions  # no session created
        assert store.writes == writes  # nothing stored
        assert mcp.handler.messages() == []  # no handler ran
        ours = [record for record in caplog.records[first_record:] if record.name != "werkzeug"]  # not access lines
        assert len(ours) <= 1 and not [record for record in ours if record.levelno >= logging.WARNING], ours

    check()
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]
    victim.check()
