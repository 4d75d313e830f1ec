"""session_manager.pywsgi reads requests as gevent.pywsgi does, only faster, and stricter where RFC 9112 allows.

Both servers run ``tests/pywsgi_echo_server.py`` (a WSGI app that answers
with its environ) and get the same raw bytes: the answers must match, on
the fast path (a plain HTTP/1.1 head already buffered) and on pywsgi's own
(HTTP/1.0, bare LF line ends, a head split across packets, chunked bodies,
``Expect``). Malformed field lines that pywsgi's ``email`` parser lets
through are a 400 here. Responses (one write for a small head and body,
large and chunked bodies, the cached ``Date``) are checked on the wire.
"""

from __future__ import annotations

import email.utils
import io
import json
import socket
import time
from collections.abc import Iterator

import pytest

from session_manager._request_head import MAX_FIELDS, MAX_LINE, RequestHeaders, simple_head

from .flask_support import PYTHON, ServerProcess, free_port

TIMEOUT = 10.0
Response = tuple[int, dict[str, list[str]], bytes]


def start(server: str, *options: str) -> ServerProcess:
    port = free_port()
    return ServerProcess([PYTHON, "-m", "tests.pywsgi_echo_server", "--port", str(port), "--server", server, *options], port)


@pytest.fixture(scope="module")
def ours() -> Iterator[ServerProcess]:
    process = start("ours")
    yield process
    process.close()
    assert "Traceback" not in process.stderr(), process.stderr()


@pytest.fixture(scope="module")
def gevent_server() -> Iterator[ServerProcess]:
    process = start("gevent")
    yield process
    process.close()


class Reader:
    """HTTP/1.1 responses read off one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._more():
                raise ConnectionError(f"closed before {marker!r}: {self.buffer[:200]!r}")
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._more():
                raise ConnectionError("closed mid-body")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response(self) -> Response:
        lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.lower(), []).append(value.strip())
        if status == 100:
            return self.response()  # the interim answer to Expect: 100-continue
        if "content-length" in headers:
            return status, headers, self._exactly(int(headers["content-length"][0]))
        if headers.get("transfer-encoding") == ["chunked"]:
            body = b""
            while size := int(self._until(b"\r\n"), 16):
                body += self._exactly(size)
                self._exactly(2)
            self._exactly(2)
            return status, headers, body
        while self._more():
            pass
        body, self.buffer = self.buffer, b""
        return status, headers, body

    def closed(self) -> bool:
        """Whether the server closed the connection after what was read (an open one stays silent a while)."""
        self.sock.settimeout(0.5)
        try:
            return not self.buffer and not self._more()
        except TimeoutError:
            return False


def exchange(
    port: int, *parts: bytes, answers: int = 1, pause: float = 0.0, check_close: bool = False
) -> tuple[list[Response], bool | None]:
    """Send *parts* (one write each, *pause* apart), read *answers* responses; also whether the server then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        for part in parts:
            sock.sendall(part)
            time.sleep(pause)
        reader = Reader(sock)
        responses = [reader.response() for _ in range(answers)]
        return responses, reader.closed() if check_close else None


def post(body: bytes = b'{"a":1}', *headers: str, target: str = "/echo") -> bytes:
    head = [f"POST {target} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers]
    return ("\r\n".join(head) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


SAME_ANSWERS = {
    "plain POST": [post()],
    "GET with a query and an escaped path": [b"GET /ec%68o?x=1&y=%20 HTTP/1.1\r\nHost: h\r\n\r\n"],
    "repeated headers are joined": [post(b"", "X-Dup: one", "x-dup: two", "Cookie: a=1", "Cookie: b=2")],
    "a name with an underscore is dropped": [post(b"", "X_Spoof: yes", "X-Real: kept")],
    "whitespace around values": [post(b"", "X-Pad: \t padded value \t")],
    "no header field at all": [b"GET /echo HTTP/1.1\r\n\r\n"],
    "latin-1 in a value": [post(b"", "X-Name: caf\xe9".encode("latin-1").decode("latin-1"))],
    "bare LF line ends": [b"POST /echo HTTP/1.1\nHost: h\nContent-Length: 2\n\nhi"],
    "HTTP/1.0": [b"POST /echo HTTP/1.0\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"],
    "a head split across packets": [b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-", b"Length: 2\r\n\r\nhi"],
    "a chunked body": [b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"],
    "Expect: 100-continue": [b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", b"hi"],
    "a signed Content-Length": [b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: +2\r\n\r\nhi"],
    "equal Content-Length headers": [b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi"],
    "HEAD": [b"HEAD /echo HTTP/1.1\r\nHost: h\r\n\r\n"],
}


@pytest.mark.parametrize("parts", SAME_ANSWERS.values(), ids=SAME_ANSWERS.keys())
def test_a_request_gets_the_answer_gevent_pywsgi_gives(
    parts: list[bytes], ours: ServerProcess, gevent_server: ServerProcess
) -> None:
    (mine,), _ = exchange(ours.port, *parts, pause=0.05)
    (theirs,), _ = exchange(gevent_server.port, *parts, pause=0.05)
    assert mine[0] == theirs[0] == 200
    assert mine[2] == theirs[2]
    if mine[2]:
        assert json.loads(mine[2])["REQUEST_METHOD"] in ("GET", "POST", "HEAD")  # pywsgi sends a HEAD body too
    for name in ("content-type", "content-length", "transfer-encoding", "connection"):
        assert mine[1].get(name) == theirs[1].get(name), name


def test_what_the_fast_path_puts_in_the_environ(ours: ServerProcess) -> None:
    raw = post(b'{"a":1}', "X-Dup: one", "X-Dup: two", "X_Spoof: no", "X-Pad:  v ")
    (answer,), closed = exchange(ours.port, raw, check_close=True)
    environ = json.loads(answer[2])
    assert environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == "/echo"
    assert environ["CONTENT_TYPE"] == "application/json" and environ["CONTENT_LENGTH"] == "7"
    assert environ["HTTP_X_DUP"] == "one,two" and environ["HTTP_X_PAD"] == "v"
    assert "HTTP_X_SPOOF" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert environ["body"] == '{"a":1}'
    assert closed is False  # HTTP/1.1 keeps the connection...


def test_pipelined_requests_are_answered_in_order_and_connection_close_is_honoured(ours: ServerProcess) -> None:
    first, second = post(b"1"), post(b"22", "Connection: close")
    answers, closed = exchange(ours.port, first + second, answers=2, check_close=True)
    assert [json.loads(body)["body"] for _, _, body in answers] == ["1", "22"]
    assert closed  # ...until the client asks otherwise


MALFORMED = {
    "whitespace before the colon": b"Host : h\r\n",
    "a folded line": b"X-A: one\r\n two\r\n",
    "a line without a colon": b"just words\r\n",
    "a control character in a value": b"X-A: a\x01b\r\n",
    "a bare CR in a value": b"X-A: a\rb\r\n",
    "two different Content-Length values": b"Content-Length: 2\r\nContent-Length: 3\r\n",
    "Transfer-Encoding with Content-Length": b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
    "two Transfer-Encoding fields": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: Chunked\r\n",
    "a coding other than chunked alone": b"Transfer-Encoding: gzip, chunked\r\n",
    "an empty field name": b": value\r\n",
}


@pytest.mark.parametrize("fields", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_field_line_is_a_400_and_the_connection_closes(fields: bytes, ours: ServerProcess) -> None:
    (answer,), closed = exchange(ours.port, b"POST /echo HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\nhi", check_close=True)
    assert answer[0] == 400
    assert closed


def test_a_smuggling_attempt_with_two_transfer_encodings_gets_a_400_not_a_second_request(ours: ServerProcess) -> None:
    """pywsgi framed this body two ways (by the first field, then by the joined ones): the body became a request."""
    raw = b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked \r\nTransfer-Encoding: Chunked\r\n"
    raw += b"Content-Length: 3\r\n\r\nabcGET /echo?smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    (answer,), closed = exchange(ours.port, raw, check_close=True)
    assert answer[0] == 400 and closed


def test_a_broken_app_gets_a_well_formed_answer_or_a_closed_connection() -> None:
    """A str body fails after the head went out: the connection closes, never raw bytes in place of a head."""
    process = start("ours")
    try:
        with socket.create_connection(("127.0.0.1", process.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /str HTTP/1.1\r\nHost: h\r\n\r\n")
            received = b""
            while data := sock.recv(65536):
                received += data
    finally:
        process.close()
    assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received
    assert b"Internal Server Error" not in received
    assert "TypeError" in process.stderr()  # the app's error is logged


def test_too_many_fields_or_too_long_a_line_is_a_400(ours: ServerProcess, gevent_server: ServerProcess) -> None:
    many = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_FIELDS + 1))
    long = b"X-Long: " + b"v" * MAX_LINE + b"\r\n"
    for fields in (many, long):
        for server in (ours, gevent_server):
            (answer,), _ = exchange(server.port, b"GET /echo HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n")
            assert answer[0] == 400


@pytest.mark.parametrize("size", [0, 100, 65_000, 200_000])
def test_bodies_small_and_large_arrive_whole(size: int, ours: ServerProcess) -> None:
    (answer,), _ = exchange(ours.port, f"GET /big?n={size} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    assert answer[0] == 200 and len(answer[2]) == size
    assert answer[2] == bytes(range(256)) * (size // 256) + b"x" * (size % 256)


def test_a_body_of_unknown_length_is_chunked_and_arrives_whole(ours: ServerProcess) -> None:
    (answer,), _ = exchange(ours.port, b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
    assert answer[1]["transfer-encoding"] == ["chunked"] and answer[2] == b"one,two,three"


def test_every_response_has_one_current_date_and_an_app_s_own_date_wins(ours: ServerProcess) -> None:
    (answer,), _ = exchange(ours.port, b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")
    (date,) = answer[1]["date"]
    assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 60
    (answer,), _ = exchange(ours.port, b"GET /date HTTP/1.1\r\nHost: h\r\n\r\n")
    assert answer[1]["date"] == ["Tue, 01 Dec 2026 00:00:00 GMT"]


def test_the_access_log_still_logs_when_the_server_has_one() -> None:
    process = start("ours", "--access-log")
    try:
        exchange(process.port, b"GET /echo?logged=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        deadline = time.monotonic() + TIMEOUT
        while "GET /echo?logged=1 HTTP/1.1" not in process.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert '"GET /echo?logged=1 HTTP/1.1" 200' in process.stderr()
    finally:
        process.close()


# -- the parser alone ------------------------------------------------------------------


def parse(raw: bytes) -> RequestHeaders:
    return RequestHeaders(io.BufferedReader(io.BytesIO(raw)))


def test_request_headers_offer_what_pywsgi_and_gunicorn_read() -> None:
    headers = parse(b"Content-Type: application/json\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n")
    assert headers.get("X-A") == headers["x-a"] == headers.getheader("X-A") == "1"
    assert headers.get("missing", "default") == "default" and "X-A" in headers and "missing" not in headers
    assert headers.typeheader == "application/json" and headers.status == ""
    assert headers.items() == [("Content-Type", "application/json"), ("X-A", "1"), ("x-a", "2"), ("Content-Length", "0")]
    assert list(headers.headers)[1] == "X-A: 1\r\n"
    del headers["x-A"]
    assert "X-A" not in headers and [name for name, _ in headers.items()] == ["Content-Type", "Content-Length"]
    with pytest.raises(KeyError):
        del headers["X-A"]


def test_request_headers_read_line_by_line_when_the_block_is_not_plain() -> None:
    reader = io.BufferedReader(io.BytesIO(b"A: 1\nB:  2 \n\nbody"))
    headers = RequestHeaders(reader)
    assert headers.items() == [("A", "1"), ("B", "2")] and reader.read() == b"body"
    assert parse(b"A: " + b"v" * (MAX_LINE + 1) + b"\r\n\r\n").status == "Line too long"


def test_a_long_line_of_whitespace_is_refused_in_linear_time() -> None:
    """The field patterns cannot backtrack: no two parts match the same byte (a quadratic one would hang here)."""
    for raw in (b"A:" + b" " * 60_000 + b"\x01\r\n\r\n", b"A:x" + b" \t" * 30_000 + b"\x01\r\n\r\n"):
        with pytest.raises(ValueError, match="malformed header line"):
            parse(raw)
    assert parse(b"A:" + b" " * 60_000 + b"\r\n\r\n").get("a") == ""


def test_simple_head_takes_only_a_plain_complete_http_1_1_head() -> None:
    head = simple_head(b"POST /mcp?x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    assert head is not None
    method, target, line, headers, size = head
    assert (method, target, line, headers.get("host"), size) == ("POST", "/mcp?x", "POST /mcp?x HTTP/1.1", "h", 52)
    assert simple_head(b"GET / HTTP/1.1\r\n\r\n") is not None
    for raw in (
        b"POST /mcp HTTP/1.1\r\nHost: h\r\n",  # incomplete
        b"POST /mcp HTTP/1.0\r\n\r\n",
        b"GET http://h/ HTTP/1.1\r\n\r\n",  # absolute form
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(MAX_FIELDS + 1)) + b"\r\n",
    ):
        assert simple_head(raw) is None, raw
