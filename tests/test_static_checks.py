"""Types and lint are part of the test run: ``mypy --strict`` on the package, ruff everywhere.

Both read their configuration from ``pyproject.toml``; their versions are
pinned in the ``test`` extra, so a new release cannot change the verdict.
"""

from __future__ import annotations

import subprocess
import sys

from .flask_support import REPO


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_package_passes_mypy_strict() -> None:
    done = run_tool("mypy")  # files and --strict come from pyproject.toml
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def test_package_examples_benchmarks_and_tests_pass_ruff() -> None:
    done = run_tool("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All checks passed!" in done.stdout
