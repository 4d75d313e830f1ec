"""The distribution a user installs: its name, metadata, files, and a clear word on a missing extra.

The wheel is built from a copy of the working tree (``python -m build``
without isolation, with the test venv's setuptools), then installed alone
into a fresh virtualenv, as ``pip install mcp-session-manager`` with no
extra would leave it.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .flask_support import REPO

DISTRIBUTION = "mcp-session-manager"
EXTRAS = {"wsgi", "flask", "gevent", "redis", "gunicorn", "test"}


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source") / "tree"
    shutil.copytree(
        REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "*_cache", "__pycache__")
    )
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, source)
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def bare_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtualenv holding the wheel and nothing else (no Flask, gevent or redis-py)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel)
    yield python


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def test_the_wheel_is_mcp_session_manager_with_its_license_and_types(wheel: Path) -> None:
    meta = metadata(wheel)
    assert meta["Name"] == DISTRIBUTION
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Author"] and meta["License"] == "MIT" and meta["Summary"]
    assert set(meta.get_all("Provides-Extra") or []) == EXTRAS
    requires = meta.get_all("Requires-Dist") or []
    assert any(r.startswith("mcp>=2") and 'extra == "test"' in r for r in requires), requires
    assert any(r.startswith("gunicorn") and 'extra == "gunicorn"' in r for r in requires), requires
    assert not [r for r in requires if "extra ==" not in r], "the core package needs no dependency"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(license_file).startswith(b"MIT License")
    assert "session_manager/py.typed" in names
    assert "session_manager/flask/__init__.py" in names


def test_the_core_works_without_any_extra(bare_venv: Path) -> None:
    code = """
        import json
        from session_manager import SessionManagers, StreamController
        managers = SessionManagers()
        managers.info.create("abc")
        stream = StreamController()
        managers.streams.create("abc", stream)
        managers.streams.send(["abc"], json.dumps({"jsonrpc": "2.0", "method": "ping"}))
        print(next(iter(stream)).decode())
        managers.close()
    """
    done = run(bare_venv, "-c", textwrap.dedent(code))
    assert done.stdout.startswith('data: {"jsonrpc": "2.0", "method": "ping"}')


@pytest.mark.parametrize(
    "module, extra",
    [("session_manager.wsgi", "wsgi"), ("session_manager.flask", "flask"), ("session_manager.redis", "redis")],
)
def test_a_missing_extra_is_named_in_the_import_error(bare_venv: Path, module: str, extra: str) -> None:
    code = f"""
        try:
            import {module}
        except ModuleNotFoundError as exc:
            print(exc)
        else:
            raise SystemExit("imported without its extra")
    """
    done = run(bare_venv, "-c", textwrap.dedent(code))
    assert f"pip install '{DISTRIBUTION}[{extra}]'" in done.stdout, done.stdout
    assert module in done.stdout
