#!/usr/bin/env bash
# Install the package with Flask, gevent, redis-py and gunicorn into .venv and start the example
# MCP server (in-memory sessions) on http://127.0.0.1:8000/mcp.
# Extra arguments go to examples/server.py (try --help).
EXTRAS=flask,gevent,redis,gunicorn
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python examples/server.py "$@"
