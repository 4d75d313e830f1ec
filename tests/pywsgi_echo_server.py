"""A WSGI app that answers with what the server put in its environ, on gevent.pywsgi or session_manager.pywsgi.

    python -m tests.pywsgi_echo_server --port N [--server ours|gevent] [--access-log]

Run by ``tests/test_pywsgi_requests.py``, which sends both servers the same
raw bytes and compares their answers. Paths: ``/echo`` answers JSON (the
method, path, query, protocol, content type and length, every ``HTTP_*``
entry and the body read whole); ``/big?n=N`` answers N bytes; ``/stream``
answers three chunks of unknown length (chunked); ``/date`` sets its own
``Date`` header; ``/str`` is a broken app that answers a ``str``.
"""

from gevent import monkey

monkey.patch_all()

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from gevent import pywsgi

from session_manager.pywsgi import WSGIServer

Start = Callable[[str, list[tuple[str, str]]], Any]


def echo(environ: dict[str, Any], start_response: Start) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/big":
        size = int(environ["QUERY_STRING"].partition("=")[2])
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return [bytes(range(256)) * (size // 256) + b"x" * (size % 256)]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _chunks()
    if path == "/str":  # a broken app: a str body, which WSGI forbids
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["not bytes"]  # type: ignore[list-item]
    if path == "/date":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Date", "Tue, 01 Dec 2026 00:00:00 GMT")])
        return [b"dated"]
    body = environ["wsgi.input"].read()
    seen = {
        key: value
        for key, value in environ.items()
        if key.startswith("HTTP_")
        or key in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "CONTENT_TYPE", "CONTENT_LENGTH")
    }
    seen["body"] = body.decode("latin-1")
    reply = json.dumps(seen, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(reply)))])
    return [reply]


def _chunks() -> Iterator[bytes]:
    yield b"one,"
    yield b"two,"
    yield b"three"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=("ours", "gevent"), default="ours")
    parser.add_argument("--access-log", action="store_true", help="log each request to stderr")
    args = parser.parse_args()
    server_class = WSGIServer if args.server == "ours" else pywsgi.WSGIServer
    server_class(("127.0.0.1", args.port), echo, log=sys.stderr if args.access_log else None).serve_forever()


if __name__ == "__main__":
    main()
