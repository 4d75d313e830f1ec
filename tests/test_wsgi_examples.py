"""The McpApp examples, each started as a process on a free port, against the official MCP client.

examples/wsgi_server.py serves McpApp without Flask under gevent.pywsgi;
examples/django_app.py mounts it beside a Django site. Both run the same
round as the Flask example (tests/test_flask_client.py): tools, progress,
logs, a subscription and its update, DELETE on exit; plus a legacy
HTTP+SSE client and, for Django, a page of the site.
"""

from __future__ import annotations

import subprocess

import pytest
import requests

from .flask_support import PYTHON, REPO, ServerProcess, free_port
from .legacy_support import LegacyClient
from .test_flask_client import subprocess_round

# The 2025-era methods this transport serves are deprecated for 2026-07-28 clients only.
pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")


def start(example: str) -> ServerProcess:
    port = free_port()
    return ServerProcess([PYTHON, f"examples/{example}.py", "--port", str(port)], port)


def legacy_round(server: ServerProcess) -> None:
    """A legacy client gets its endpoint, initializes and calls a tool, its replies on its stream."""
    client = LegacyClient(server.port)
    try:
        assert client.initialize()["result"]["protocolVersion"] == "2024-11-05"
        reply = client.request("tools/call", {"name": "echo", "arguments": {"text": "legacy"}}, id=2)
        assert reply["result"]["content"][0]["text"] == "legacy"
    finally:
        client.close()


def test_the_wsgi_example_without_flask_serves_the_official_client() -> None:
    server = start("wsgi_server")
    legacy_round(server)
    subprocess_round(server)  # closes the server, checks that it logged no traceback


def test_the_django_example_serves_the_site_and_the_official_client() -> None:
    server = start("django_app")
    page = requests.get(f"http://127.0.0.1:{server.port}/", timeout=10)
    assert page.status_code == 200 and "Django" in page.text
    assert requests.get(f"http://127.0.0.1:{server.port}/nope", timeout=10).status_code == 404  # Django's
    legacy_round(server)
    subprocess_round(server)


@pytest.mark.parametrize("example", ["wsgi_server", "django_app"])
def test_the_examples_show_their_help(example: str) -> None:
    done = subprocess.run(
        [PYTHON, f"examples/{example}.py", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    assert done.returncode == 0 and "--port" in done.stdout, done.stderr
