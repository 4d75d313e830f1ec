"""Request bodies cut short, against real servers: gevent.pywsgi, werkzeug (threaded) and gunicorn -k gevent.

A client sends the headers and part of its body, then half-closes (it
still reads the answer) or closes its socket: fewer bytes than its
``Content-Length`` said, or a chunked body cut mid-chunk, or a chunk-size
line that is not hex. Each server reports this to the application its own
way (a short read, ``OSError``, werkzeug's ``ClientDisconnected``,
gunicorn's parse errors); the transport must answer 400 with a JSON-RPC
parse error where the socket still takes it, create no session, run no
handler, store nothing, and log one line per request, never a traceback.
The server's whole stderr is captured and checked.

Run as ``python -m tests.test_hostile_bodies --server gevent|werkzeug
--port N``; gunicorn loads :func:`gunicorn_app`.
"""

if __name__ == "__main__":
    import sys

    if "gevent" in sys.argv:  # patch before anything else is imported, and only for the gevent server
        from gevent import monkey

        monkey.patch_all()

import argparse
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import requests

from session_manager import InMemoryEventStore, InMemoryStreamSessionManager, SessionManagers
from session_manager.wsgi import PARSE_ERROR, McpApp, RequestContext

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    PYTHON,
    BodyReader,
    Head,
    ServerProcess,
    events_of,
    free_port,
    initialize_message,
    reply_of,
    wait_until,
)

#: Where the test servers tell what they hold: sessions, event logs, handler calls.
STATE_PATH = "/test/state"
#: What the transport logs (at INFO) once per body it could not read whole.
CUT_SHORT_LINE = "MCP request body cut short or malformed"
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: Seconds any one client socket operation may take.
SOCKET_TIMEOUT = 10.0
POST_HEADERS = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
#: A file name as ``os.fsdecode(b"caf\xe9.txt")`` gives it: a lone surrogate that UTF-8 cannot carry as such.
SURROGATE_NAME = "caf\udce9.txt"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class CountingHandler:
    """Answers everything with an empty result and counts its calls: a body never read whole must run none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0

    def __call__(self, message: dict[str, Any], ctx: RequestContext) -> dict[str, Any] | None:
        with self._lock:
            self.calls += 1
        if message.get("method") == "tools/call":
            if message["params"].get("name") == "list_files":  # a name os.fsdecode made of bytes that are not UTF-8
                ctx.progress(1, 2, SURROGATE_NAME)
                return {"content": [{"type": "text", "text": SURROGATE_NAME}]}
            return {"content": [{"type": "text", "text": "done"}]}
        return {}


def with_state(app: WSGIApp, state: Callable[[], dict[str, Any]]) -> WSGIApp:
    """*app*, plus :data:`STATE_PATH` answering ``state()`` as JSON: how a test sees inside a server process."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != STATE_PATH:
            return app(environ, start_response)
        body = json.dumps(state()).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return serve


def state_app() -> WSGIApp:
    """An in-memory McpApp with an event store; its state: sessions, event logs, handler calls."""
    store = InMemoryEventStore()
    managers = SessionManagers(streams=InMemoryStreamSessionManager(event_store=store))
    handler = CountingHandler()
    app = McpApp(handler, managers=managers)
    return with_state(app, lambda: {"sessions": len(managers.info), "logs": len(store), "calls": handler.calls})  # type: ignore[arg-type]


def gunicorn_app() -> WSGIApp:
    """The factory ``gunicorn -k gevent`` calls: :func:`state_app`, its log at INFO on stderr."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return state_app()


def server_arguments(description: str) -> argparse.ArgumentParser:
    """The command line of a test server module: ``--server gevent|werkzeug --port N``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--server", choices=("gevent", "werkzeug"), required=True)
    parser.add_argument("--port", type=int, required=True)
    return parser


def serve_forever(server: str, port: int, app: WSGIApp) -> None:
    """Serve *app* on 127.0.0.1:*port* with gevent.pywsgi (the caller monkey-patched) or werkzeug's threaded server."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if server == "gevent":
        from gevent.pywsgi import WSGIServer

        WSGIServer(("127.0.0.1", port), app, log=None, backlog=1024).serve_forever()
    else:
        from werkzeug.serving import make_server

        make_server("127.0.0.1", port, app, threaded=True).serve_forever()  # type: ignore[arg-type]


def main() -> None:
    """``python -m tests.test_hostile_bodies --server gevent|werkzeug --port N``."""
    args = server_arguments(main.__doc__ or "").parse_args()
    serve_forever(args.server, args.port, state_app())


# -- the tests ---------------------------------------------------------------------------------


class LoggedServer(ServerProcess):
    """A server subprocess whose whole stderr the test reads."""

    def lines(self) -> list[str]:
        return b"".join(self._stderr).decode("utf-8", "replace").splitlines()

    def state(self) -> dict[str, int]:
        response = requests.get(f"http://127.0.0.1:{self.port}{STATE_PATH}", timeout=SOCKET_TIMEOUT)
        assert response.status_code == 200, response.text
        return response.json()


def start_server(args: list[str]) -> LoggedServer:
    """Run *args* (with ``{port}`` standing for a free port) until its :data:`STATE_PATH` answers."""
    port = free_port()
    server = LoggedServer([arg.format(port=port) for arg in args], port)
    wait_until(lambda: _answers(server), timeout=20, what=f"{args} to serve")  # gunicorn's worker loads after the bind
    return server


def _answers(server: LoggedServer) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{server.port}{STATE_PATH}", timeout=2).status_code == 200
    except requests.RequestException:
        return False


_SERVERS = {
    "gevent": [PYTHON, "-m", "tests.test_hostile_bodies", "--server", "gevent", "--port", "{port}"],
    "werkzeug": [PYTHON, "-m", "tests.test_hostile_bodies", "--server", "werkzeug", "--port", "{port}"],
    "gunicorn": [
        *(PYTHON, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", "127.0.0.1:{port}", "--log-level", "info"),
        "tests.test_hostile_bodies:gunicorn_app()",
    ],
}


@pytest.fixture(scope="module", params=["gevent", "werkzeug", "gunicorn"])
def server(request: pytest.FixtureRequest) -> Iterator[LoggedServer]:
    started = start_server(_SERVERS[request.param])
    yield started
    started.close()


def raw_post(
    port: int,
    headers: dict[str, str],
    body: bytes,
    *,
    framing: str = "length",
    declared: int | None = None,
    half_close: bool = True,
) -> tuple[Head, bytes] | None:
    """POST *body* to ``/mcp`` on a socket of its own, then half-close it and read the whole answer, or close it (None).

    *framing*: ``length`` (``Content-Length: declared``), ``chunked`` (one
    chunk of *declared* bytes announced, *body* sent) or ``bad-chunk`` (a
    chunk-size line that is not hex, then *body*). *declared* defaults to
    the length of *body*: pass more to cut it short.
    """
    declared = len(body) if declared is None else declared
    lines = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{name}: {value}" for name, value in headers.items())]
    if framing == "length":
        lines.append(f"Content-Length: {declared}")
    else:
        lines.append("Transfer-Encoding: chunked")
        body = (b"%x" % declared if framing == "chunked" else b"zz") + b"\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if not half_close:
            return None
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed without an answer: {received!r}"
            received += chunk
        raw_head, rest = received.split(b"\r\n\r\n", 1)
        head = Head(raw_head)
        reader = BodyReader(head)
        content = reader.feed(rest)
        while not reader.done:
            chunk = sock.recv(65536)
            if not chunk:
                break
            content += reader.feed(chunk)
    return head, content


def tool_call(id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "work", "arguments": {"n": id}}}


CASES = [(framing, half_close) for framing in ("length", "chunked", "bad-chunk") for half_close in (True, False)]


def test_a_cut_body_gets_a_parse_error_and_leaves_nothing_behind(server: LoggedServer) -> None:
    port = server.port
    http = requests.Session()
    # A session to send in, answered as JSON: it has no event log until the whole request at the end.
    response = http.post(server.url, json=initialize_message(), headers={"Accept": "application/json"}, timeout=10)
    assert response.status_code == 200, response.text
    sid = response.headers["Mcp-Session-Id"]
    before = server.state()
    in_session = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
    first_line = len(server.lines())
    sent = bad_framing = 0
    for framing, half_close in CASES:
        messages = [(initialize_message(id=sent), {}), (tool_call(sent), in_session)]  # would create; would store
        for message, headers in messages:
            body = json.dumps(message).encode()
            for keep in (0, 1, len(body) // 2, len(body) - 1):
                answer = raw_post(
                    port,
                    {**POST_HEADERS, **headers},
                    body[:keep],
                    framing=framing,
                    declared=len(body),
                    half_close=half_close,
                )
                sent += 1
                bad_framing += framing == "bad-chunk"
                if answer is not None:
                    head, content = answer
                    assert head.status == 400, (framing, keep, head.status, content)
                    assert head.headers["content-type"] == "application/json", head.headers
                    error = json.loads(content)
                    assert error["jsonrpc"] == "2.0" and error["id"] is None, error
                    assert error["error"]["code"] == PARSE_ERROR, error

    def cut_short_lines() -> list[str]:
        return [line for line in server.lines()[first_line:] if CUT_SHORT_LINE in line]

    wait_until(lambda: len(cut_short_lines()) >= sent, timeout=15, what=f"{sent} cut-short log lines")
    assert server.state() == before  # no session, no handler call, no event log
    # Still serving: a whole request is handled and stored, so the counters above can move.
    response = http.post(server.url, json=tool_call(1), headers={**in_session, "Accept": ACCEPT_BOTH}, timeout=10)
    assert response.status_code == 200 and reply_of(response)["result"]["content"][0]["text"] == "done", response.text
    after = server.state()
    assert after == {"sessions": before["sessions"], "logs": before["logs"] + 1, "calls": before["calls"] + 1}, after
    http.close()

    log = server.lines()[first_line:]
    assert len(cut_short_lines()) == sent, "\n".join(log)  # one line per request...
    assert not [line for line in cut_short_lines() if not line.startswith("INFO ")], "\n".join(log)  # ...at INFO
    assert not [line for line in log if "Traceback" in line or line.startswith(("ERROR", "CRITICAL"))], "\n".join(log)
    # Besides that line, at most the server's own one-line complaint about a chunk-size line that is not hex
    # (gevent.pywsgi reads what follows it as the next request).
    others = [line for line in log if CUT_SHORT_LINE not in line and not _access_line(line)]
    assert len(others) <= bad_framing, "\n".join(log)


@pytest.mark.parametrize("accept", ["application/json", ACCEPT_BOTH])
def test_a_lone_surrogate_from_the_handler_reaches_the_client_escaped(server: LoggedServer, accept: str) -> None:
    """A reply is never lost to a string UTF-8 cannot hold: the message goes out with ``\\u`` escapes instead."""
    http = requests.Session()
    response = http.post(server.url, json=initialize_message(), headers={"Accept": "application/json"}, timeout=10)
    headers = {"Mcp-Session-Id": response.headers["Mcp-Session-Id"], "MCP-Protocol-Version": LATEST, "Accept": accept}
    message = {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "tools/call",
        "params": {"name": "list_files", "_meta": {"progressToken": 5}},
    }
    response = http.post(server.url, json=message, headers=headers, timeout=10)
    http.close()
    assert response.status_code == 200, response.text
    assert response.content.isascii() and b"\\udce9" in response.content, response.content
    assert reply_of(response)["result"]["content"][0]["text"] == SURROGATE_NAME
    if accept == ACCEPT_BOTH:  # the progress notification before it too
        progress = json.loads(events_of(response)[0].data)
        assert progress["method"] == "notifications/progress" and progress["params"]["message"] == SURROGATE_NAME
    assert "Traceback" not in "\n".join(server.lines()), server.stderr()


def _access_line(line: str) -> bool:
    """werkzeug's request log: one INFO line per request, not a complaint."""
    return line.startswith("INFO werkzeug:") and ("POST /mcp HTTP/1.1" in line or f"GET {STATE_PATH}" in line)


if __name__ == "__main__":
    main()
