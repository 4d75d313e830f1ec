"""A TCP proxy on 127.0.0.1 that delays every client -> server chunk: a slow or distant Redis, reproduced.

Each chunk a client writes reaches the server *delay* later (in order); the
server's replies go back at once. So every round trip (a command and its
reply, or a pipeline of them) takes *delay* more, as with a Redis that is
busy or a few milliseconds away; what the server pushes by itself (pub/sub
messages) is not delayed. Threads: one listener, and per connection one
reader per direction plus one that releases the delayed chunks.

    python benchmarks/delay_proxy.py --upstream 6379 --delay-ms 5    # prints "PORT <port>", serves until killed

or, from Python, ``with DelayProxy(6379, 0.005) as port: ...`` (a thread in
the caller's process: give it its own process when the caller is busy, as
the benchmarks do with :func:`spawn_proxy`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType

#: Bytes read at a time from either side.
_READ = 65536


class DelayProxy:
    """Listen on a free port of 127.0.0.1 and forward to ``127.0.0.1:upstream``, client chunks *delay* seconds late."""

    def __init__(self, upstream: int, delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> int:
        threading.Thread(target=self._accept, name="delay-proxy", daemon=True).start()
        return self.port

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> int:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets |= {client, server}
            chunks: collections.deque[tuple[float, bytes]] = collections.deque()
            ready = threading.Condition()
            for target, args in (
                (self._read_delayed, (client, chunks, ready)),
                (self._release, (client, server, chunks, ready)),
                (self._pipe, (server, client)),
            ):
                threading.Thread(target=target, args=args, daemon=True).start()

    def _read_delayed(
        self, client: socket.socket, chunks: collections.deque[tuple[float, bytes]], ready: threading.Condition
    ) -> None:
        """Client -> server: stamp each chunk with the time it is due."""
        try:
            while data := client.recv(_READ):
                with ready:
                    chunks.append((time.monotonic() + self.delay, data))
                    ready.notify()
        except OSError:
            pass
        with ready:
            chunks.append((0.0, b""))  # end of stream
            ready.notify()

    def _release(
        self, client: socket.socket, server: socket.socket, chunks: collections.deque[tuple[float, bytes]],
        ready: threading.Condition,
    ) -> None:
        """Send each client chunk to the server when it is due, in order."""
        try:
            while True:
                with ready:
                    while not chunks:
                        ready.wait()
                    due, data = chunks.popleft()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                server.sendall(data)
        except OSError:
            pass
        self._drop(client, server)

    def _pipe(self, server: socket.socket, client: socket.socket) -> None:
        """Server -> client, at once."""
        try:
            while data := server.recv(_READ):
                client.sendall(data)
        except OSError:
            pass
        self._drop(client, server)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._sockets.discard(sock)


@contextlib.contextmanager
def spawn_proxy(upstream: int, delay_ms: float, cpu: int | None = None) -> Iterator[int]:
    """A proxy in its own process (pinned to *cpu* if given); yields its port, stops it on exit."""
    cmd = [sys.executable, __file__, "--upstream", str(upstream), "--delay-ms", str(delay_ms)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()  # type: ignore[union-attr]
        if len(line) != 2 or line[0] != "PORT":
            raise RuntimeError(f"the delay proxy failed to start: {line}")
        yield int(line[1])
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=int, required=True, help="port of the server on 127.0.0.1")
    parser.add_argument("--delay-ms", type=float, required=True, help="added to every client -> server chunk")
    parser.add_argument("--cpu", type=int, help="pin the proxy to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    proxy = DelayProxy(args.upstream, args.delay_ms / 1000)
    print("PORT", proxy.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.close()


if __name__ == "__main__":
    main()
