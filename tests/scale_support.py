"""The server process of tests/test_stream_scale.py: the example app on gevent.pywsgi, with two test routes.

Run as ``python -m tests.scale_support --port N --keepalive S --session-ttl S``, optionally with
``--maxsize M``, ``--max-sessions N``, ``--sndbuf B`` and ``--parking`` (on
``session_manager.pywsgi``; the parent does all this through
``tests.flask_support.ServerProcess``). It is ``examples/server.py``'s app
with in-memory managers and an event store (the example's default), served
as ``benchmarks/http_fanout.py`` serves "ours", plus:

- ``POST /scale/broadcast?k=K&size=BYTES``: K ``notifications/message`` to
  every session, ``params.data.seq`` 0..K-1, padded to ~BYTES on the wire
  (the benchmark's ``bench_params``, so its load generator reads them);
  answered once all K are queued on every stream.
- ``GET /scale/state``: what the scale tests compare with their baseline
  (:func:`state`).

Importing this module changes nothing: gevent's monkey-patching and the
server's imports happen only when it runs as a program.
"""

import sys

if __name__ == "__main__":
    from gevent import monkey  # before anything else imports socket or threading

    monkey.patch_all()

import argparse
import ctypes
import gc
import os
import resource
import socket
from typing import Any

#: The test routes.
BROADCAST_PATH = "/scale/broadcast"
STATE_PATH = "/scale/state"


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33 and later)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def malloc_in_use_kb() -> int:
    """KB that glibc's ``malloc`` has handed out and not got back: heap chunks in use plus mmapped ones.

    What the process holds outside Python's small-object allocator (its arenas are mmapped on their own):
    greenlet stacks, socket buffers, large strings and dict tables. Unlike RSS it does not count what
    ``malloc`` keeps free for reuse. -1 where there is no ``mallinfo2`` (not glibc, or glibc before 2.33).
    """
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return -1
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) // 1024


def state(streams: Any, info: Any, store: Any) -> dict[str, int]:
    """This process now, after a full garbage collection.

    - ``rss_kb``: resident memory (VmRSS);
    - ``fds``: open file descriptors (sockets included);
    - ``greenlets``: live greenlet objects (gevent's hub, the server's, one per connection);
    - ``threads``: OS threads (``/proc/self/task``);
    - ``blocks``: memory blocks Python's allocator has handed out and not got back (``sys.getallocatedblocks``);
    - ``malloc_kb``: bytes C's ``malloc`` has handed out and not got back (:func:`malloc_in_use_kb`);
    - ``streams``: GET streams the stream manager has registered; ``sessions``: sessions the info
      manager holds; ``logged``: sessions with stored events;
    - ``dropped``: streams cut as slow consumers so far;
    - ``fd_limit``: the hard RLIMIT_NOFILE, which sizes the tests.
    """
    import greenlet

    gc.collect()
    with open("/proc/self/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "rss_kb": rss_kb,
        "fds": len(os.listdir("/proc/self/fd")),
        "greenlets": sum(isinstance(o, greenlet.greenlet) for o in gc.get_objects()),
        "threads": len(os.listdir("/proc/self/task")),
        "blocks": sys.getallocatedblocks(),
        "malloc_kb": malloc_in_use_kb(),
        "streams": len(streams),
        "sessions": len(info),
        "logged": len(store),
        "dropped": streams.slow_consumers_dropped,
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


def listener(port: int, sndbuf: int | None = None) -> socket.socket:
    """The listening socket, with TCP_NODELAY and an optional send buffer size, which accepted connections inherit.

    pywsgi writes a response's head and its first chunk separately: without TCP_NODELAY, each small write
    after the first waits for the client's delayed ACK (40 ms), and setting up thousands of streams is
    slowed down by that, not by the server. A fixed *sndbuf* (``SO_SNDBUF``, which turns the kernel's
    autotuning off) bounds what a connection buffers for a client that does not read: with the default of
    up to 4 MB, filling it for 1,000 such clients would take gigabytes of copying.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    return sock


def main(argv: list[str] | None = None) -> None:
    """Serve until terminated (the parent sends SIGTERM)."""
    from flask import jsonify, request
    from gevent import pywsgi

    import session_manager.pywsgi
    from benchmarks.http_fanout import bench_params
    from examples.server import create_app
    from session_manager import (
        InMemoryEventStore,
        InMemoryInfoSessionManager,
        InMemoryStreamSessionManager,
        SessionManagers,
    )
    from session_manager.stream import DEFAULT_MAXSIZE

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keepalive", type=float, required=True, help="seconds between pings on idle streams")
    parser.add_argument("--session-ttl", type=float, required=True, help="seconds an unused session lives")
    parser.add_argument("--maxsize", type=int, default=DEFAULT_MAXSIZE, help="messages a stream may hold")
    parser.add_argument("--max-sessions", type=int, help="sessions held at once (default: no cap)")
    parser.add_argument("--sndbuf", type=int, help="SO_SNDBUF of every connection (default: the kernel's)")
    parser.add_argument("--parking", action="store_true", help="serve on session_manager.pywsgi, not gevent.pywsgi")
    args = parser.parse_args(argv)

    # One descriptor per open stream: raise the soft limit to the hard one (the parent sizes N by it).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.pop("MCP_REDIS_URL", None)  # the example would keep its note in Redis

    # The example's in-memory managers, with a short session_ttl: clients that vanish never DELETE their
    # session, so memory comes back only once their sessions expire; the keep-alive ping is what notices
    # a stream whose client is gone.
    store = InMemoryEventStore()
    streams = InMemoryStreamSessionManager(event_store=store)
    info = InMemoryInfoSessionManager(session_ttl=args.session_ttl)
    app = create_app(
        SessionManagers(streams, info),
        keepalive=args.keepalive,
        stream_maxsize=args.maxsize,
        max_sessions=args.max_sessions,  # the default cap, 10,000, is what a server holding more must raise
    )
    blueprint = app.blueprints["mcp"]

    @app.post(BROADCAST_PATH)
    def broadcast() -> Any:
        k, size = int(request.args["k"]), int(request.args["size"])
        for seq in range(k):
            blueprint.broadcast("notifications/message", bench_params(seq, size))
        return jsonify(sent=k)

    @app.get(STATE_PATH)
    def report() -> Any:
        return jsonify(state(streams, info, store))

    server_class = session_manager.pywsgi.WSGIServer if args.parking else pywsgi.WSGIServer
    server_class(listener(args.port, args.sndbuf), app, log=None).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
