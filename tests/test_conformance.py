"""The MCP conformance suite (npm ``@modelcontextprotocol/conformance``) against examples/everything_server.py.

Three suites (``0.1.16 --suite all``; ``0.2.0-alpha.12 --requirements
2025-11-25``, the session era; ``0.2.0-alpha.12 --requirements 2026-07-28``,
stateless requests on the same URL) against two deployments: the example in
memory (one gevent process) and on Redis behind ``gunicorn -k gevent -w 2``
(a private redis-server; the retries of a multi round-trip request may reach
either worker, which open each other's ``requestState`` with the secret they
share through Redis). Every scored scenario each run announces must pass: no
check may fail or warn; test_reconnection's stream must really be resumed
(server-sse-polling), and the ``subscriptions/listen`` checks must have
passed (see :data:`LISTEN_PENDING`). Unscored scenarios (``Suite.unscored``)
are only reported. The runs go in parallel, once for the module; a section at
the end of pytest's report sums them up. Needs Node 22+ and the suites
(``./scripts/test.sh`` installs both); without them the tests are skipped,
except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import sys

import pytest

from .conformance_support import INSTALL_HINT, SUITES, SuiteRun, find_node, finish, missing_suites, start_run
from .flask_support import PYTHON, ServerProcess, free_port
from .gunicorn_support import Gunicorn

#: The example as gunicorn loads it (MCP_REDIS_URL set by tests/gunicorn_support.Gunicorn).
EVERYTHING_APP = "examples.everything_server:create_app()"
BACKENDS = ("memory", "redis")
RUNS = [(suite, backend) for suite in SUITES for backend in BACKENDS]
#: The checks of the 2026-07-28 ``server-stateless`` scenario that need ``subscriptions/listen``.
LISTEN_CHECKS = (
    "ServerSendsSubscriptionAck",
    "ServerTagsSubscriptionId",
    "ServerHonorsNotificationFilter",
    "ServerSendsToolsListChangedOnSubscription",
    "ServerSendsPromptsListChangedOnSubscription",
)
#: Set True only while the transport does not serve ``subscriptions/listen``: the LISTEN_CHECKS
#: may then fail or warn (the failure message lists them), every other check must still pass, and
#: the test fails once they all pass, asking to set this back. False: they must all be SUCCESS.
LISTEN_PENDING = False

pytestmark = pytest.mark.slow


def _require(what: str | None) -> None:
    """Skip (fail under CI) when something the suite needs is missing."""
    if what is None:
        return
    message = f"{what}: {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, and {message}", pytrace=False)
    pytest.skip(message)


def _selected(request: pytest.FixtureRequest) -> set[tuple[str, str]]:
    """The (suite name, backend) pairs of this module's tests selected in this session."""
    module = sys.modules[__name__]
    return {
        item.callspec.params["run"]
        for item in request.session.items
        if getattr(item, "module", None) is module and hasattr(item, "callspec") and "run" in item.callspec.params
    }


def _start(backend: str, request: pytest.FixtureRequest) -> ServerProcess:
    """The everything server: one gevent process in memory, or two gunicorn workers on Redis."""
    if backend == "memory":
        port = free_port()
        return ServerProcess([PYTHON, "examples/everything_server.py", "--port", str(port)], port)
    return Gunicorn(request.getfixturevalue("redis_server").url, workers=2, app=EVERYTHING_APP)


class _Summary:
    """A pytest plugin: one line per suite run at the end of the report."""

    def __init__(self, runs: list[SuiteRun]) -> None:
        self.runs = runs

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.section("MCP conformance suite")
        for run in self.runs:
            terminalreporter.write_line(run.summary())


@pytest.fixture(scope="module")
def conformance(request: pytest.FixtureRequest) -> dict[tuple[str, str], tuple[SuiteRun, str]]:
    """Every selected suite run, started together against its server; each with its server's log."""
    node = find_node()
    _require(None if node else "no Node 22 or later found (the suites need it)")
    missing = missing_suites()
    _require(f"conformance suite(s) {', '.join(missing)} not installed" if missing else None)
    assert node is not None
    wanted = sorted(_selected(request))
    servers: dict[str, ServerProcess] = {}
    runs: list[SuiteRun] = []
    try:
        for backend in sorted({backend for _, backend in wanted}):
            servers[backend] = _start(backend, request)
        runs += [start_run(node, SUITES[name], backend, servers[backend].url) for name, backend in wanted]
        finish(runs)
    finally:
        for run in runs:
            if run.process.poll() is None:  # finish() did not get to wait for it
                run.process.kill()
                run.process.wait()
        for server in servers.values():
            if isinstance(server, Gunicorn):
                server.stop()  # its graceful stop takes a while: under way while the others close
        for server in servers.values():
            server.close()
    logs = {backend: _log(server) for backend, server in servers.items()}
    request.config.pluginmanager.register(_Summary(runs), f"mcp-conformance-summary-{id(runs)}")
    return {(run.suite.name, run.backend): (run, logs[run.backend]) for run in runs}


def _log(server: ServerProcess) -> str:
    """Everything the server wrote to stderr (it has exited)."""
    return server.full_stderr() if isinstance(server, Gunicorn) else server.stderr()


@pytest.mark.parametrize("run", RUNS, ids=[f"{suite}-{backend}" for suite, backend in RUNS])
def test_every_conformance_scenario_passes(
    run: tuple[str, str], conformance: dict[tuple[str, str], tuple[SuiteRun, str]]
) -> None:
    suite, log = conformance[run]
    stateless = suite.suite.name == "2026-07-28"
    listen = {check: suite.status("server-stateless", check) for check in LISTEN_CHECKS} if stateless else {}
    excused = {("server-stateless", check) for check in LISTEN_CHECKS} if LISTEN_PENDING else set()
    pending = f"\n(pending, not required: subscriptions/listen checks {listen})" if listen and LISTEN_PENDING else ""
    failures = suite.failures(excused)
    assert not failures, (
        f"{suite.label}: {len(failures)} scenario(s) failed:\n"
        + "\n".join(failures)
        + pending
        + (f"\n\nserver log (tail):\n{log[-3000:]}")
    )
    warnings = suite.warnings(excused)
    assert not warnings, f"{suite.label}: {len(warnings)} scenario(s) warned:\n" + "\n".join(warnings) + pending
    if stateless:
        passed = all(statuses == ["SUCCESS"] for statuses in listen.values())
        if LISTEN_PENDING:
            assert not passed, f"{suite.label}: the subscriptions/listen checks pass: set LISTEN_PENDING = False"
        else:
            assert passed, f"{suite.label}: subscriptions/listen checks did not all pass: {listen}"
    else:
        # The example ends test_reconnection's stream early: the result must come back on the resumed stream.
        resumed = suite.status("server-sse-polling", "ServerDisconnectResume")
        assert resumed == ["SUCCESS"], f"{suite.label}: server-sse-polling did not resume a closed stream: {resumed}"
    assert "Traceback" not in log, f"the server logged an error during {suite.label}:\n{log[-3000:]}"
