"""Helpers for tests/test_conformance.py: the MCP conformance suite (npm) against examples/everything_server.py.

``./scripts/test.sh`` installs, from the npm registry, a Node 22+ into
``.cache/node`` when the machine's node is older, and the two pinned suite
versions into ``tests/conformance/node_modules`` (npm aliases
``conformance-<version>`` in tests/conformance/package.json, exact versions
in its package-lock.json). :data:`SUITES` says which scenarios of which
version to run (a :class:`Suite`). :func:`start_run` runs one suite against a URL
with ``-o DIR``, so every scenario leaves its checks in
``DIR/server-<scenario>-<timestamp>/checks.json``; :meth:`SuiteRun.collect`
reads them back, per scenario (:func:`finish` for several runs at once).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .flask_support import REPO

#: The npm project that pins the suites, and where scripts/test.sh puts a Node when the machine's is too old.
CONFORMANCE_DIR = REPO / "tests" / "conformance"
NODE_DIR = REPO / ".cache" / "node"
#: Node's cache of compiled code: each run then loads the suite's bundle faster (six runs start at once).
COMPILE_CACHE = REPO / ".cache" / "node-compile-cache"
MIN_NODE_MAJOR = 22


@dataclass(frozen=True)
class Suite:
    """One selection of scenarios of one suite version.

    Every scenario it runs must pass, except the *unscored* ones (names, or
    prefixes ending in ``-``): those the requirement set runs for visibility
    but does not score; their results are reported, not required.
    """

    name: str
    version: str
    args: tuple[str, ...]
    unscored: tuple[str, ...] = ()

    def scored(self, scenario: str) -> bool:
        return not any(scenario == u or (u.endswith("-") and scenario.startswith(u)) for u in self.unscored)


#: Suite name -> what it runs (the names are the test ids).
SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite("0.1.16", "0.1.16", ("--suite", "all")),
        Suite("2025-11-25", "0.2.0-alpha.12", ("--requirements", "2025-11-25")),
        # Stateless requests (2026-07-28). Unscored there: the tasks extension and the two pending
        # header scenarios (the example has no x-mcp-header tool, so one of them cannot pass).
        Suite(
            "2026-07-28",
            "0.2.0-alpha.12",
            ("--requirements", "2026-07-28"),
            unscored=("tasks-",),  # the tasks extension is not implemented; every other scenario is required
        ),
    )
}
#: Seconds one suite run may take (they take seconds; pytest's own timeout is 300 s).
RUN_TIMEOUT = 180
#: What a run prints, in its results directory.
OUTPUT = "output.log"
INSTALL_HINT = "run ./scripts/test.sh, which installs a Node 22+ and the pinned suites from the npm registry"

_SCENARIO_LINE = re.compile(r"^=== Running scenario: (\S+) ===$", re.MULTILINE)
_RESULT_DIR = re.compile(r"^server-(.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$")


def node_major(binary: str) -> int:
    """The major version of a node binary (0 if it does not run)."""
    try:
        done = subprocess.run(
            [binary, "-p", "process.versions.node"], capture_output=True, text=True, timeout=30, check=False
        )
        return int(done.stdout.split(".")[0]) if done.returncode == 0 else 0
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0


def find_node() -> str | None:
    """A node binary of version 22 or later: the project's (``.cache/node``), else the machine's; None if neither."""
    for candidate in (NODE_DIR / "node_modules" / ".bin" / "node", shutil.which("node")):
        if candidate is not None and os.path.exists(candidate) and node_major(str(candidate)) >= MIN_NODE_MAJOR:
            return str(candidate)
    return None


def cli(version: str) -> Path:
    """The entry point of one installed suite version."""
    return CONFORMANCE_DIR / "node_modules" / f"conformance-{version}" / "dist" / "index.js"


def missing_suites() -> list[str]:
    """The pinned suite versions that are not installed."""
    return sorted({suite.version for suite in SUITES.values() if not cli(suite.version).is_file()})


@dataclass
class ScenarioResult:
    """One scenario's checks, as the suite wrote them (``checks.json``)."""

    name: str
    checks: list[dict[str, Any]]

    def with_status(self, status: str) -> list[dict[str, Any]]:
        return [check for check in self.checks if check.get("status") == status]

    def describe(self, status: str) -> str:
        """``scenario: Check (message); ...`` for the checks of *status*."""
        parts = [f"{c.get('name')} ({c.get('errorMessage') or c.get('description')})" for c in self.with_status(status)]
        return f"{self.name}: " + "; ".join(parts)

    def without(self, excused: Collection[tuple[str, str]]) -> ScenarioResult:
        """These results less the checks *excused* (``(scenario, check name)`` pairs)."""
        return ScenarioResult(self.name, [c for c in self.checks if (self.name, c.get("name")) not in excused])


@dataclass
class SuiteRun:
    """One suite run against one server, then its results."""

    suite: Suite
    backend: str
    url: str
    process: subprocess.Popen[bytes]
    out_dir: Path
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    output: str = ""
    announced: list[str] = field(default_factory=list)
    results: dict[str, ScenarioResult] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"conformance {self.suite.version} {' '.join(self.suite.args)}, {self.backend}"

    def done(self) -> bool:
        """Whether the run has ended (killed past :data:`RUN_TIMEOUT`); notes its duration when it has."""
        if self.process.poll() is None and time.monotonic() - self.started > RUN_TIMEOUT:
            self.process.kill()
            self.process.wait()
        if self.process.returncode is not None and not self.seconds:
            self.seconds = time.monotonic() - self.started
        return self.process.returncode is not None

    def collect(self) -> None:
        """Once the run has ended, read its output and every scenario's checks."""
        assert self.done()
        self.output = (self.out_dir / OUTPUT).read_text(errors="replace")
        self.announced = _SCENARIO_LINE.findall(self.output)
        for directory in sorted(self.out_dir.iterdir()):
            match = _RESULT_DIR.match(directory.name)
            checks = directory / "checks.json"
            if match and checks.is_file():
                self.results[match[1]] = ScenarioResult(match[1], json.loads(checks.read_text()))
        shutil.rmtree(self.out_dir, ignore_errors=True)

    def scored(self, excused: Collection[tuple[str, str]] = ()) -> list[ScenarioResult]:
        """The results of the scored scenarios, less the checks *excused*."""
        return [r.without(excused) for r in self.results.values() if self.suite.scored(r.name)]

    def failures(self, excused: Collection[tuple[str, str]] = ()) -> list[str]:
        """Every scored scenario that did not pass, with the checks that failed (or why it has none).

        *excused*: ``(scenario, check name)`` pairs that may fail (reported by the caller).
        """
        failing = [
            f"{name}: no results (the scenario did not complete)"
            for name in self.announced
            if name not in self.results and self.suite.scored(name)
        ]
        failing += [result.describe("FAILURE") for result in self.scored(excused) if result.with_status("FAILURE")]
        if not self.announced:
            failing.append("no scenario ran")
        if self.process.returncode:
            how = f"killed after {RUN_TIMEOUT} s" if self.process.returncode < 0 else "failed"
            failing.append(
                f"the suite {how} (exit status {self.process.returncode}); its output ends:\n{self.output[-2000:]}"
            )
        return failing

    def warnings(self, excused: Collection[tuple[str, str]] = ()) -> list[str]:
        """Every scored scenario with a check that warned (a SHOULD not met), with those checks."""
        return [result.describe("WARNING") for result in self.scored(excused) if result.with_status("WARNING")]

    def unscored_failures(self) -> list[str]:
        """The unscored scenarios that did not pass: reported, never required."""
        return [
            name
            for name in self.announced
            if not self.suite.scored(name) and (name not in self.results or self.results[name].with_status("FAILURE"))
        ]

    def status(self, scenario: str, check: str) -> list[str]:
        """The statuses of the checks named *check* in *scenario* (none if it did not run)."""
        result = self.results.get(scenario)
        return [] if result is None else [c.get("status", "") for c in result.checks if c.get("name") == check]

    def summary(self) -> str:
        """One line: scored scenarios passed, failed, with warnings; checks passed; unscored ones failing; time taken."""
        scored = [name for name in self.announced if self.suite.scored(name)]
        failed = sum(1 for name in scored if name not in self.results or self.results[name].with_status("FAILURE"))
        warned = sum(1 for result in self.scored() if result.with_status("WARNING"))
        checks = [check for result in self.scored() for check in result.checks]
        bad = sum(1 for check in checks if check.get("status") in ("FAILURE", "WARNING"))
        unscored = len(self.announced) - len(scored)
        failing = self.unscored_failures()
        status = f", exit status {self.process.returncode}" if self.process.returncode else ""
        return (
            f"{self.label}: {len(scored) - failed}/{len(scored)} scenarios passed, {failed} failed,"
            f" {warned} with warnings ({len(checks)} checks, {bad} failed or warned)"
            + (f"; unscored: {unscored - len(failing)}/{unscored} passed" if unscored else "")
            + (f", failing: {', '.join(failing)}" if failing else "")
            + f" ({self.seconds:.1f} s{status})"
        )


def start_run(node: str, suite: Suite, backend: str, url: str) -> SuiteRun:
    """Start ``conformance server --url URL`` of *suite*, its results written to a fresh directory."""
    out_dir = Path(tempfile.mkdtemp(prefix=f"conformance-{suite.name}-{backend}-"))
    args = [node, str(cli(suite.version)), "server", "--url", url, *suite.args, "-o", str(out_dir)]
    env = dict(os.environ, NO_COLOR="1", FORCE_COLOR="0", NODE_COMPILE_CACHE=str(COMPILE_CACHE))
    env.pop("NODE_OPTIONS", None)
    with open(out_dir / OUTPUT, "wb") as output:  # a file, not a pipe: runs in parallel never block on it
        process = subprocess.Popen(args, cwd=CONFORMANCE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT)
    return SuiteRun(suite, backend, url, process, out_dir)


def finish(runs: list[SuiteRun]) -> None:
    """Wait for every run (each ends within :data:`RUN_TIMEOUT`), then collect their results."""
    while [run for run in runs if not run.done()]:  # every run asked each time: it notes its end when it comes
        time.sleep(0.05)
    for run in runs:
        run.collect()
