"""Listen-stream fan-out (issue 12, "Speed"): MCP 2026-07-28 ``subscriptions/listen``, ours against tmcp.

Three parts, each selectable (``--part inproc http redis``; all by default),
bounded in count and time, each checking that every stream got exactly what
it should (the failures are counted and printed):

1. ``inproc``: N = 10,000 listen streams in one process, no HTTP. Each asks
   for ``toolsListChanged`` and watches its own URI (``res://<i>``). A round
   is one ``tools_list_changed`` to all (phase A: N deliveries), then
   ``resource_updated`` of U = 100 URIs spread over the streams (phase B: 1%
   of the streams, one delivery each); M rounds per run, ``--repeat`` runs.
   Prints deliveries/s of each phase (best of the runs, median in brackets).

   - ours: a ``StreamController`` per stream (primed with its
     ``acknowledged_message``, as ``McpApp`` does), registered in an
     ``InMemorySubscriptionManager``, its generator started and drained as
     fanout.py's sync mode does (one thread pulls every generator while its
     queue holds frames). Phase B drains only the streams watching an updated
     URI: in a server only those consumers wake.
   - tmcp: ``@tmcp/session-manager`` 0.3.0's ``InMemorySubscriptionManager``
     in Node (benchmarks/tmcp/inproc.mjs), each subscription its own origin
     (as its HTTP transport makes them); the ``send`` callback appends the
     notification to the stream's array (``push``: the manager alone, the
     figure the goal is measured against), and in a second run first tags and
     SSE-frames it as tmcp's server and transport do per delivery (``frame``,
     which is what ours does per delivery).

   Goal: ours >= 3x tmcp (``push``) in both phases. Also printed: ``ours
   sends``, the time of our manager's calls alone (the drain not counted:
   the managers compared without a consumer on either side), and ours / tmcp
   ``frame``. "CPU" and "wait": the shares of the wall time the process ran,
   and waited while another process had its core (noise from neighbours);
   "per CPU-s": the same deliveries over the process's CPU time instead of
   the wall time (``time.process_time``, Node's ``process.cpuUsage``), which
   leaves the neighbours' share out.

2. ``http``: one server process, N = 1,000 listen streams over HTTP, each a
   stateless POST ``subscriptions/listen`` (``_meta`` with protocol
   2026-07-28 and ``clientCapabilities {}``, headers ``MCP-Protocol-Version``
   and ``Mcp-Method``) on its own connection, kept open; opened 50 at a time,
   each counted once its acknowledgement arrived. Then POST
   ``/bench/notify?k=K`` makes the server send K ``tools/list_changed``
   (ours: ``McpApp.tools_list_changed()`` K times; tmcp: ``server.changed('tools')``
   K times). Delivered/s = N*K / (trigger to last receipt); a list_changed
   carries no send time, so the latency is per stream, trigger to its K-th
   notification (p50/p99). Memory per listen stream = server VmRSS delta over
   the N streams / N (after 20 warm-up streams were opened and closed; a full
   GC in the server before each reading). Every stream must get its
   acknowledgement, then exactly K list_changed, all tagged with its own
   listen id.

   - ours: ``McpApp`` (in-memory managers, no event store) on
     ``gevent.pywsgi`` (``log=None``, after ``monkey.patch_all()``), as
     http_fanout.py's ``ours``; a WSGI wrapper adds the two ``/bench`` routes.
   - tmcp: ``tmcp`` 1.20 ``McpServer`` + ``@tmcp/transport-http`` 0.9 (its
     in-memory managers) on ``srvx`` 1.0 (benchmarks/tmcp/serve.mjs), Node
     run with ``--expose-gc``.

   The server is pinned to one core, this load generator (http_fanout.py's
   asyncio protocol streams, hand-written HTTP/1.1) to the other; "srv CPU",
   "srv wait" and "gen CPU" as in http_fanout.py; "per CPU-s": delivered
   notifications per second of the server's CPU time in the window (every
   thread; in part 3 the workers' and redis-server's), which the neighbours'
   share of the core leaves out. Goal: ours >= 3x tmcp's delivered/s and
   <= 0.5x its memory per stream.

3. ``redis`` (ours only): a private redis-server (or ``--redis URL``) and
   W = 3 gevent.pywsgi workers on their own ports, each ``McpApp`` with a
   ``RedisSubscriptionManager`` (sessions' managers in memory: a listen stream
   needs none); N = 1,000 listen streams spread evenly over them. A sender
   process (started and connected beforehand, like examples/notify.py a
   ``RedisSubscriptionManager`` that only publishes) calls
   ``tools_list_changed()`` K times on "go": K PUBLISH, each fanned out by
   every worker. Delivered/s as in part 2, alternated with runs of part 2's
   in-memory server (same N, K); goal: redis >= 0.7x in memory. Workers and
   redis-server on the server core, generator and sender on the other.

The tmcp packages are pinned in benchmarks/tmcp/package-lock.json and
installed there with ``npm ci`` on first use; Node is the repository's
(.cache/node, installed by scripts/test.sh) when present, else ``node``.

    python benchmarks/listen_fanout.py [--part inproc http redis] [--repeat 3]
        [--streams 10000] [--rounds 20] [--uris 100]                 # part 1
        [--http-streams 1000] [--notifications 100] [--server ours|tmcp|both]   # parts 2, 3
        [--workers 3] [--redis URL] [--no-pin]
"""

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    from gevent import monkey  # a server process of ours: patch before anything else

    monkey.patch_all()

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import select
import shutil
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

import http_fanout as hf
from fanout import best_and_median
from redis_fanout import spread

TMCP = os.path.join(ROOT, "benchmarks", "tmcp")
NODE_CACHE = os.path.join(ROOT, ".cache", "node", "node_modules", ".bin", "node")
PROTOCOL = "2026-07-28"
META = "io.modelcontextprotocol/subscriptionId"
#: Every tagged message of a listen stream: its method (after ``notifications/``) and subscription id.
TAGGED = re.compile(rb'\ndata: ?[^\n]*?"method":\s*"notifications/([a-z/_]+)"[^\n]*?"' + META.encode() + rb'":\s*(\d+)')
GOALS = {"inproc": 3.0, "http_rate": 3.0, "http_memory": 0.5, "redis": 0.7}


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


# -- Node and the tmcp packages ----------------------------------------------------------


def node_binary() -> str:
    """The repository's Node 22 (scripts/test.sh installs it) if there, else ``node`` from the PATH."""
    if os.access(NODE_CACHE, os.X_OK):
        return NODE_CACHE
    found = shutil.which("node")
    if found is None:
        sys.exit("node not found: run scripts/test.sh (it installs Node 22 into .cache/node) or install Node 20+")
    return found


def ensure_tmcp() -> None:
    """``npm ci`` in benchmarks/tmcp unless its node_modules match package-lock.json."""
    lock = os.path.join(TMCP, "package-lock.json")
    stamp = os.path.join(TMCP, "node_modules", ".installed-lock")
    with contextlib.suppress(OSError), open(lock, "rb") as a, open(stamp, "rb") as b:
        if a.read() == b.read():
            return
    print("installing the tmcp packages (benchmarks/tmcp/package-lock.json)", flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel", "error"], cwd=TMCP, check=True)
    shutil.copyfile(lock, stamp)


def on_cpu(cpu: int | None, cmd: list[str]) -> list[str]:
    """*cmd* run on *cpu* by ``taskset`` (every thread Node starts, unlike a sched_setaffinity afterwards)."""
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


# -- part 1: in process ------------------------------------------------------------------


def inproc_ours(n: int, m: int, uris: int, repeat: int) -> dict[str, Any]:
    """Our InMemorySubscriptionManager, N primed controllers drained like fanout.py's sync mode."""
    from session_manager import InMemorySubscriptionManager, ListenFilter, StreamController
    from session_manager.sse import encode_message
    from session_manager.subscriptions import acknowledged_message

    manager = InMemorySubscriptionManager()
    streams = []  # (generator, its queue, what it yielded)
    failed = 0
    for i in range(n):
        wanted = ListenFilter(tools_list_changed=True, resource_subscriptions=frozenset({f"res://{i}"}))
        controller = StreamController()
        controller.prime([encode_message(acknowledged_message(i, wanted))])  # as McpApp._listen does
        manager.create(i, wanted, controller)
        generator = iter(controller)
        ack = parse_frames(next(generator))  # started, then suspended as an idle stream is
        failed += ack != [("notifications/subscriptions/acknowledged", None, i)]
        streams.append((generator, controller._queue, []))
    step = max(1, n // uris)
    watched = [i * step for i in range(uris)]
    updated = [f"res://{i}" for i in watched]
    watched_streams = [streams[i] for i in watched]
    watched_set = set(watched)

    def drain(which: list[tuple[Any, Any, list[bytes]]]) -> None:
        for generator, queue, sink in which:
            while queue.qsize():
                sink.append(next(generator))

    def check(want: Callable[[int], list[tuple[str, str | None, int]]]) -> int:
        """Streams that did not get exactly ``want(i)``; empties every sink."""
        bad = 0
        for i, (_, _, sink) in enumerate(streams):
            bad += parse_frames(b"".join(sink)) != want(i)
            sink.clear()
        return bad

    def list_changed(i: int) -> list[tuple[str, str | None, int]]:
        return [("notifications/tools/list_changed", None, i)]

    def resource_updated(i: int) -> list[tuple[str, str | None, int]]:
        return [("notifications/resources/updated", f"res://{i}", i)] if i in watched_set else []

    runs = []
    wall, (ran, waited) = time.perf_counter(), hf.cpu_seconds(os.getpid())
    for _ in range(repeat):
        spent = {key: [0.0, 0.0] for key in ("list", "list_sends", "updated", "updated_sends")}  # [wall s, CPU s]

        def add(key: str, since: tuple[float, float], until: tuple[float, float], spent: dict = spent) -> None:
            spent[key][0] += until[0] - since[0]
            spent[key][1] += until[1] - since[1]

        for _ in range(m):
            t0 = clock()
            manager.tools_list_changed()
            sent = clock()
            drain(streams)
            t1 = clock()
            failed += check(list_changed)
            add("list", t0, t1)
            add("list_sends", t0, sent)
            t0 = clock()
            for uri in updated:
                manager.resource_updated(uri)
            sent = clock()
            drain(watched_streams)
            t1 = clock()
            failed += check(resource_updated)
            add("updated", t0, t1)
            add("updated_sends", t0, sent)
        runs.append({
            **rates(n * m, *spent["list"], "list_changed"),
            **rates(uris * m, *spent["updated"], "updated"),
            "sends": {**rates(n * m, *spent["list_sends"], "list_changed"), **rates(uris * m, *spent["updated_sends"], "updated")},
        })
    wall, (ran, waited) = time.perf_counter() - wall, (b - a for a, b in zip((ran, waited), hf.cpu_seconds(os.getpid())))
    manager.close()
    result = {"runs": runs, "failures": failed, "cpu": ran / wall, "wait": waited / wall}
    return result, dict(result, runs=[r["sends"] for r in runs])


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds: the CPU time leaves out what neighbours took of the core."""
    return time.perf_counter(), time.process_time()


def rates(deliveries: int, wall_s: float, cpu_s: float, name: str) -> dict[str, float]:
    return {f"{name}_per_s": deliveries / wall_s, f"{name}_per_cpu_s": deliveries / cpu_s if cpu_s > 0 else float("nan")}


def parse_frames(data: bytes) -> list[tuple[str, str | None, int]]:
    """(method, uri, subscription id) of every SSE data line in *data*."""
    found = []
    for line in data.split(b"\n"):
        if line.startswith(b"data: "):
            message = json.loads(line[6:])
            params = message.get("params", {})
            found.append((message["method"], params.get("uri"), params.get("_meta", {}).get(META)))
    return found


def inproc_tmcp(n: int, m: int, uris: int, repeat: int, send: str, cpu: int | None) -> dict[str, Any]:
    """benchmarks/tmcp/inproc.mjs on *cpu*: its figures (the same shape as ours)."""
    config = json.dumps({"n": n, "m": m, "uris": uris, "repeat": repeat, "send": send})
    out = subprocess.run(
        on_cpu(cpu, [node_binary(), "inproc.mjs", config]), cwd=TMCP, capture_output=True, text=True, check=True,
        timeout=600,
    )
    return json.loads(out.stdout.splitlines()[-1])


def part_inproc(args: argparse.Namespace, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # ours here, tmcp's Node child on the same core
    n, m, uris, repeat = args.streams, args.rounds, args.uris, args.repeat
    print(
        f"\n== part 1, in process: N={n:,} listen streams, M={m} rounds of one tools_list_changed to all "
        f"(phase A) and resource_updated of {uris} URIs, one stream each (phase B); {repeat} runs; "
        f"CPU {cpu}; load average {load_average()} =="
    )
    ensure_tmcp()
    ours, ours_sends = inproc_ours(n, m, uris, repeat)
    results = {
        "ours": ours,
        "ours sends": ours_sends,
        "tmcp push": inproc_tmcp(n, m, uris, repeat, "push", cpu),
        "tmcp frame": inproc_tmcp(n, m, uris, repeat, "frame", cpu),
    }
    print(
        f"(best of {repeat} runs, median in brackets; per CPU-s: deliveries per second of the process's CPU time, "
        f"median; Node {results['tmcp push']['node']})"
    )
    print(
        "consumer      phase A list_changed deliveries/s  per CPU-s   phase B resources/updated deliveries/s  "
        "per CPU-s  failures  CPU  wait"
    )
    medians = {}
    for name, r in results.items():
        best_a, median_a = best_and_median(r["runs"], "list_changed_per_s")
        best_b, median_b = best_and_median(r["runs"], "updated_per_s")
        cpu_a = best_and_median(r["runs"], "list_changed_per_cpu_s")[1]
        cpu_b = best_and_median(r["runs"], "updated_per_cpu_s")[1]
        medians[name] = (median_a, median_b, cpu_a, cpu_b)
        print(
            f"{name:<12}  {best_a['list_changed_per_s']:>13,.0f} [{median_a:>11,.0f}]  {cpu_a:>9,.0f}   "
            f"{best_b['updated_per_s']:>20,.0f} [{median_b:>11,.0f}]  {cpu_b:>9,.0f}  {r['failures']:>8}  "
            f"{r['cpu']:>3.0%}  {r['wait']:>4.0%}"
        )
    goal = GOALS["inproc"]
    for mine, theirs, what in (
        ("ours", "tmcp push", f"the goal (>= {goal:g}x)"),
        ("ours sends", "tmcp push", "managers alone: no consumer on either side"),
        ("ours", "tmcp frame", "both tag and frame every delivery"),
    ):
        a, b, cpu_a, cpu_b = (medians[mine][i] / medians[theirs][i] for i in range(4))
        met = f": A {verdict(a >= goal)}, B {verdict(b >= goal)}" if mine == "ours" and theirs == "tmcp push" else ""
        print(
            f"{mine} / {theirs} (medians): phase A x{a:.2f}, phase B x{b:.1f}; per CPU-s x{cpu_a:.2f}, x{cpu_b:.1f}"
            f"   ({what}{met})"
        )
    print(f"load average after: {load_average()}")


# -- the servers of parts 2 and 3 -------------------------------------------------------------


def serve(cpu: int | None, redis_url: str | None, parking: bool = False) -> None:
    """A server process of ours: McpApp on gevent.pywsgi, with the /bench routes; Redis subscriptions if a URL is given.

    With *parking*, on ``session_manager.pywsgi`` (streams written from the event loop).
    """
    if parking:
        from session_manager.pywsgi import WSGIServer
    else:
        from gevent.pywsgi import WSGIServer

    from session_manager import SessionManagers
    from session_manager.wsgi import METHOD_NOT_FOUND, JsonRpcError, McpApp

    hf.prepare_process(cpu)
    subscriptions = None
    if redis_url is not None:
        from session_manager.redis import RedisSubscriptionManager

        subscriptions = RedisSubscriptionManager(redis_url)

    def handler(message: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
        method = message.get("method")
        if method == "tools/list":
            return {"tools": []}
        if method == "initialize":  # sessions too (stream_scale.py): McpApp fills in the result
            return {}
        if "id" in message and method:
            raise JsonRpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        return None

    mcp = McpApp(
        handler,
        managers=SessionManagers(subscriptions=subscriptions),
        server_info={"name": "listen-bench-ours", "version": "1"},
        capabilities={"tools": {"listChanged": True}, "resources": {"subscribe": True, "listChanged": True}},
        max_sessions=None,  # stream_scale.py holds up to 50,000 sessions (the default cap is 10,000)
    )

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/bench/notify":
            k = int(parse_qs(environ.get("QUERY_STRING", ""))["k"][0])
            for _ in range(k):
                mcp.tools_list_changed()
            body = json.dumps({"sent": k}).encode()
        elif path == "/bench/gc":
            gc.collect()
            body = b'{"gc": true}'
        else:
            return mcp(environ, start_response)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    WSGIServer(hf.listen(), app, log=None).serve_forever()  # hf.listen() prints the port


def publish(url: str, k: int) -> None:
    """The sender process of part 3: connect, say "ready"; on "go", K tools_list_changed (K PUBLISH); print the seconds."""
    from session_manager.redis import RedisSubscriptionManager

    with RedisSubscriptionManager(url) as manager:
        manager.prompts_list_changed()  # nobody listens for prompts: the pool's connection is open before "go"
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.perf_counter()
        for _ in range(k):
            manager.tools_list_changed()
        print(time.perf_counter() - started, flush=True)


def start_process(cmd: list[str], cwd: str) -> tuple["subprocess.Popen[str]", int]:
    """A server printing "PORT <n>" once listening; returns it and its port."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=cwd)
    if not select.select([proc.stdout], [], [], 60)[0]:
        hf.stop(proc)
        raise RuntimeError(f"{cmd} did not start within 60 s")
    line = proc.stdout.readline().split()  # type: ignore[union-attr]
    if len(line) != 2 or line[0] != "PORT":
        hf.stop(proc)
        raise RuntimeError(f"{cmd} failed to start: {line}")
    return proc, int(line[1])


def start_ours(
    cpu: int | None, redis_url: str | None = None, parking: bool = False
) -> tuple["subprocess.Popen[str]", int]:
    cmd = [sys.executable, os.path.abspath(__file__), "--serve"] + ([] if cpu is None else ["--cpu", str(cpu)])
    cmd += ["--parking"] if parking else []
    return start_process(cmd + ([] if redis_url is None else ["--redis-url", redis_url]), ROOT)


def start_parked(cpu: int | None) -> tuple["subprocess.Popen[str]", int]:
    """Ours on ``session_manager.pywsgi``: the server "parked" of the tables."""
    return start_ours(cpu, parking=True)


def start_tmcp(cpu: int | None) -> tuple["subprocess.Popen[str]", int]:
    return start_process(on_cpu(cpu, [node_binary(), "--expose-gc", "serve.mjs"]), TMCP)


#: The servers a table can compare, by name (``--server``; "both" is ours and tmcp, "all" all three).
STARTERS: dict[str, Callable[[int | None], tuple["subprocess.Popen[str]", int]]] = {
    "ours": start_ours,
    "parked": start_parked,
    "tmcp": start_tmcp,
}
SERVER_CHOICES = (*STARTERS, "both", "all")


def server_kinds(choice: str) -> list[str]:
    """The servers a ``--server`` choice runs, in the order they alternate."""
    return {"both": ["ours", "tmcp"], "all": list(STARTERS)}.get(choice, [choice])


# -- the load generator ---------------------------------------------------------------------


class ListenStream(hf.Stream):
    """One listen stream (http_fanout's de-chunking): its tagged messages as (method tail, subscription id)."""

    def __init__(self, run: "hf.Run", sid: int) -> None:
        super().__init__(run)
        self.sid = sid
        self.acked = asyncio.get_running_loop().create_future()  # its first message arrived
        self.seen: list[tuple[bytes, bytes]] = []

    def events(self, data: bytes, now: float) -> None:
        sse = self.sse + data
        if b"\r" in sse:
            sse = sse.replace(b"\r\n", b"\n")
        end = sse.rfind(b"\n\n") + 2
        if end < 2:
            self.sse = sse
            return
        events, self.sse = b"\n" + sse[:end], sse[end:]
        found = TAGGED.findall(events)
        self.malformed += events.count(b"\ndata:") - len(found)
        if not found:
            return
        seen = self.seen
        seen += found
        if not self.acked.done():
            self.acked.set_result(None)
        before = self.count
        self.count = len(seen) - 1  # notifications after the acknowledgement
        self.run.counted(self, before, now)

    def check(self, latencies: list[float]) -> bool:  # type: ignore[override]
        """True if it got its acknowledgement, then exactly K list_changed, all with its own id."""
        sid = str(self.sid).encode()
        expected = [(b"subscriptions/acknowledged", sid)] + [(b"tools/list_changed", sid)] * self.run.k
        return not self.malformed and self.seen == expected


def listen_request(port: int, sid: int) -> bytes:
    """A stateless ``subscriptions/listen`` for toolsListChanged, with its id *sid*."""
    body = json.dumps({
        "jsonrpc": "2.0",
        "id": sid,
        "method": "subscriptions/listen",
        "params": {
            "notifications": {"toolsListChanged": True},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": PROTOCOL,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }).encode()
    head = [
        "POST /mcp HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
        f"Content-Length: {len(body)}",
        f"MCP-Protocol-Version: {PROTOCOL}",
        "Mcp-Method: subscriptions/listen",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def open_listen(port: int, run: "hf.Run", sid: int) -> ListenStream:
    _, stream = await asyncio.get_running_loop().create_connection(lambda: ListenStream(run, sid), "127.0.0.1", port)
    stream.transport.write(listen_request(port, sid))  # type: ignore[union-attr]
    status, headers = await stream.head
    if status != 200 or "text/event-stream" not in headers.get("content-type", ""):
        raise RuntimeError(f"subscriptions/listen: {status} {headers}")
    await stream.acked  # registered: its acknowledgement is out
    return stream


async def open_listens(ports: Sequence[int], n: int, run: "hf.Run", first_id: int) -> list[ListenStream]:
    """*n* listen streams spread evenly over *ports*, hf.CONCURRENCY at a time, each step bounded."""
    limit = asyncio.Semaphore(hf.CONCURRENCY)
    targets = [port for port, count in zip(ports, spread(n, len(ports))) for _ in range(count)]

    async def one(port: int, sid: int) -> ListenStream:
        async with limit:
            return await asyncio.wait_for(open_listen(port, run, sid), hf.STEP_TIMEOUT)

    return await asyncio.gather(*(one(port, first_id + i) for i, port in enumerate(targets)))


def close_all(streams: list[ListenStream]) -> None:
    for stream in streams:
        stream.transport.close()  # type: ignore[union-attr]


async def measure(
    ports: Sequence[int],
    pids: Sequence[int],
    n: int,
    k: int,
    flush: Callable[[], Awaitable[None]],
    trigger: Callable[[], Awaitable[float]],
    gc_port: int | None = None,
    also_cpu: Sequence[int] = (),
) -> dict[str, Any]:
    """Warm-up, N listen streams, the K notifications *trigger* starts; the figures.

    *flush* sends a couple of notifications after the warm-up streams were
    closed (ours notices a client gone when it writes to it); *trigger*
    returns once the notifications are sent (its value: how long the sending
    took, in ms, or NaN). *gc_port*: a single server, measured for memory.
    *also_cpu*: more server-side processes (redis-server) counted in "srv CPU".
    """
    warm = hf.Run(k)
    close_all(await open_listens(ports, hf.WARMUP_SESSIONS, warm, 10_000_000))
    await asyncio.sleep(0.2)
    await flush()
    await asyncio.sleep(0.5)
    if gc_port is not None:
        await hf.post_once(gc_port, hf.http_request("POST", "/bench/gc", gc_port))
    rss_before = [hf.rss_kb(pid) for pid in pids]

    run = hf.Run(k)
    run.expected = n
    started = time.time()
    streams = await open_listens(ports, n, run, 1)
    setup_s = time.time() - started
    try:
        await asyncio.sleep(1.0)  # all N streams open and idle
        if gc_port is not None:
            await hf.post_once(gc_port, hf.http_request("POST", "/bench/gc", gc_port))
        rss_after = [hf.rss_kb(pid) for pid in pids]
        times, cpu, send_ms, trigger_failed = await delivery_window(run, [*pids, *also_cpu], n, k, lambda _: trigger())
    finally:
        close_all(streams)

    failures = sum(not stream.check([]) for stream in streams)
    return figures(
        streams, k, times, cpu,
        kb=(sum(rss_after) - sum(rss_before)) / n, failures=failures + trigger_failed, setup_s=setup_s, send_ms=send_ms,
    )


async def delivery_window(
    run: "hf.Run", server_pids: Sequence[int], n: int, k: int, trigger: Callable[[float], Awaitable[float]]
) -> tuple[tuple[float, float, float], tuple[float, float, float], float, int]:
    """Start the K notifications (``trigger(timeout)``) and wait for every stream to have them, bounded.

    Returns what :func:`figures` takes (times, CPU of *server_pids* and of this process), then how
    long the sending took (ms, NaN if the trigger failed) and 1 if it failed. The generator's GC is
    kept off the setup objects during the window.
    """
    gc.collect()
    gc.freeze()
    try:
        server_ran, server_waited = map(sum, zip(*(hf.cpu_seconds(pid) for pid in server_pids)))
        own_cpu = time.process_time()
        timeout = hf.STEP_TIMEOUT + n * k / 2000  # generous: even 2,000/s finishes
        triggered = time.time()
        sending = asyncio.ensure_future(trigger(timeout))
        with contextlib.suppress(asyncio.TimeoutError):  # missing deliveries are reported as failures
            await asyncio.wait_for(asyncio.shield(run.all_done), timeout)
        done = time.time()
        ran, waited = map(sum, zip(*(hf.cpu_seconds(pid) for pid in server_pids)))
        cpu = (ran - server_ran, waited - server_waited, time.process_time() - own_cpu)
        try:
            send_ms, trigger_failed = await asyncio.wait_for(sending, timeout), 0
        except Exception:  # noqa: BLE001 - counted as a failure
            send_ms, trigger_failed = float("nan"), 1
        await asyncio.sleep(0.3)  # anything beyond K per stream would show up as a failure
    finally:
        gc.unfreeze()
    return (triggered, run.last_receipt, done), cpu, send_ms, trigger_failed


def figures(
    streams: Sequence[Any], k: int, times: tuple[float, float, float], cpu: tuple[float, float, float], **extra: float
) -> dict[str, Any]:
    """A run's row: *streams* (each with ``count`` and ``finished_at``) got up to *k* notifications each.

    *times*: the trigger, the last receipt, the end of the window; *cpu*: the server's CPU seconds ran
    and waited in it, and this process's; *extra*: kb, failures, setup_s, send_ms.
    """
    triggered, last_receipt, done = times
    server_ran, server_waited, own_cpu = cpu
    window = max(last_receipt, triggered) - triggered
    latencies = sorted(s.finished_at - triggered for s in streams if s.finished_at)

    def ms(quantile: float) -> float:
        return latencies[min(len(latencies) - 1, int(quantile * len(latencies)))] * 1000 if latencies else float("nan")

    delivered = sum(min(s.count, k) for s in streams)
    return {
        "streams": len(streams),
        "delivered": delivered,
        "per_s": delivered / window if window > 0 else 0.0,
        "per_cpu_s": delivered / server_ran if server_ran > 0 else float("nan"),
        "p50": ms(0.50),
        "p99": ms(0.99),
        "srv_cpu": server_ran / (done - triggered),
        "srv_wait": server_waited / (done - triggered),
        "gen_cpu": own_cpu / (done - triggered),
        **extra,
    }


async def notify(port: int, k: int, timeout: float = hf.STEP_TIMEOUT) -> float:
    """POST /bench/notify?k=K; the ms until it was answered (the server has sent, or queued, all K)."""
    started = time.perf_counter()
    status = await hf.post_once(port, hf.http_request("POST", f"/bench/notify?k={k}", port), timeout)
    if status != 200:
        raise RuntimeError(f"/bench/notify: {status}")
    return (time.perf_counter() - started) * 1000


def bench_http(kind: str, cpu: int | None, n: int, k: int) -> dict[str, Any]:
    """One run of part 2 on a fresh server process (ours or tmcp)."""
    proc, port = STARTERS[kind](cpu)
    try:
        return asyncio.run(
            measure([port], [proc.pid], n, k, lambda: notify(port, 2), lambda: notify(port, k, hf.STEP_TIMEOUT + n * k / 2000), port)
        )
    finally:
        hf.stop(proc)


COLUMNS = (
    "server      run     streams  delivered/s  per CPU-s  p50 ms  p99 ms  KB/stream  failures  srv CPU  srv wait  gen CPU  "
    "setup s  send ms"
)


def row(name: str, label: str, r: dict[str, Any]) -> str:
    return (
        f"{name:<10}  {label:<6}  {r['streams']:>7}  {r['per_s']:>11,.0f}  {r['per_cpu_s']:>9,.0f}  {r['p50']:>6.1f}  "
        f"{r['p99']:>6.1f}  "
        f"{r['kb']:>9.1f}  {r['failures']:>8}  {r['srv_cpu']:>7.0%}  {r['srv_wait']:>8.0%}  {r['gen_cpu']:>7.0%}  "
        f"{r['setup_s']:>7.1f}  {r['send_ms']:>7.1f}"
    )


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-column median of several runs (failures: the total)."""
    summary = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    summary.update(failures=sum(r["failures"] for r in runs), streams=runs[0]["streams"])
    return summary


def part_http(args: argparse.Namespace, server_cpu: int | None, generator_cpu: int | None) -> dict[str, Any]:
    hf.prepare_process(generator_cpu)
    n, k = args.http_streams, args.notifications
    kinds = server_kinds(args.server)
    if "tmcp" in kinds:
        ensure_tmcp()
    print(
        f"\n== part 2, over HTTP: N={n:,} listen streams on one server process, K={k} tools/list_changed each; "
        f"server on CPU {server_cpu}, generator on CPU {generator_cpu}; load average {load_average()} =="
    )
    print(COLUMNS)
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for run in range(1, args.repeat + 1):  # servers alternate, so noise hits both alike
        for kind in kinds:
            results[kind].append(bench_http(kind, server_cpu, n, k))
            print(row(kind, f"#{run}", results[kind][-1]), flush=True)
    summary = {kind: median(runs) for kind, runs in results.items()}
    if args.repeat > 1:
        for kind, r in summary.items():
            print(row(kind, "median", r))
    for mine in [kind for kind in summary if kind != "tmcp"] if "tmcp" in summary else []:
        ours, tmcp = summary[mine], summary["tmcp"]
        rate, memory = ours["per_s"] / tmcp["per_s"], ours["kb"] / tmcp["kb"]
        print(
            f"{mine} / tmcp{' (medians)' if args.repeat > 1 else ''}: delivered/s x{rate:.2f} "
            f"(goal >= {GOALS['http_rate']:g}x: {verdict(rate >= GOALS['http_rate'])}), "
            f"KB/stream x{memory:.2f} (goal <= {GOALS['http_memory']:g}x: {verdict(memory <= GOALS['http_memory'])}), "
            f"p99 x{ours['p99'] / tmcp['p99']:.2f}; delivered per server CPU-s x{ours['per_cpu_s'] / tmcp['per_cpu_s']:.2f}"
        )
    print(f"load average after: {load_average()}")
    return summary


# -- part 3: Redis ------------------------------------------------------------------------------


def start_sender(url: str, k: int) -> "subprocess.Popen[str]":
    """This script in sender mode, on the generator's core (it is not part of the server side)."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--publish", url, str(k)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    if proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
        hf.stop(proc)
        raise RuntimeError("the sender process failed to start")
    return proc


def bench_redis(url: str, cpu: int | None, workers: int, n: int, k: int, redis_pid: int | None) -> dict[str, Any]:
    """One run of part 3: W fresh workers, a fresh sender; the figures (KB/stream over all workers)."""
    from session_manager.redis import RedisSubscriptionManager

    procs: list[subprocess.Popen[str]] = []
    sender = None
    try:
        ports = []
        for _ in range(workers):
            proc, port = start_ours(cpu, url)
            procs.append(proc)
            ports.append(port)
        sender = start_sender(url, k)
        flusher = RedisSubscriptionManager(url)  # publishes only (no listener in this process)

        async def flush() -> None:
            for _ in range(2):
                flusher.tools_list_changed()

        async def trigger() -> float:
            sender.stdin.write("go\n")  # type: ignore[union-attr]
            sender.stdin.flush()  # type: ignore[union-attr]
            line = await asyncio.get_running_loop().run_in_executor(None, sender.stdout.readline)  # type: ignore[union-attr]
            return float(line) * 1000

        try:
            also = () if redis_pid is None else (redis_pid,)
            return asyncio.run(measure(ports, [p.pid for p in procs], n, k, flush, trigger, also_cpu=also))
        finally:
            flusher.close()
    finally:
        if sender is not None:
            hf.stop(sender)
        for proc in procs:
            hf.stop(proc)


def part_redis(
    args: argparse.Namespace, server_cpu: int | None, generator_cpu: int | None, http: dict[str, Any] | None
) -> None:
    from tests.redis_server import url_or_private

    hf.prepare_process(generator_cpu)
    n, k = args.http_streams, args.notifications
    with url_or_private(args.redis) as (url, server):
        if server is not None and server_cpu is not None:
            os.sched_setaffinity(server.process.pid, {server_cpu})  # Redis is part of the server side
        print(
            f"\n== part 3, Redis: N={n:,} listen streams over {args.workers} gevent.pywsgi workers "
            f"({'/'.join(map(str, spread(n, args.workers)))}), RedisSubscriptionManager; K={k} tools_list_changed "
            f"from a sender process (K PUBLISH); against part 2's in-memory server; workers and redis-server on CPU "
            f"{server_cpu}, generator and sender on CPU {generator_cpu}; load average {load_average()} =="
        )
        print(COLUMNS.replace("server   ", "backend  "))
        results: dict[str, list[dict[str, Any]]] = {"memory": [], "redis": []}
        for run in range(1, args.repeat + 1):  # alternating, so noise hits both alike
            results["memory"].append(bench_http("ours", server_cpu, n, k))
            print(row("memory", f"#{run}", results["memory"][-1]), flush=True)
            redis_pid = None if server is None else server.process.pid
            results["redis"].append(bench_redis(url, server_cpu, args.workers, n, k, redis_pid))
            print(row(f"redis x{args.workers}", f"#{run}", results["redis"][-1]), flush=True)
    summary = {name: median(runs) for name, runs in results.items()}
    if args.repeat > 1:
        for name, r in summary.items():
            print(row(name if name == "memory" else f"redis x{args.workers}", "median", r))
    ratio = summary["redis"]["per_s"] / summary["memory"]["per_s"]
    per_run = [r["per_s"] / m["per_s"] for r, m in zip(results["redis"], results["memory"])]
    print(
        f"redis / in-memory delivered/s: x{ratio:.2f} of the medians (per run: min x{min(per_run):.2f}, "
        f"median x{statistics.median(per_run):.2f}); goal >= {GOALS['redis']:g}x: {verdict(ratio >= GOALS['redis'])}; "
        f"delivered per server CPU-s (workers and redis-server): "
        f"x{summary['redis']['per_cpu_s'] / summary['memory']['per_cpu_s']:.2f}"
    )
    if http is not None and "ours" in http:
        print(f"redis / part 2's ours median (same N, K): x{summary['redis']['per_s'] / http['ours']['per_s']:.2f}")
    print(f"load average after: {load_average()}")


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", nargs="+", choices=("inproc", "http", "redis"), default=["inproc", "http", "redis"])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (alternating), medians")
    parser.add_argument("--streams", type=int, default=10_000, help="part 1: listen streams")
    parser.add_argument("--rounds", type=int, default=20, help="part 1: rounds per run (M)")
    parser.add_argument("--uris", type=int, default=100, help="part 1: URIs updated per round (one stream each)")
    parser.add_argument("--http-streams", type=int, default=1000, help="parts 2 and 3: listen streams")
    parser.add_argument("--notifications", type=int, default=100, help="parts 2 and 3: list_changed per stream (K)")
    parser.add_argument("--server", choices=SERVER_CHOICES, default="both", help="part 2's servers (parked: ours on session_manager.pywsgi)")
    parser.add_argument("--workers", type=int, default=3, help="part 3: gevent workers")
    parser.add_argument("--redis", metavar="URL", help="part 3: this Redis (default: a private redis-server)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let every process run on any core")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # a server process of ours
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)  # ... with Redis subscriptions
    parser.add_argument("--parking", action="store_true", help=argparse.SUPPRESS)  # ... on session_manager.pywsgi
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--publish", nargs=2, help=argparse.SUPPRESS)  # part 3's sender: URL K
    args = parser.parse_args()
    if args.serve:
        serve(args.cpu, args.redis_url, args.parking)
        return
    if args.publish:
        publish(args.publish[0], int(args.publish[1]))
        return

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[-1] if args.pin and len(cpus) > 1 else None
    generator_cpu = cpus[0] if server_cpu is not None else None
    print(f"listen fan-out (issue 12); CPUs {cpus}; load average before: {load_average()}")
    http = None
    if "inproc" in args.part:
        part_inproc(args, server_cpu)
    if "http" in args.part:
        http = part_http(args, server_cpu, generator_cpu)
    if "redis" in args.part:
        part_redis(args, server_cpu, generator_cpu, http)


if __name__ == "__main__":
    main()
