"""Push a notification to live MCP sessions through Redis, from a plain synchronous script.

The server (examples/server.py with ``--redis`` or ``MCP_REDIS_URL``, any
number of workers) holds the sessions' GET streams; this script needs no
gevent, no Flask app and no HTTP: it publishes through the same Redis, and
the worker holding each stream delivers it::

    export MCP_REDIS_URL=redis://127.0.0.1:6379/0
    python examples/notify.py --session SID --method notifications/message \\
        --params '{"level": "info", "data": "hello"}'
    python examples/notify.py --broadcast --method notifications/tools/list_changed
    python examples/notify.py --resource-updated note://current   # its subscribers only

Like the server, this script stores what it sends in the Redis event store
(``MCP_EVENTS=0`` turns it off, for both; a server started with
``--no-events`` needs ``MCP_EVENTS=0`` here): a client that resumes its stream
gets these messages too, with their ids, and a session whose stream is
closed right now gets them when it comes back. Without the store (at most
once) a session with no open GET stream misses them. The deployment
decides: with ``MCP_EVENTS=0`` here while the servers store events, the
script refuses to send (a message the logs miss would be a silent hole in
a resumed stream) and says so.
A value may start with ``-`` (``--session -x...``: ids minted by older
versions can): the word after ``--session`` (or any option taking a value)
is its value unless it is one of this script's options. ``--session=ID``
always works.
"""

import argparse
import json
import os
import sys
from typing import Any

from session_manager import (
    BackendUnavailableError,
    EventStoreRequiredError,
    Notifier,  # fan-out and JSON-RPC framing; no Flask needed
    SessionManagers,
)
from session_manager.redis import (
    RedisEventStore,
    RedisInfoSessionManager,
    RedisStreamSessionManager,
    RedisSubscriptionManager,
)

REDIS_URL_ENV = "MCP_REDIS_URL"  # as in examples/server.py
EVENTS_ENV = "MCP_EVENTS"  # as in examples/server.py: "0" means no event store


#: The options that take a value, and the words never taken for one.
VALUE_OPTIONS = ("--redis", "--session", "--resource-updated", "--method", "--params")
NOT_VALUES = (*VALUE_OPTIONS, "--broadcast", "-h", "--help", "--")


def glue_values(argv: list[str]) -> list[str]:
    """``--session -x...`` as ``--session=-x...``, which argparse reads as intended.

    argparse takes a separate value starting with ``-`` for an option and
    stops ("expected one argument"). Here the word after an option that
    takes a value is its value, unless it is one of our options (a forgotten
    value, which argparse then reports).
    """
    glued: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1] not in NOT_VALUES:
            glued.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            glued.append(argv[i])
            i += 1
    return glued


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Send an MCP notification to live sessions through Redis.")
    parser.add_argument(
        "--redis",
        default=os.environ.get(REDIS_URL_ENV),
        metavar="URL",
        help=f"the servers' Redis, redis://HOST:PORT/DB (default: ${REDIS_URL_ENV})",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--session", action="append", metavar="ID", help="a session id (repeatable)")
    target.add_argument("--broadcast", action="store_true", help="every session with an open stream")
    target.add_argument(
        "--resource-updated", metavar="URI", help="send notifications/resources/updated to URI's subscribers"
    )
    parser.add_argument("--method", help="notification method, e.g. notifications/message")
    parser.add_argument("--params", default=None, metavar="JSON", help="notification params, a JSON object")
    args = parser.parse_args(glue_values(sys.argv[1:] if argv is None else argv))
    if not args.redis:
        parser.error(f"give the Redis URL with --redis or ${REDIS_URL_ENV}")
    if args.resource_updated is None and not args.method:
        parser.error("--method is required with --session and --broadcast")
    if args.resource_updated is not None and (args.method or args.params):
        parser.error("--resource-updated sends its own method and params")
    if args.params is not None:
        try:
            args.params = json.loads(args.params)
        except ValueError as exc:
            parser.error(f"--params is not JSON: {exc}")
        if not isinstance(args.params, dict):
            parser.error("--params must be a JSON object")
    return args


def notify(notifier: Notifier, args: argparse.Namespace) -> str:
    """Send what *args* ask for; return what was done, for the user."""
    params: dict[str, Any] | None = args.params
    if args.broadcast:
        notifier.broadcast(args.method, params)
        return f"broadcast {args.method}"
    if args.resource_updated is not None:
        notifier.resource_updated(args.resource_updated)  # looks its subscribers up in Redis
        return f"notifications/resources/updated for {args.resource_updated} sent to its subscribers"
    for session_id in args.session:
        if not notifier.managers.streams.has(session_id):  # a stream held by any worker counts
            kept = "it gets this if it resumes" if notifier.managers.streams.event_store else "it will miss this"
            print(f"warning: session {session_id} has no open stream; {kept}", file=sys.stderr)
        notifier.notify(session_id, args.method, params)
    return f"{args.method} sent to {len(args.session)} session(s)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Same URL and (default) prefix as the server. This process only sends:
    # no listener or heartbeat starts, nothing runs in the background.
    # The same event-store setting as the server: a resumed stream then has these messages too.
    store = RedisEventStore(args.redis) if os.environ.get(EVENTS_ENV, "1") != "0" else None
    # Listen streams (2026-07-28 clients) get list changes and resource updates through the third manager.
    managers = SessionManagers(
        RedisStreamSessionManager(args.redis, event_store=store),
        RedisInfoSessionManager(args.redis),
        RedisSubscriptionManager(args.redis),
    )
    with managers:
        try:
            print(notify(Notifier(managers), args))
        except BackendUnavailableError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except EventStoreRequiredError as exc:  # MCP_EVENTS=0 here, while the servers store events
            print(f"error: {exc}; unset {EVENTS_ENV} (or set it as on the servers)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
