"""The transport's shortcuts around werkzeug give what werkzeug gives.

``respond`` serves a response without ``Response.__call__``, ``header`` and
``body`` read the environ without ``EnvironHeaders`` and ``LimitedStream``,
``accepts`` and ``Allowlist`` remember their answers: each is checked
against werkzeug itself, on the cases the transport produces and on the
ones it must leave to werkzeug.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import pytest
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from session_manager._jsonrpc import HttpError
from session_manager.wsgi._checks import _SEEN_MAX, Allowlist, accepts, check_content_type
from session_manager.wsgi._headers import body, header
from session_manager.wsgi._responses import (
    empty_response,
    http_error,
    json_response,
    respond,
    sse_response,
    vary_on_origin,
)


def served(response: Response, method: str = "POST", through: Any = respond) -> tuple[str, Counter[tuple[str, str]], bytes]:
    """Status, headers (as a multiset) and body of *response* served by *through*."""
    environ = EnvironBuilder(method=method, path="/mcp").get_environ()
    started: list[Any] = []
    chunks = through(response, environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    data = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    (status, headers), = started
    return status, Counter(headers), data


def werkzeug(response: Response, environ: Any, start_response: Any) -> Any:
    return response(environ, start_response)


def stream() -> Any:
    yield b"data: 1\n\n"
    yield b"data: 2\n\n"


RESPONSES = {
    "json": lambda: json_response('{"jsonrpc":"2.0","id":1,"result":{}}'),
    "json error status": lambda: json_response('{"jsonrpc":"2.0","id":1,"error":{}}', 404),
    "accepted": lambda: empty_response(202),
    "one-event sse": lambda: sse_response([b"data: {}\n\n"]),
    "sse stream": lambda: Response(stream(), 200, content_type="text/event-stream", direct_passthrough=True),
    "error with extra headers": lambda: http_error(HttpError(405, -32000, "no", headers={"Allow": "POST"})),
    "with Vary": lambda: vary_on_origin(json_response("{}")),
    "a Location werkzeug rewrites": lambda: Response(b"x", 302, headers={"Location": "/elsewhere"}),
    "a location in lower case": lambda: Response(b"x", 302, headers=[("location", "/caf\u00e9")]),
    "204": lambda: Response(b"", 204),
    "close callback": lambda: _with_close_callback(),
    "str chunks": lambda: Response(["text"], 200),
}


def _with_close_callback() -> Response:
    response = Response([b"x"], 200)
    response.call_on_close(lambda: None)
    return response


@pytest.mark.parametrize("method", ["POST", "HEAD"])
@pytest.mark.parametrize("make", RESPONSES.values(), ids=RESPONSES.keys())
def test_respond_serves_what_werkzeug_serves(make: Any, method: str) -> None:
    assert served(make(), method) == served(make(), method, through=werkzeug)


def test_vary_on_origin_adds_origin_once_and_keeps_what_varies_already() -> None:
    response = vary_on_origin(vary_on_origin(json_response("{}")))
    assert response.headers.getlist("Vary") == ["Origin"]
    response = json_response("{}")
    response.headers["Vary"] = "Accept"
    assert set(vary_on_origin(response).vary) == {"Accept", "Origin"}


@pytest.mark.parametrize(
    "accept",
    [
        "application/json, text/event-stream",
        "application/json",
        "text/event-stream;q=0, application/json",
        "*/*",
        "text/*",
        "application/*;q=0",
        "",
        "garbage",
        "application/json;q=0.5, text/event-stream;q=1, " + "x/y;q=0.1, " * 60,  # longer than the cached ones
    ],
)
def test_accepts_answers_as_werkzeug_parses_accept(accept: str) -> None:
    for mimetype in ("application/json", "text/event-stream"):
        expected = parse_accept_header(accept, MIMEAccept).quality(mimetype) > 0
        assert accepts(accept, mimetype) is expected
        assert accepts(accept, mimetype) is expected  # cached or not, the same answer
    assert accepts(None, "application/json") is False


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("text/plain", False),
        ("application/jsonx", False),
        ("", False),
        (None, False),
    ],
)
def test_check_content_type(content_type: str | None, ok: bool) -> None:
    if ok:
        check_content_type(content_type)
    else:
        with pytest.raises(HttpError) as refused:
            check_content_type(content_type)
        assert refused.value.status == 415


def test_an_allowlist_remembers_a_bounded_number_of_answers_and_they_stay_right() -> None:
    hosts = Allowlist(["localhost:*", "127.0.0.1:8000"], origins=False)
    for round_ in range(2):  # the second round answers from memory (or after a clear)
        assert hosts.allows("localhost:1234") and hosts.allows("127.0.0.1:8000")
        assert not hosts.allows("127.0.0.1:8001") and not hosts.allows("evil.example") and not hosts.allows("")
        assert not hosts.allows(None)
    for port in range(3 * _SEEN_MAX):
        assert hosts.allows(f"localhost:{port}")
        assert not hosts.allows(f"evil{port}.example")
    assert len(hosts._seen) <= _SEEN_MAX
    hosts._seen.clear()
    assert not hosts.allows("localhost:" + "1" * 1000) and not hosts._seen  # a long value is answered, not kept


def request_of(**kwargs: Any) -> Request:
    return Request(EnvironBuilder(method="POST", path="/mcp", **kwargs).get_environ())


def test_header_reads_what_request_headers_get_reads() -> None:
    request = request_of(
        headers={"Mcp-Method": "tools/call", "X-Dash-Name": "v", "Accept": "a/b"},
        data=b"{}",
        content_type="application/json",
    )
    for name in ("Mcp-Method", "mcp-method", "X-Dash-Name", "Accept", "Content-Type", "Content-Length", "Missing"):
        assert header(request, name) == request.headers.get(name), name


def test_body_takes_the_servers_stream_only_for_a_plain_length_the_server_ends() -> None:
    raw = io.BytesIO(b"hello")
    request = request_of(data=b"hello", environ_overrides={"wsgi.input": raw, "wsgi.input_terminated": True})
    stream, length = body(request)
    assert stream is raw and length == 5
    for overrides in (
        {"wsgi.input_terminated": False},
        {"wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"},
        {"wsgi.input_terminated": True, "CONTENT_LENGTH": "+5"},
    ):
        request = request_of(data=b"hello", environ_overrides=overrides)
        stream, length = body(request)
        assert (stream, length) == (request.stream, request.content_length), overrides
