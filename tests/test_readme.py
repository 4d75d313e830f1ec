"""README.md runs as written (issue 14).

- Every ```python block runs alone in a fresh interpreter (``sys.executable``,
  cwd the repository, a timeout). Blocks that need Redis or a running server
  read ``MCP_REDIS_URL`` / ``MCP_URL`` with the documented default; here they
  get a private redis-server / the example server on a free 127.0.0.1 port.
  A block that builds a Flask app is then run once more and its app answers
  ``initialize`` and ``tools/list`` through ``app.test_client()``.
- Every shell line that starts a server (``./scripts/run-example.sh ...``,
  ``.venv/bin/gunicorn ...``) is taken from the README, given a free port
  (and the private Redis for ``MCP_REDIS_URL``), must answer an MCP
  ``initialize`` POST, and must exit with status 0 soon after SIGINT (the
  script, as Ctrl-C) or SIGTERM (gunicorn, as a process manager).
  ``./scripts/run-example.sh`` runs ``pip install -e`` into .venv (seconds)
  before it execs ``examples/server.py "$@"``: the first such line runs the
  script itself, the others run ``examples/server.py`` with their arguments.
- The ``python examples/notify.py`` lines reach a live session of the
  README's Redis server (``SID`` replaced by that session's id).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from session_manager.redis import RedisInfoSessionManager

from .flask_support import (
    ACCEPT_BOTH,
    LATEST,
    PYTHON,
    REPO,
    RawStream,
    ServerProcess,
    free_port,
    initialize_message,
    reply_of,
    wait_until,
)
from .gunicorn_support import pid_alive, stream_view
from .redis_server import RedisServer

README = REPO / "README.md"
FENCE = "```"
REDIS_URL_ENV = "MCP_REDIS_URL"
SERVER_URL_ENV = "MCP_URL"
#: What the README holds; a change of these numbers is a change of what this file must test.
PYTHON_BLOCK_COUNT = 11
SERVER_LINE_COUNT = 6  # ./scripts/run-example.sh is shown twice
SERVER_COMMAND_COUNT = 5
NOTIFY_LINE_COUNT = 3

RUN_EXAMPLE = "./scripts/run-example.sh"
GUNICORN = ".venv/bin/gunicorn"
NOTIFY = ("python", "examples/notify.py")
#: Shell lines that start no server (install, the test command, benchmarks): not run here.
NOT_SERVERS = {"pip", "./scripts/test.sh", ".venv/bin/python"}

#: Seconds for one block, one notify.py run, one server to start (the script: pip first), to stop.
BLOCK_TIMEOUT = 60
START_TIMEOUT = 30
SCRIPT_START_TIMEOUT = 180
STOP_TIMEOUT = 20


# -- reading the README ----------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # README line of the block's first code line
    code: str


def readme_blocks() -> list[Block]:
    """Every fenced block of README.md, in order."""
    blocks: list[Block] = []
    lang: str | None = None
    start, body = 0, []
    for number, text in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if lang is None:
            if text.startswith(FENCE):
                lang, start, body = text[len(FENCE) :].strip(), number + 1, []
        elif text.rstrip() == FENCE:
            blocks.append(Block(lang, start, "\n".join(body) + "\n"))
            lang = None
        else:
            body.append(text)
    assert lang is None, f"README.md: the block opened at line {start - 1} is never closed"
    return blocks


@dataclass(frozen=True)
class Command:
    line: int  # README line
    argv: tuple[str, ...]
    exports: tuple[tuple[str, str], ...]  # ``export NAME=VALUE`` lines above it in the same block

    def needs_redis(self) -> bool:
        return any(name == REDIS_URL_ENV for name, _ in self.exports) or any(REDIS_URL_ENV in a for a in self.argv)


def shell_lines() -> list[Command]:
    """Every command line of the README's ```sh blocks, comments and exports taken apart."""
    commands = []
    for block in readme_blocks():
        if block.lang != "sh":
            continue
        exports: list[tuple[str, str]] = []
        for offset, text in enumerate(block.code.splitlines()):
            argv = shlex.split(text, comments=True)
            if not argv:
                continue
            if argv[0] == "export":
                exports += [(name, value) for name, _, value in (item.partition("=") for item in argv[1:])]
                continue
            commands.append(Command(block.line + offset, tuple(argv), tuple(exports)))
    return commands


BLOCKS = readme_blocks()
PYTHON_BLOCKS = [block for block in BLOCKS if block.lang == "python"]
SHELL = shell_lines()
SERVER_LINES = [c for c in SHELL if c.argv[0] in (RUN_EXAMPLE, GUNICORN)]
SERVER_COMMANDS = [c for i, c in enumerate(SERVER_LINES) if all(c.argv != d.argv for d in SERVER_LINES[:i])]
NOTIFY_LINES = [c for c in SHELL if c.argv[:2] == NOTIFY]
#: The one run-example line that runs the script itself (pip install included); the others run examples/server.py.
SCRIPT_LINE = next((c for c in SERVER_COMMANDS if c.argv[0] == RUN_EXAMPLE), None)


def block_id(block: Block) -> str:
    return f"block-{PYTHON_BLOCKS.index(block) + 1}-line-{block.line}"


def command_id(command: Command) -> str:
    """E.g. ``line-231-run-example.sh_--port_9000``."""
    words = [re.sub(r"[^\w.:-]", "", os.path.basename(arg)) for arg in command.argv[:3]]
    return f"line-{command.line}-" + "_".join(words)


def test_readme_has_the_expected_blocks() -> None:
    """So that a broken parser (or a README change) cannot make the tests below pass by finding nothing."""
    assert len(PYTHON_BLOCKS) == PYTHON_BLOCK_COUNT, [block.line for block in PYTHON_BLOCKS]
    assert len(SERVER_LINES) == SERVER_LINE_COUNT, SERVER_LINES
    assert len(SERVER_COMMANDS) == SERVER_COMMAND_COUNT, SERVER_COMMANDS
    assert len(NOTIFY_LINES) == NOTIFY_LINE_COUNT, NOTIFY_LINES
    # A shell line of a new kind must be classified here (and tested if it starts a server).
    unknown = [c for c in SHELL if c not in SERVER_LINES and c not in NOTIFY_LINES and c.argv[0] not in NOT_SERVERS]
    assert not unknown, f"README shell lines this test does not know: {unknown}"
    for block in PYTHON_BLOCKS:  # a line "..." or "# ..." stands for code the reader has to write
        assert not re.search(r"^\s*(#\s*)?\.\.\.", block.code, re.MULTILINE), f"README.md line {block.line}: a placeholder"


# -- every python block ----------------------------------------------------------------------


def block_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for name in (REDIS_URL_ENV, SERVER_URL_ENV, "MCP_EVENTS"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def example_server() -> Any:
    """``examples/server.py`` (in memory) on a free port, for the client block."""
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(REDIS_URL_ENV, raising=False)
        server = ServerProcess([PYTHON, "examples/server.py", "--port", str(port)], port, timeout=START_TIMEOUT)
    yield server
    server.close()


#: Runs a block (as ``__main__``), then asks its app (or ``create_app()``'s) ``initialize`` and ``tools/list``.
#: Arguments: the block's file, the initialize message (JSON), the Accept header, the protocol version.
APP_CHECK = """
import json, runpy, sys
namespace = runpy.run_path(sys.argv[1], run_name="__main__")
app = namespace["create_app"]() if "create_app" in namespace else namespace["app"]
client = app.test_client()
headers = {"Accept": sys.argv[3]}
response = client.post("/mcp", json=json.loads(sys.argv[2]), headers=headers)
assert response.status_code == 200, (response.status_code, response.get_data())
headers.update({"Mcp-Session-Id": response.headers["Mcp-Session-Id"], "MCP-Protocol-Version": sys.argv[4]})
response = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers)
assert response.status_code == 200 and b'"tools"' in response.get_data(), (response.status_code, response.get_data())
app.blueprints["mcp"].close()
"""


def failure(block: Block, done: subprocess.CompletedProcess[str], what: str) -> str:
    numbered = "\n".join(f"{block.line + i:4} | {text}" for i, text in enumerate(block.code.splitlines()))
    return f"README.md block at line {block.line} {what} (exit {done.returncode}):\n{numbered}\n--- stderr ---\n{done.stderr}"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=block_id)
def test_readme_python_block_runs(block: Block, request: pytest.FixtureRequest, tmp_path: Any) -> None:
    env = block_env()
    if re.search(rf"\b{REDIS_URL_ENV}\b", block.code):
        env[REDIS_URL_ENV] = request.getfixturevalue("private_redis").url
    if re.search(rf"\b{SERVER_URL_ENV}\b", block.code):
        env[SERVER_URL_ENV] = request.getfixturevalue("example_server").url
    path = tmp_path / f"readme_line_{block.line}.py"
    path.write_text(block.code, encoding="utf-8")

    done = subprocess.run(
        [PYTHON, str(path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT, check=False
    )
    assert done.returncode == 0, failure(block, done, "failed")

    if "Flask(__name__)" in block.code:
        done = subprocess.run(
            [PYTHON, "-c", APP_CHECK, str(path), json.dumps(initialize_message()), ACCEPT_BOTH, LATEST],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT, check=False,
        )
        assert done.returncode == 0, failure(block, done, "built an app that did not answer initialize/tools/list")


# -- the shell lines that start servers --------------------------------------------------------


def expand(arg: str, env: dict[str, str]) -> str:
    """``$NAME`` / ``${NAME}`` from *env* (the quotes are gone already: shlex)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in env, f"the README uses ${name}, which nothing sets"
        return env[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, arg)


def server_env(command: Command, redis_url: str | None) -> dict[str, str]:
    """The exported variables, Redis pointed at the private server."""
    env = {}
    for name, _documented in command.exports:
        assert name == REDIS_URL_ENV, f"README line {command.line}: export of {name}, unknown to this test"
        assert redis_url is not None
        env[name] = redis_url
    if redis_url is not None:
        env.setdefault(REDIS_URL_ENV, redis_url)
    return env


def server_argv(command: Command, port: int, env: dict[str, str], *, via_script: bool) -> list[str]:
    """The README's command line on *port* (127.0.0.1), variables expanded."""
    argv = [expand(arg, env) for arg in command.argv]
    if argv[0] == RUN_EXAMPLE:
        assert "--host" not in argv, argv  # examples/server.py binds 127.0.0.1 by default
        if "--port" in argv:
            argv[argv.index("--port") + 1] = str(port)
        else:
            argv += ["--port", str(port)]
        if not via_script:  # what the script execs once it has installed the package
            argv[:1] = [PYTHON, "examples/server.py"]
    else:
        assert argv[0] == GUNICORN, argv
        if "-b" in argv:
            where = argv.index("-b") + 1
            assert argv[where].rsplit(":", 1)[0] == "127.0.0.1", argv
            argv[where] = f"127.0.0.1:{port}"
        else:  # examples/gunicorn.conf.py binds 127.0.0.1:8000
            argv += ["-b", f"127.0.0.1:{port}"]
    return argv


def children(pid: int) -> set[int]:
    """Live child processes of *pid* (gunicorn's workers)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry))
    return found


def initialize(url: str, timeout: float = START_TIMEOUT) -> str:
    """POST ``initialize`` until the server answers it (gunicorn workers may still be loading); the session id."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    for _ in range(int(timeout / 0.1) + 1):
        try:
            response = requests.post(url, json=initialize_message(), headers={"Accept": ACCEPT_BOTH}, timeout=10)
            if response.status_code == 200:
                assert reply_of(response)["result"]["protocolVersion"] == LATEST, response.text
                return response.headers["Mcp-Session-Id"]
            last = f"{response.status_code} {response.text[:300]}"
        except requests.RequestException as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer initialize within {timeout} s: {last}")


def stop(server: ServerProcess, signum: int, workers: set[int]) -> None:
    """Send *signum*; the server (and its workers) must be gone, with status 0 and no traceback, in time."""
    server.process.send_signal(signum)
    try:
        status = server.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_TIMEOUT} s after signal {signum}: {server.stderr()}")
    assert status == 0, f"exit status {status} after signal {signum}: {server.stderr()}"
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(pid_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(pid) for pid in workers), f"workers {workers} outlived the server"
    time.sleep(0.1)  # the stderr reader thread catches up
    assert "Traceback" not in server.stderr(), server.stderr()


@contextlib.contextmanager
def started(command: Command, redis_url: str | None, *, via_script: bool = False) -> Any:
    """The README's server command on a free port, ready (it answered initialize); killed at the end if needed.

    Yields ``(server, session_id, worker_pids)``.
    """
    port = free_port()
    env = server_env(command, redis_url)
    argv = server_argv(command, port, env, via_script=via_script)
    server: ServerProcess | None = None
    workers: set[int] = set()
    try:
        with pytest.MonkeyPatch.context() as patch:  # ServerProcess passes os.environ on
            for name in (REDIS_URL_ENV, SERVER_URL_ENV, "MCP_EVENTS"):
                patch.delenv(name, raising=False)
            for name, value in env.items():
                patch.setenv(name, value)
            server = ServerProcess(argv, port, timeout=SCRIPT_START_TIMEOUT if via_script else START_TIMEOUT)
        sid = initialize(server.url)
        workers = children(server.process.pid)
        yield server, sid, workers
    finally:
        if server is not None:
            server.close()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=command_id)
def test_readme_server_command(command: Command, request: pytest.FixtureRequest) -> None:
    """Start as written (free port, private Redis), answer initialize, stop cleanly."""
    redis: RedisServer | None = request.getfixturevalue("private_redis") if command.needs_redis() else None
    via_script = command == SCRIPT_LINE
    with started(command, redis.url if redis else None, via_script=via_script) as (server, sid, workers):
        if redis is not None:  # the session is in the private Redis, not in the process
            with RedisInfoSessionManager(redis.url) as info:
                assert info.exists(sid)
        stop(server, signal.SIGINT if command.argv[0] == RUN_EXAMPLE else signal.SIGTERM, workers)


def expected_notification(argv: list[str]) -> dict[str, Any]:
    """What a notify.py command line sends."""
    if "--resource-updated" in argv:
        uri = argv[argv.index("--resource-updated") + 1]
        return {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": argv[argv.index("--method") + 1]}
    if "--params" in argv:
        message["params"] = json.loads(argv[argv.index("--params") + 1])
    return message


def test_readme_notify_commands_reach_a_live_session(private_redis: RedisServer) -> None:
    """The README's Redis server (run-example's ``--redis`` line), one session with its GET stream open and
    subscribed to the resource the README names; then every ``python examples/notify.py`` line of the
    README, as written but with ``SID`` that session's id: each arrives on the stream, in order."""
    command = next(c for c in SERVER_COMMANDS if c.argv[0] == RUN_EXAMPLE and c.needs_redis())
    lines = [[PYTHON, *c.argv[1:]] for c in NOTIFY_LINES]  # python: this interpreter
    with started(command, private_redis.url) as (server, sid, workers):
        headers = {"Accept": ACCEPT_BOTH, "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
        for line in lines:
            if "--resource-updated" in line:
                uri = line[line.index("--resource-updated") + 1]
                subscribe = {"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": uri}}
                response = requests.post(server.url, json=subscribe, headers=headers, timeout=10)
                assert response.status_code == 200 and "result" in reply_of(response), response.text
        stream = RawStream(server.port, "GET", "/mcp", {**headers, "Accept": "text/event-stream"})
        try:
            assert stream.status == 200, stream.read_all()
            stream.start_reader()
            with stream_view(private_redis.url) as view:
                wait_until(lambda: view.has(sid), what="the GET stream to be registered in Redis")
            env = dict(block_env(), **{REDIS_URL_ENV: private_redis.url})
            for line in lines:
                argv = [sid if arg == "SID" else arg for arg in line]
                done = subprocess.run(
                    argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT, check=False
                )
                assert done.returncode == 0 and "Traceback" not in done.stderr, (argv, done.stdout, done.stderr)
            assert stream.take(len(lines)) == [expected_notification(line) for line in lines]
            stop(server, signal.SIGTERM, workers)
            assert stream.ended.wait(STOP_TIMEOUT), "the stream outlived the server"
        finally:
            stream.close()
