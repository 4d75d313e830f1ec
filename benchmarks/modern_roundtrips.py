"""Stateless ``tools/call`` round trips at protocol 2026-07-28 (issue 11, "Speed"): ours against the official SDK.

At 2026-07-28 ("modern") there is no ``initialize`` and no session: every POST
carries ``_meta`` (``io.modelcontextprotocol/protocolVersion`` and
``clientCapabilities``) and the headers ``MCP-Protocol-Version``,
``Mcp-Method`` and ``Mcp-Name``, so the cost that matters is one request's
round trip. This measures round trips/s and p50/p99 latency of
``tools/call echo`` (answer: one text content ``"ok"``) for each answer kind:

- ``json``: ``Accept: application/json``, servers in JSON-response mode;
- ``sse``: ``Accept: application/json, text/event-stream``, default servers
  (the SDK defers choosing SSE until the tool sends a notification, so it
  answers these with JSON: the "answered" column shows what came back);
- ``progress`` (not run by default): as ``sse`` with a ``progressToken``,
  and the tool reports progress once before returning, so both servers
  stream: one ``notifications/progress`` event, then the result.

Servers, each started afresh per run in a process pinned to one core, on a
listening socket with TCP_NODELAY (``http_fanout.listen``): ``ours`` is
``session_manager.wsgi.McpApp`` with a plain handler on
``session_manager.pywsgi`` (the library's gevent server; ``--wsgi-server
gevent``: gevent.pywsgi itself), ``log=None``, after
``monkey.patch_all()``; ``sdk`` is mcp's lowlevel
``Server`` (``on_call_tool``/``on_list_tools``: the SDK's fastest path;
``--sdk-api mcpserver``: ``MCPServer``, ex-FastMCP, with an ``@tool``
function) as ``streamable_http_app(stateless_http=True)`` on uvicorn (one
worker, log level warning; h11 and the asyncio loop unless httptools and
uvloop are importable: the header line says which). ``--floor`` adds
``floor``: a bare WSGI app on the same WSGI server that parses the body and
answers the same bytes, the ceiling for ours on that server.

The load generator is this process, on the other core: asyncio with raw
sockets and hand-written HTTP/1.1, C keep-alive connections, each sending
its next request as soon as the previous answer is read, R requests in all
after a warm-up (the first requests pay imports and caches), the whole run
bounded by ``--timeout``. Every answer is checked: status 200, JSON-RPC
``id`` and result (content and ``resultType: "complete"``); with SSE, the
last data event (and, for ``progress``, a progress event before it).
Anything else counts as a failure, with its reason. "srv us/rt": the
server's CPU time (user and system, all threads) per round trip, the figure
least moved by neighbours; "srv CPU"/"srv wait": the server's CPU share and
the share it was runnable while another process had its core (noise);
"gen CPU": the generator's share (near 100%: the figure is the generator's
limit). Runs alternate ours/SDK; ``--repeat`` prints the best and the median
of each, and the ratios.

    python benchmarks/modern_roundtrips.py [--connections 32] [--requests 5000] [--repeat 3]
                                           [--kinds json sse progress] [--server ours|sdk|both]
                                           [--sdk-api lowlevel|mcpserver] [--floor] [--timeout 60]
                                           [--wsgi-server session_manager|gevent]
"""

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["--serve"] and sys.argv[2:3] != ["sdk"]:
    from gevent import monkey  # a gevent server process: patch before anything else

    monkey.patch_all()

import argparse
import asyncio
import json
import os
import select
import statistics
import subprocess
import time
from collections import Counter
from importlib import metadata, util
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

import http_fanout as hf

PROTOCOL = "2026-07-28"
TOOL = "echo"
CONTENT = [{"type": "text", "text": "ok"}]
ECHO_TOOL = {"name": TOOL, "description": "Answers ok.", "inputSchema": {"type": "object", "properties": {}}}
ACCEPT = {"json": "application/json", "sse": "application/json, text/event-stream"}
ACCEPT["progress"] = ACCEPT["sse"]
KINDS = ("json", "sse", "progress")
TARGET = "ours >= 3x the SDK's round trips/s"
WSGI_SERVER = ["session_manager"]  # --wsgi-server, passed on to the server processes


# -- the servers -------------------------------------------------------------------------


def wsgi_server() -> Any:
    """The WSGI server class of ours and floor (``--wsgi-server``)."""
    if WSGI_SERVER[0] == "gevent":
        from gevent.pywsgi import WSGIServer
    else:
        from session_manager.pywsgi import WSGIServer
    return WSGIServer


def serve_ours(cpu: int | None, kind: str) -> None:
    from session_manager.wsgi import INVALID_PARAMS, METHOD_NOT_FOUND, JsonRpcError, McpApp

    hf.prepare_process(cpu)

    def handler(message: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
        method = message.get("method")
        if method == "tools/call":
            if message["params"].get("name") != TOOL:
                raise JsonRpcError(INVALID_PARAMS, f"Unknown tool: {message['params'].get('name')}")
            if kind == "progress":
                ctx.progress(1, 1)
            return {"content": CONTENT}
        if method == "tools/list":
            return {"tools": [ECHO_TOOL]}
        if method in ("initialize", "ping"):
            return {}
        if "id" in message and method:
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        return None

    app = McpApp(handler, json_response=kind == "json", server_info={"name": "bench-ours", "version": "1"})
    wsgi_server()(hf.listen(), app, log=None).serve_forever()


def serve_floor(cpu: int | None, kind: str) -> None:
    """The least a WSGI app on the same server can do: parse the body, answer the same bytes (no checks)."""
    hf.prepare_process(cpu)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        message = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        result = {"content": CONTENT, "resultType": "complete"}
        reply = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}, separators=(",", ":")).encode()
        if kind == "json":
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(reply)))])
            return [reply]
        frames = [b"data: " + reply + b"\n\n"]
        if kind == "progress":
            token = message["params"]["_meta"]["progressToken"]
            note = {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": token, "progress": 1},
            }
            frames.insert(0, b"data: " + json.dumps(note, separators=(",", ":")).encode() + b"\n\n")
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        return frames

    wsgi_server()(hf.listen(), app, log=None).serve_forever()


def serve_sdk(cpu: int | None, kind: str, api: str) -> None:
    import uvicorn
    from mcp import types

    hf.prepare_process(cpu)
    if api == "mcpserver":
        from mcp.server.mcpserver import Context, MCPServer

        mcp = MCPServer("bench-sdk", version="1", log_level="WARNING")

        @mcp.tool(name=TOOL, description=ECHO_TOOL["description"])
        async def echo(ctx: Context) -> str:
            if kind == "progress":
                await ctx.report_progress(1, 1)
            return "ok"

        app = mcp.streamable_http_app(json_response=kind == "json", stateless_http=True)
    else:
        from mcp.server.lowlevel import Server

        async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
            return types.ListToolsResult(tools=[types.Tool.model_validate(ECHO_TOOL)])

        async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            if params.name != TOOL:
                raise ValueError(f"Unknown tool: {params.name}")
            if kind == "progress":
                await ctx.session.report_progress(1, 1)
            return types.CallToolResult(content=[types.TextContent(type="text", text="ok")])

        server: Server[Any] = Server("bench-sdk", version="1", on_list_tools=list_tools, on_call_tool=call_tool)
        app = server.streamable_http_app(json_response=kind == "json", stateless_http=True)
    config = uvicorn.Config(app, workers=1, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[hf.listen()])


def start_server(name: str, kind: str, cpu: int | None, sdk_api: str) -> tuple["subprocess.Popen[str]", int]:
    """A server process (this script with ``--serve NAME KIND``) on a free port; returns it and its port."""
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", name, kind, "--sdk-api", sdk_api]
    cmd += ["--wsgi-server", WSGI_SERVER[0]]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if not select.select([proc.stdout], [], [], 60)[0]:
        hf.stop(proc)
        raise RuntimeError(f"{name} server did not start within 60 s")
    line = proc.stdout.readline().split()  # type: ignore[union-attr]
    if len(line) != 2 or line[0] != "PORT":
        hf.stop(proc)
        raise RuntimeError(f"{name} server failed to start: {line}")
    return proc, int(line[1])


# -- the load generator ------------------------------------------------------------------


class Requests:
    """The wire bytes of ``tools/call echo`` for one answer kind, by request id."""

    def __init__(self, port: int, kind: str) -> None:
        meta: dict[str, Any] = {
            "io.modelcontextprotocol/protocolVersion": PROTOCOL,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
        }
        if kind == "progress":
            meta["progressToken"] = "ID"  # replaced by the request id
        params = {"name": TOOL, "arguments": {}, "_meta": meta}
        body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "tools/call", "params": params})
        self.body = body.replace('"id": 0', '"id": %d').replace('"ID"', "%d")
        self.progress = kind == "progress"
        self.head = (
            "POST /mcp HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Accept: {ACCEPT[kind]}\r\n"
            f"MCP-Protocol-Version: {PROTOCOL}\r\n"
            "Mcp-Method: tools/call\r\n"
            f"Mcp-Name: {TOOL}\r\n"
            "Content-Length: %d\r\n\r\n"
        )

    def __call__(self, rid: int) -> bytes:
        body = (self.body % ((rid, rid) if self.progress else rid)).encode()
        return (self.head % len(body)).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bool]:
    """One HTTP/1.1 response: status, headers, body and whether the connection stays open."""
    status, headers = hf.parse_head((await reader.readuntil(b"\r\n\r\n"))[:-4])
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunks.append((await reader.readexactly(size + 2))[:-2])
            if size == 0:
                break
        body = b"".join(chunks)
    else:  # delimited by the end of the connection
        return status, headers, await reader.read(), False
    return status, headers, body, headers.get("connection", "").lower() != "close"


def check(status: int, headers: dict[str, str], body: bytes, rid: int, progress: bool) -> tuple[str, str | None]:
    """What answered (``json``/``sse``) and why the answer is wrong (None: it is right)."""
    if status != 200:
        return "-", f"HTTP {status}: {body[:120]!r}"
    content_type = headers.get("content-type", "")
    if content_type.startswith("application/json"):
        answered, data, events = "json", body, 1
    elif content_type.startswith("text/event-stream"):
        answered = "sse"
        lines = [
            [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
            for event in body.replace(b"\r\n", b"\n").split(b"\n\n")
        ]
        datas = [b"\n".join(event) for event in lines if event and any(event)]
        if not datas:
            return answered, "SSE without data"
        data, events = datas[-1], len(datas)
    else:
        return "-", f"content-type {content_type!r}"
    try:
        message = json.loads(data)
    except ValueError:
        return answered, f"not JSON: {data[:120]!r}"
    if message.get("id") != rid:
        return answered, "id mismatch"
    result = message.get("result")
    if not isinstance(result, dict):
        return answered, f"error {message.get('error', {}).get('code')}: {message.get('error', {}).get('message')}"
    if result.get("content") != CONTENT:
        return answered, f"content {result.get('content')!r}"
    if result.get("resultType") != "complete":
        return answered, f"resultType {result.get('resultType')!r}"
    if progress and events < 2:
        return answered, "no progress event"
    return answered, None


class Load:
    """What the connections of one phase share: requests left, ids, results."""

    def __init__(self, requests: int) -> None:
        self.left = requests
        self.next_id = 1
        self.latencies: list[float] = []
        self.answered: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()


async def connection(port: int, make: Requests, load: Load) -> None:
    """One keep-alive connection: request, answer, next request, until the phase has none left."""
    conn = None
    try:
        while load.left > 0:
            load.left -= 1
            rid, load.next_id = load.next_id, load.next_id + 1
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = conn
            started = time.perf_counter()
            try:
                writer.write(make(rid))
                status, headers, body, keep = await read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                load.failures[f"connection: {type(exc).__name__}"] += 1
                writer.close()
                conn = None
                continue
            load.latencies.append(time.perf_counter() - started)
            answered, failure = check(status, headers, body, rid, make.progress)
            load.answered[answered] += 1
            if failure is not None:
                load.failures[failure] += 1
            if not keep:
                writer.close()
                conn = None
    finally:
        if conn is not None:
            conn[1].close()


async def phase(port: int, make: Requests, connections: int, requests: int, timeout: float) -> tuple[Load, float]:
    """*requests* round trips over *connections* connections, bounded by *timeout*; the load and the seconds."""
    load = Load(requests)
    started = time.perf_counter()
    tasks = [asyncio.ensure_future(connection(port, make, load)) for _ in range(connections)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    elapsed = time.perf_counter() - started
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            load.failures[f"generator: {task.exception()!r}"] += 1
    unanswered = requests - len(load.latencies) - sum(n for r, n in load.failures.items() if r.startswith("connection"))
    if unanswered:
        load.failures["unanswered (timeout)"] += unanswered
    return load, elapsed


async def measure(port: int, pid: int, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    make = Requests(port, kind)
    warm, _ = await phase(port, make, args.connections, args.warmup, args.timeout)
    if warm.failures:
        return {"failures": sum(warm.failures.values()), "reasons": warm.failures, "warm-up": True}
    (server_ran, server_waited), own_cpu = hf.cpu_seconds(pid), time.process_time()
    load, elapsed = await phase(port, make, args.connections, args.requests, args.timeout)
    ran, waited = hf.cpu_seconds(pid)
    latencies = sorted(load.latencies)

    def ms(quantile: float) -> float:
        return latencies[min(len(latencies) - 1, int(quantile * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "per_s": len(latencies) / elapsed,
        "p50": ms(0.50),
        "p99": ms(0.99),
        "failures": sum(load.failures.values()),
        "reasons": load.failures,
        "answered": "/".join(f"{n} {what}" for what, n in sorted(load.answered.items())),
        "srv_us": (ran - server_ran) / max(1, len(latencies)) * 1e6,
        "srv_cpu": (ran - server_ran) / elapsed,
        "srv_wait": (waited - server_waited) / elapsed,
        "gen_cpu": (time.process_time() - own_cpu) / elapsed,
    }


def bench(name: str, kind: str, server_cpu: int | None, args: argparse.Namespace) -> dict[str, Any]:
    proc, port = start_server(name, kind, server_cpu, args.sdk_api)
    try:
        return asyncio.run(measure(port, proc.pid, kind, args))
    finally:
        hf.stop(proc)


# -- the report --------------------------------------------------------------------------

COLUMNS = (
    "server  kind      run     round trips/s  p50 ms  p99 ms  failures  srv us/rt  srv CPU  srv wait  gen CPU  answered"
)


def row(name: str, kind: str, label: str, r: dict[str, Any]) -> str:
    if r.get("warm-up"):
        return f"{name:<6}  {kind:<8}  {label:<6}  failed in the warm-up: {dict(r['reasons'])}"
    return (
        f"{name:<6}  {kind:<8}  {label:<6}  {r['per_s']:>13,.0f}  {r['p50']:>6.2f}  {r['p99']:>6.2f}  "
        f"{r['failures']:>8}  {r['srv_us']:>9.0f}  {r['srv_cpu']:>7.0%}  {r['srv_wait']:>8.0%}  {r['gen_cpu']:>7.0%}  "
        f"{r.get('answered', '')}"
    )


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The best run (most round trips/s) and the per-column medians (failures: the total)."""
    runs = [r for r in runs if not r.get("warm-up")]
    if not runs:
        return {}
    numeric = ("per_s", "p50", "p99", "srv_us", "srv_cpu", "srv_wait", "gen_cpu")
    median = {key: statistics.median(r[key] for r in runs) for key in numeric}
    median["failures"] = sum(r["failures"] for r in runs)
    return {"best": max(runs, key=lambda r: r["per_s"]), "median": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=32, help="C concurrent keep-alive connections")
    parser.add_argument("--requests", type=int, default=5000, help="R requests per run, measured")
    parser.add_argument("--warmup", type=int, default=500, help="requests before each measured run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per server and kind (fresh processes)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=["json", "sse"], help="answer kinds")
    parser.add_argument("--server", choices=("ours", "sdk", "both"), default="both")
    parser.add_argument(
        "--sdk-api",
        choices=("lowlevel", "mcpserver"),
        default="lowlevel",
        help="the SDK server: lowlevel Server handlers, or MCPServer (ex-FastMCP) with an @tool function",
    )
    parser.add_argument("--floor", action="store_true", help="also run 'floor': a bare WSGI app on the same server")
    parser.add_argument(
        "--wsgi-server",
        choices=("session_manager", "gevent"),
        default="session_manager",
        help="ours and floor on session_manager.pywsgi (the library's) or on gevent.pywsgi",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds at most per run (and per warm-up)")
    parser.add_argument("--serve", nargs=2, metavar=("SERVER", "KIND"), help=argparse.SUPPRESS)  # child process
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    WSGI_SERVER[0] = args.wsgi_server
    if args.serve:
        name, kind = args.serve
        if name == "sdk":
            serve_sdk(args.cpu, kind, args.sdk_api)
        else:
            (serve_floor if name == "floor" else serve_ours)(args.cpu, kind)
        return

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[-1] if cpus else None
    hf.prepare_process(cpus[0] if len(cpus) > 1 else None)  # the generator on the other core
    print(
        f"server on CPU {server_cpu}, load generator on CPU {cpus[0] if len(cpus) > 1 else '(same)'}; "
        f"tools/call at {PROTOCOL}, C={args.connections} connections, R={args.requests} requests per run "
        f"(after {args.warmup}); load average before: {os.getloadavg()[0]:.2f}"
    )
    versions = ", ".join(f"{package} {metadata.version(package)}" for package in ("gevent", "mcp", "uvicorn"))
    http = "httptools" if util.find_spec("httptools") else "h11"
    loop = "uvloop" if util.find_spec("uvloop") else "asyncio"
    print(f"{versions}; ours on {args.wsgi_server}.pywsgi; SDK server: {args.sdk_api}, uvicorn with {http} and {loop}")
    names = (("ours", "sdk") if args.server == "both" else (args.server,)) + (("floor",) if args.floor else ())
    results: dict[tuple[str, str], list[dict[str, Any]]] = {(n, k): [] for k in args.kinds for n in names}
    print(COLUMNS)
    for run in range(1, args.repeat + 1):  # servers alternate, so noise hits both alike
        for kind in args.kinds:
            for name in names:
                result = bench(name, kind, server_cpu, args)
                results[name, kind].append(result)
                print(row(name, kind, f"#{run}", result), flush=True)
    failures: Counter[str] = Counter()
    for (name, kind), runs in results.items():
        for r in runs:
            failures.update({f"{name} {kind}: {reason}": n for reason, n in r["reasons"].items()})
    summary = {key: summarize(runs) for key, runs in results.items()}
    for label in ("best", "median") if args.repeat > 1 else ("best",):
        for (name, kind), s in summary.items():
            if s:
                print(row(name, kind, label, s[label]))
    for kind in args.kinds:
        ours, sdk = summary.get(("ours", kind)), summary.get(("sdk", kind))
        if ours and sdk:
            print(
                f"ratio ours/sdk, {kind}: round trips/s x{ours['best']['per_s'] / sdk['best']['per_s']:.2f} best, "
                f"x{ours['median']['per_s'] / sdk['median']['per_s']:.2f} median; "
                f"round trips per server CPU second x{sdk['median']['srv_us'] / ours['median']['srv_us']:.2f}, "
                f"p99 x{ours['median']['p99'] / sdk['median']['p99']:.2f} (medians)"
            )
    for reason, n in failures.most_common():
        print(f"failures: {n} x {reason}")
    print(f"target (issue 11): {TARGET}; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
