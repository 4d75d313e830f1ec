"""Memory per idle GET stream in one gunicorn worker, by worker class (issue 16, item 1 under gunicorn).

For each worker class, a fresh ``gunicorn -w 1`` serving ``examples.server:create_app()``
(in-memory managers with the example's event store): 20 warm-up sessions opened and
deleted, then N sessions each with an open GET stream (http_fanout.py's asyncio client),
and the worker's VmRSS delta over the N streams / N.

    python benchmarks/gunicorn_memory.py [--streams 3000]
        [--worker-class gevent gevent_pywsgi session_manager.gunicorn.GeventWorker]

``gevent`` is gunicorn's own HTTP handling on gevent, ``gevent_pywsgi`` is
gevent.pywsgi, ``session_manager.gunicorn.GeventWorker`` is gevent.pywsgi with
streams written from the event loop (session_manager.pywsgi).
"""

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

import http_fanout as hf

WORKER_CLASSES = ["gevent", "gevent_pywsgi", "session_manager.gunicorn.GeventWorker"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_pid(arbiter: int) -> int | None:
    """The arbiter's one worker process."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == arbiter:
                        return int(entry)
            except OSError:
                continue
    return None


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not listen on {port} within {timeout} s") from None
            time.sleep(0.1)


async def measure(port: int, arbiter: int, n: int) -> float:
    """Warm up, then the worker's RSS delta over *n* idle GET streams, per stream (KB)."""
    warm = hf.Run(1)
    for sid, stream in await hf.open_sessions(port, hf.WARMUP_SESSIONS, warm, hf.WARMUP_NAME):
        await hf.post_once(port, hf.http_request("DELETE", "/mcp", port, sid))
        stream.transport.close()  # type: ignore[union-attr]
    await asyncio.sleep(0.5)
    pid = worker_pid(arbiter)
    if pid is None:
        raise RuntimeError("no worker process")
    before = hf.rss_kb(pid)
    sessions = await hf.open_sessions(port, n, hf.Run(1), "bench")
    await asyncio.sleep(1.0)
    after = hf.rss_kb(pid)
    for _, stream in sessions:
        stream.transport.close()  # type: ignore[union-attr]
    return (after - before) / n


def kb_per_stream(worker_class: str, n: int) -> float:
    """A fresh one-worker gunicorn of *worker_class*, measured."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("MCP_REDIS_URL", None)  # in memory
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", worker_class, "-w", "1", "--worker-connections", str(n + 100),
         "-b", f"127.0.0.1:{port}", "--keep-alive", "120", "--graceful-timeout", "1", "examples.server:create_app()"],
        cwd=ROOT, env=env, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        return asyncio.run(measure(port, proc.pid, n))
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=3000, help="N idle GET streams")
    parser.add_argument("--worker-class", nargs="+", default=WORKER_CLASSES, help="gunicorn -k values")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"one gunicorn worker, examples.server:create_app() in memory, N={args.streams:,} idle GET streams")
    for worker_class in args.worker_class:
        kb = kb_per_stream(worker_class, args.streams)
        print(f"{worker_class:<40} {kb:6.1f} KB RSS per idle stream", flush=True)


if __name__ == "__main__":
    main()
