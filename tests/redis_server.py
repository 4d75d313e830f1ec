"""A private redis-server for the tests: free 127.0.0.1 port, own data dir, no persistence."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import redis

#: How the test command gets redis-server when it is missing.
MISSING = (
    "redis-server is not installed (not found on PATH). Run ./scripts/test.sh, which installs "
    "the Debian package redis-server, or install it yourself (apt-get install redis-server)."
)


def find_binary() -> str | None:
    """Path of redis-server, or None."""
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server process on 127.0.0.1; restartable on the same port."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="session_manager-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain client for checks (CLIENT LIST, KEYS...); close it after use."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.dir,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", os.path.join(self.dir, "redis.log"),
        ]

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        assert self.process is None, "already running"
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"redis-server exited at start: {err or self._log_tail()}")
            client = self.client()
            try:
                if client.ping():
                    return self
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError):
                pass
            finally:
                client.close()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING within {timeout} s: {self._log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait until it is gone."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        if process.stderr:
            process.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port (every key is lost: no persistence)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and remove the data dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as log:
                return log.read()[-2000:]
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def url_or_private(url: str | None) -> Iterator[tuple[str, RedisServer | None]]:
    """For benchmarks: *url* as given, or a private redis-server started (and removed) here."""
    if url is not None:
        yield url, None
        return
    binary = find_binary()
    if binary is None:
        sys.exit(MISSING)
    server = RedisServer(binary).start()
    try:
        yield server.url, server
    finally:
        server.cleanup()
