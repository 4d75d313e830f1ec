#!/usr/bin/env bash
# Install everything the tests need (virtualenv, Python packages,
# redis-server) and run the whole test suite. Extra arguments go to pytest.
EXTRAS=test
source "$(dirname "$0")/_venv.sh"

if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server not found: installing the Debian package" >&2
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -q && $SUDO apt-get install -y -q redis-server
fi

exec .venv/bin/python -m pytest "$@"
