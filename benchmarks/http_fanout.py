"""HTTP fan-out benchmark (issue 3, "Speed"): our Flask transport against the official Python SDK.

Each server runs in its own process pinned to one core; this process is the
load generator, pinned to the other core. For each server:

1. warm-up: a few sessions are opened and deleted (first-request costs are
   not counted as per-session memory);
2. N sessions, 50 at a time: POST initialize, POST notifications/initialized
   (over a few keep-alive connections), then GET the session's SSE stream on
   its own connection and keep it open;
3. server memory per idle session: VmRSS delta (before 2, after 2 plus one
   idle second) / N;
4. one POST /bench/broadcast?k=K&size=BYTES: the server sends K notifications
   (``notifications/message``, ~BYTES on the wire, its ``time.time()`` in
   ``params.data.t``) to every session; delivered/s = N*K / (trigger to last
   receipt), latency = receipt - ``t`` (both processes share the clock). Every
   stream must get exactly K notifications, in order.

Servers: ``ours`` is examples/server.py's app on gevent.pywsgi (``log=None``,
after ``monkey.patch_all()``), with a trigger route calling
``McpBlueprint.broadcast`` K times, in-memory managers without an event
store (at-most-once delivery); ``ours-ev`` is the same with an
``InMemoryEventStore`` (resumable streams: every event stored and sent with
its id), chosen with ``--events on`` (or ``both``, to print the two);
``parked`` (``--parked``) is ``ours`` on ``session_manager.pywsgi``, the
server the examples run on (streams written from the event loop). ``sdk`` is mcp's lowlevel ``Server``
``streamable_http_app()`` on uvicorn (one worker, log level warning), keeping
a registry of its sessions' ``ServerSession`` (taken in the
``notifications/initialized`` handler); its trigger sends each notification
to each session with ``send_notification``.

The generator is plain asyncio: hand-written HTTP/1.1, GET streams as
``asyncio.Protocol`` s that de-chunk and split SSE events by hand and pick
``seq`` and ``t`` out of each data line with one regex pass per read (no
``json.loads``: at ~200,000/s that alone would saturate this core). "srv CPU"
and "gen CPU" are the server's and the generator's CPU use over the measured
window: the server should be the one near 100%; if the generator is, the
figure is the generator's limit. "srv wait" is the time the server was
runnable but another process had its core: the machine must be otherwise
idle, and a run with a high "srv wait" measured the neighbours. The load
average is printed; ``--repeat`` alternates fresh runs of both servers and
prints medians.

    python benchmarks/http_fanout.py [--sessions 1000] [--notifications 20] [--size 200]
                                     [--server ours|sdk|both] [--events off|on|both] [--repeat 1]
"""

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["--serve"] and sys.argv[2:3] != ["sdk"]:
    from gevent import monkey  # the server process of ours: patch before anything else

    monkey.patch_all()

import argparse
import asyncio
import gc
import json
import os
import re
import resource
import select
import socket
import statistics
import subprocess
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL = "2025-11-25"
WARMUP_SESSIONS = 20
WARMUP_NAME = "warmup"  # client name of warm-up sessions (the SDK registry skips them)
CONCURRENCY = 50  # sessions being opened at a time
POST_CONNECTIONS = 8  # keep-alive connections shared by all POSTs
STEP_TIMEOUT = 30.0  # seconds for any one request or setup step
SDK_REFERENCE = "Python SDK on uvicorn ~4,600/s, 94 KB/session, p99 ~230 ms; tmcp (Node) ~69,000/s, 50 KB, p99 ~270 ms"
#: The seq and send time in a notification's params.data, as both servers serialize them.
SEQ_AND_TIME = re.compile(rb'"seq":\s*(\d+),\s*"t":\s*([0-9.eE+-]+)')
TARGETS = "ours >= 10x the SDK (aim 70,000/s), <= 30 KB per idle session, p99 < 300 ms"


# -- both server processes ------------------------------------------------------


def prepare_process(cpu: int | None) -> None:
    """Raise the fd limit to the hard limit and pin this process to *cpu*."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def listen() -> socket.socket:
    """A listening socket on a free port of 127.0.0.1, announced on stdout for the parent.

    With TCP_NODELAY, which the connections it accepts inherit: asyncio sets
    it only on sockets it knows are TCP (``proto`` 6), so without it uvicorn
    (the SDK) would wait for delayed ACKs between small writes.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    print("PORT", sock.getsockname()[1], flush=True)
    return sock


def bench_params(seq: int, size: int) -> dict[str, Any]:
    """``notifications/message`` params: sequence number, send time, padding to ~*size* bytes on the wire."""
    params: dict[str, Any] = {"level": "info", "data": {"seq": seq, "t": time.time(), "pad": ""}}
    message = {"jsonrpc": "2.0", "method": "notifications/message", "params": params}
    params["data"]["pad"] = "x" * max(0, size - len(json.dumps(message, separators=(",", ":"))))
    return params


def serve_ours(cpu: int | None, events: bool = False, parking: bool = False) -> None:
    from flask import request
    from gevent import pywsgi

    from session_manager.pywsgi import WSGIServer as ParkingServer

    sys.path.insert(0, ROOT)
    from examples.server import create_app, memory_managers

    prepare_process(cpu)
    os.environ.pop("MCP_REDIS_URL", None)  # the example would keep its note in Redis
    app = create_app(memory_managers(events=events))  # in-memory backends, with or without an event store
    blueprint = app.blueprints["mcp"]

    @app.post("/bench/broadcast")
    def trigger() -> dict[str, int]:
        k, size = int(request.args["k"]), int(request.args["size"])
        for seq in range(k):
            blueprint.broadcast("notifications/message", bench_params(seq, size))
        return {"sent": k}

    (ParkingServer if parking else pywsgi.WSGIServer)(listen(), app, log=None).serve_forever()


def serve_sdk(cpu: int | None) -> None:
    import uvicorn
    from mcp import types
    from mcp.server.lowlevel import Server
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    prepare_process(cpu)
    sessions = []  # the ServerSession of every benchmark session, for fan-out

    async def on_initialized(ctx: Any, params: Any) -> None:
        client = ctx.session.client_params
        if client is None or client.client_info.name != WARMUP_NAME:
            sessions.append(ctx.session)

    async def trigger(request: Request) -> JSONResponse:
        k, size = int(request.query_params["k"]), int(request.query_params["size"])
        for seq in range(k):
            params = types.LoggingMessageNotificationParams(**bench_params(seq, size))
            note = types.LoggingMessageNotification(params=params)
            for session in sessions:
                await session.send_notification(note)  # related_request_id=None: the GET stream
        return JSONResponse({"sent": k})

    server: Server[Any] = Server("bench-sdk")
    server.add_notification_handler("notifications/initialized", types.NotificationParams, on_initialized)
    app = server.streamable_http_app(custom_starlette_routes=[Route("/bench/broadcast", trigger, methods=["POST"])])
    config = uvicorn.Config(app, workers=1, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[listen()])


# -- the load generator: HTTP/1.1 by hand ----------------------------------------------


def http_request(method: str, path: str, port: int, sid: str | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if method == "GET":
        lines.append("Accept: text/event-stream")
    else:
        lines += ["Content-Type: application/json", "Accept: application/json, text/event-stream"]
        lines.append(f"Content-Length: {len(body)}")
    if sid is not None:
        lines += [f"Mcp-Session-Id: {sid}", f"MCP-Protocol-Version: {PROTOCOL}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def exchange(conn: Connection, request: bytes) -> tuple[int, dict[str, str]]:
    """One request on a keep-alive connection; reads (and discards) the whole response body."""
    reader, writer = conn
    writer.write(request)
    status, headers = parse_head((await reader.readuntil(b"\r\n\r\n"))[:-4])
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif status not in (202, 204, 304):
        raise RuntimeError(f"response {status} without framing: {headers}")
    return status, headers


class Run:
    """What the streams of one measurement share."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.expected = 0  # streams that must each reach k notifications
        self.complete = 0
        self.last_receipt = 0.0
        self.all_done = asyncio.get_running_loop().create_future()

    def counted(self, stream: Any, before: int, now: float) -> None:
        """*stream*'s count went from *before* to ``stream.count`` at *now*: its K-th makes it complete."""
        self.last_receipt = now
        if before < self.k <= stream.count:
            stream.finished_at = now
            self.complete += 1
            if self.complete == self.expected and not self.all_done.done():
                self.all_done.set_result(None)


class Stream(asyncio.Protocol):
    """One GET stream: response head, chunked body, SSE events.

    While the broadcast runs it only counts notifications and keeps each
    read's receipt time with the raw (seq, t) pairs; :meth:`check` converts
    them afterwards, so the load generator does as little as possible.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.raw = bytearray()  # bytes not yet de-chunked
        self.sse = b""  # de-chunked bytes not yet a complete event
        self.head = asyncio.get_running_loop().create_future()
        self.count = 0  # notifications received
        self.finished_at = 0.0  # when the K-th came
        self.received: list[tuple[float, list[tuple[bytes, bytes]]]] = []  # (receipt time, [(seq, t)])
        self.malformed = 0  # data lines without a seq/t pair
        self.transport: asyncio.Transport | None = None

    def check(self, latencies: list[float]) -> bool:
        """Add this stream's latencies; True if it got exactly seq 0..k-1, in order."""
        seqs = []
        for now, pairs in self.received:
            for seq, sent in pairs:
                seqs.append(int(seq))
                latencies.append(now - float(sent))
        return not self.malformed and seqs == list(range(self.run.k))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(ConnectionError("stream closed before its response head"))

    def data_received(self, data: bytes) -> None:
        now = time.time()  # one receipt time per read
        raw = self.raw
        raw += data
        if not self.head.done():
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head.set_result(parse_head(bytes(raw[:end])))
            del raw[: end + 4]
        body, pos = [], 0
        while True:  # chunk: <hex size>\r\n<bytes>\r\n
            eol = raw.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(raw[pos:eol].split(b";")[0], 16)
            if len(raw) < eol + 4 + size:
                break
            body.append(raw[eol + 2 : eol + 2 + size])
            pos = eol + 4 + size
        del raw[:pos]
        if body:
            self.events(b"".join(body), now)

    def events(self, data: bytes, now: float) -> None:
        sse = self.sse + data
        if b"\r" in sse:
            sse = sse.replace(b"\r\n", b"\n")  # sse-starlette ends lines with CRLF, ours with LF
        end = sse.rfind(b"\n\n") + 2  # complete events end at a blank line
        if end < 2:
            self.sse = sse
            return
        events, self.sse = b"\n" + sse[:end], sse[end:]
        # Each data line (a JSON message is one line; comments, event: and id: lines
        # and the empty data of a priming event don't count) must carry one seq/t
        # pair: json.loads per event would make this process the bottleneck, so
        # both are read with one regex pass.
        pairs = SEQ_AND_TIME.findall(events)
        self.malformed += events.count(b"\ndata:") - events.count(b"\ndata: \n") - len(pairs)
        if not pairs:
            return
        self.received.append((now, pairs))
        before = self.count
        self.count += len(pairs)
        self.run.counted(self, before, now)


async def open_session(
    port: int, pool: "asyncio.Queue[Connection]", run: Run, name: str, protocol: type[Stream] = Stream
) -> tuple[str, Stream]:
    """initialize and notifications/initialized on a pooled connection, then the GET stream (a *protocol*) on its own."""
    conn = await pool.get()
    try:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": name, "version": "1"}},
        }
        status, headers = await exchange(conn, http_request("POST", "/mcp", port, body=json.dumps(init).encode()))
        sid = headers.get("mcp-session-id")
        if status != 200 or not sid:
            raise RuntimeError(f"initialize: {status} {headers}")
        initialized = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
        status, _ = await exchange(conn, http_request("POST", "/mcp", port, sid, initialized))
        if status != 202:
            raise RuntimeError(f"notifications/initialized: {status}")
    finally:
        pool.put_nowait(conn)
    _, stream = await asyncio.get_running_loop().create_connection(lambda: protocol(run), "127.0.0.1", port)
    stream.transport.write(http_request("GET", "/mcp", port, sid))  # type: ignore[union-attr]
    status, headers = await stream.head
    if status != 200 or "chunked" not in headers.get("transfer-encoding", ""):
        raise RuntimeError(f"GET stream: {status} {headers}")
    return sid, stream


async def open_sessions(
    port: int, n: int, run: Run, name: str, protocol: type[Stream] = Stream
) -> list[tuple[str, Stream]]:
    """Open *n* sessions, CONCURRENCY at a time, each step bounded by STEP_TIMEOUT."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(POST_CONNECTIONS):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one() -> tuple[str, Stream]:
        async with limit:
            return await asyncio.wait_for(open_session(port, pool, run, name, protocol), STEP_TIMEOUT)

    try:
        return await asyncio.gather(*(one() for _ in range(n)))
    finally:
        while not pool.empty():
            pool.get_nowait()[1].close()


async def post_once(port: int, request: bytes, timeout: float = STEP_TIMEOUT) -> int:
    """One request on a fresh connection."""
    conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), STEP_TIMEOUT)
    try:
        return (await asyncio.wait_for(exchange(conn, request), timeout))[0]
    finally:
        conn[1].close()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def cpu_seconds(pid: int) -> tuple[float, float]:
    """Seconds all threads of *pid* ran and waited for a CPU (schedstat: ns, unlike /proc/PID/stat)."""
    ran = waited = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                fields = stat.read().split()
        except FileNotFoundError:  # a thread that just ended
            continue
        ran, waited = ran + int(fields[0]), waited + int(fields[1])
    return ran / 1e9, waited / 1e9


async def measure(port: int, pid: int, n: int, k: int, size: int) -> dict[str, Any]:
    # Warm-up: first-request costs (imports, caches) must not count as per-session memory.
    warm = Run(k)
    for sid, stream in await open_sessions(port, WARMUP_SESSIONS, warm, WARMUP_NAME):
        await post_once(port, http_request("DELETE", "/mcp", port, sid))
        stream.transport.close()  # type: ignore[union-attr]
    await asyncio.sleep(0.5)
    rss_before = rss_kb(pid)

    run = Run(k)
    run.expected = n
    started = time.time()
    sessions = await open_sessions(port, n, run, "bench")
    setup_s = time.time() - started
    try:
        await asyncio.sleep(1.0)  # all N streams open and idle
        rss_after = rss_kb(pid)

        gc.collect()
        gc.freeze()  # keep the generator's GC off the setup objects during the window
        (server_ran, server_waited), own_cpu = cpu_seconds(pid), time.process_time()
        timeout = STEP_TIMEOUT + n * k / 2000  # generous: even 2,000/s finishes
        triggered = time.time()
        broadcast = http_request("POST", f"/bench/broadcast?k={k}&size={size}", port)
        trigger = asyncio.ensure_future(post_once(port, broadcast, timeout))  # answered once all are sent
        try:
            await asyncio.wait_for(asyncio.shield(run.all_done), timeout)
        except asyncio.TimeoutError:
            pass  # reported as failures below
        done = time.time()
        ran, waited = cpu_seconds(pid)
        server_ran, server_waited, own_cpu = ran - server_ran, waited - server_waited, time.process_time() - own_cpu
        trigger_status = await trigger
        await asyncio.sleep(0.3)  # anything beyond k per stream would show up as a failure
    finally:
        gc.unfreeze()
        for _, stream in sessions:
            stream.transport.close()  # type: ignore[union-attr]

    window = max(run.last_receipt, triggered) - triggered
    latencies: list[float] = []
    failures = sum(not stream.check(latencies) for _, stream in sessions)
    latencies.sort()

    def ms(quantile: float) -> float:
        return latencies[min(len(latencies) - 1, int(quantile * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "sessions": n,
        "delivered": len(latencies),
        "per_s": len(latencies) / window if window > 0 else 0.0,
        "p50": ms(0.50),
        "p99": ms(0.99),
        "kb": (rss_after - rss_before) / n,
        "failures": failures + (trigger_status != 200),
        "srv_cpu": server_ran / (done - triggered),
        "srv_wait": server_waited / (done - triggered),  # runnable, but another process had its core
        "gen_cpu": own_cpu / (done - triggered),
        "setup_s": setup_s,
    }


# -- orchestration ---------------------------------------------------------------------


def start_server(kind: str, cpu: int | None) -> tuple["subprocess.Popen[str]", int]:
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", kind]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if not select.select([proc.stdout], [], [], 60)[0]:
        stop(proc)
        raise RuntimeError(f"{kind} server did not start within 60 s")
    line = proc.stdout.readline().split()  # type: ignore[union-attr]
    if len(line) != 2 or line[0] != "PORT":
        stop(proc)
        raise RuntimeError(f"{kind} server failed to start: {line}")
    return proc, int(line[1])


def stop(proc: "subprocess.Popen[str]") -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def bench(kind: str, server_cpu: int | None, args: argparse.Namespace) -> dict[str, Any]:
    proc, port = start_server(kind, server_cpu)
    try:
        return asyncio.run(measure(port, proc.pid, args.sessions, args.notifications, args.size))
    finally:
        stop(proc)


COLUMNS = (
    "server   run     sessions  delivered/s  p50 ms  p99 ms  KB/session  failures  srv CPU  srv wait  gen CPU  setup s"
)


def row(kind: str, label: str, r: dict[str, Any]) -> str:
    return (
        f"{kind:<7}  {label:<6}  {r['sessions']:>8}  {r['per_s']:>11,.0f}  {r['p50']:>6.1f}  {r['p99']:>6.1f}  "
        f"{r['kb']:>10.1f}  {r['failures']:>8}  {r['srv_cpu']:>7.0%}  {r['srv_wait']:>8.0%}  "
        f"{r['gen_cpu']:>7.0%}  {r['setup_s']:>7.1f}"
    )


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-column median of several runs (failures: the total)."""
    summary = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    summary["failures"] = sum(r["failures"] for r in runs)
    summary["sessions"] = runs[0]["sessions"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1000, help="N sessions with an open GET stream")
    parser.add_argument("--notifications", type=int, default=20, help="K notifications broadcast to each")
    parser.add_argument("--size", type=int, default=200, help="bytes per notification on the wire")
    parser.add_argument("--server", choices=("ours", "sdk", "both"), default="both")
    parser.add_argument(
        "--events",
        choices=("off", "on", "both"),
        default="off",
        help="ours without an event store (off), with one (on: 'ours-ev'), or both",
    )
    parser.add_argument(
        "--parked", action="store_true", help="also ours on session_manager.pywsgi ('parked', no event store)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per server (fresh processes), medians printed")
    parser.add_argument("--serve", choices=("ours", "ours-ev", "parked", "sdk"), help=argparse.SUPPRESS)  # child
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.serve == "sdk":
            serve_sdk(args.cpu)
        else:
            serve_ours(args.cpu, events=args.serve == "ours-ev", parking=args.serve == "parked")
        return

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[-1] if cpus else None
    prepare_process(cpus[0] if len(cpus) > 1 else None)  # the generator on the other core
    print(
        f"server on CPU {server_cpu}, load generator on CPU {cpus[0] if len(cpus) > 1 else '(same)'}; "
        f"N={args.sessions} sessions, K={args.notifications} notifications of ~{args.size} bytes; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    ours_kinds = {"off": ["ours"], "on": ["ours-ev"], "both": ["ours", "ours-ev"]}[args.events]
    ours_kinds += ["parked"] if args.parked else []
    kinds = [kind for name in (("ours", "sdk") if args.server == "both" else (args.server,)) for kind in (ours_kinds if name == "ours" else [name])]
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    print(COLUMNS)
    for run in range(1, args.repeat + 1):  # servers alternate, so noise hits both alike
        for kind in kinds:
            results[kind].append(bench(kind, server_cpu, args))
            print(row(kind, f"#{run}", results[kind][-1]), flush=True)
    summary = {kind: median(runs) for kind, runs in results.items()}
    if args.repeat > 1:
        for kind, r in summary.items():
            print(row(kind, "median", r))
    if "ours" in summary and "ours-ev" in summary:
        print(f"event store cost: delivered/s x{summary['ours-ev']['per_s'] / summary['ours']['per_s']:.2f} with it")
    for mine in [kind for kind in ("ours", "parked") if kind in summary] if "sdk" in summary else []:
        ours, sdk = summary[mine], summary["sdk"]
        print(
            f"ratio {mine}/sdk{' (medians)' if args.repeat > 1 else ''}: "
            f"delivered/s x{ours['per_s'] / sdk['per_s']:.1f}, KB/session x{ours['kb'] / sdk['kb']:.2f}, "
            f"p99 x{ours['p99'] / sdk['p99']:.2f}"
        )
    print(f"reference (issue 3): {SDK_REFERENCE}\ntargets: {TARGETS}")


if __name__ == "__main__":
    main()
