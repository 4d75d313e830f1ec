"""What the Redis components share: client set-up, the gevent check, error translation, calls run once."""

from __future__ import annotations

import contextlib
import re
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.retry import Retry

from .. import _validate
from ..errors import BackendUnavailableError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11 on


__all__ = [
    "REDIS_DOWN",
    "Call",
    "CallsFailed",
    "RedisBacked",
    "RedisErrors",
    "check_gevent",
    "connect",
    "milliseconds",
    "run_once",
    "text",
]

#: Redis errors that mean "the server cannot be used right now" (as opposed to a bug).
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (a restarting server)
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica after a failover
)

_NAME_UNSAFE = re.compile(r"[^\x21-\x7e]")
#: The password in a URL's userinfo, never shown in an error.
_PASSWORD = re.compile(r"^([a-z]+://[^:/@]*:)[^@/]*@")


def check_gevent() -> None:
    """Refuse to run when gevent patched ``threading`` but not ``socket``.

    Redis I/O on an unpatched socket would block the whole gevent hub (every
    greenlet of the process) on each command. gevent is only looked up, never
    imported: if nobody imported it, it cannot be active.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None:
        return
    if monkey.is_module_patched("threading") and not monkey.is_module_patched("socket"):
        raise RuntimeError(
            "gevent has patched 'threading' but not 'socket': Redis I/O would block every "
            "greenlet. Call gevent.monkey.patch_all() (or at least patch_socket()) before "
            "using the Redis session managers."
        )


def milliseconds(seconds: float, what: str) -> int:
    """A positive number of seconds (checked) as whole milliseconds, at least 1: how Redis takes TTLs."""
    return max(1, int(_validate.positive_seconds(seconds, what) * 1000))


def text(value: str | bytes) -> str:
    """Decode a reply that is ``bytes`` or ``str`` (the client's ``decode_responses``)."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def connect(
    url_or_client: str | redis.Redis,
    *,
    socket_timeout: float,
    max_connections: int,
    client_name: str,
) -> tuple[redis.Redis, redis.ConnectionPool | None]:
    """Return ``(client, owned_pool)``: the user's client as is, or a bounded one for a URL.

    A client built from a URL has a bounded blocking pool (a constant number
    of connections per process), socket timeouts so no call hangs, and one
    quick retry (so a connection broken by a server restart is replaced
    transparently, while a server that is down fails fast; sends never go
    through it, see :func:`run_once`). *owned_pool* is
    that pool, to disconnect on close; ``None`` for a user's client, which
    the caller must leave open.
    """
    if isinstance(url_or_client, redis.Redis):
        return url_or_client, None
    if not isinstance(url_or_client, str):
        raise TypeError(
            "url_or_client must be a redis:// URL (str) or a redis.Redis client, "
            f"not {type(url_or_client).__name__}"
        )
    if type(max_connections) is not int or max_connections < 2:
        raise ValueError(f"max_connections must be an int >= 2, got {max_connections!r}")
    check_url(url_or_client)
    pool = redis.BlockingConnectionPool.from_url(
        url_or_client,
        max_connections=max_connections,
        timeout=socket_timeout,  # waiting for a free pooled connection
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout, 2.0),
        socket_keepalive=True,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        client_name=_NAME_UNSAFE.sub("_", client_name),
    )
    return redis.Redis(connection_pool=pool), pool


_URL_FORMS = "redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or unix:///path/to/redis.sock[?db=N]"


def check_url(url: str) -> None:
    """Raise ``ValueError`` naming the problem and the accepted forms unless *url* is a usable Redis URL.

    redis-py alone would name no URL, and would silently use database 0 for a
    path such as ``/abc``.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        problem = None
        if parts.scheme not in ("redis", "rediss", "unix"):
            problem = f"the scheme must be redis, rediss or unix, not {parts.scheme or 'missing'!r}"
        elif parts.scheme == "unix":
            if not parts.path:
                problem = "a unix:// URL needs the socket's path"
        elif not parts.hostname:
            problem = "no host"
        else:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
            database = parts.path.lstrip("/")
            if database and not database.isdigit():
                problem = f"the database must be a number, not {database!r}"
    except ValueError as exc:
        problem = str(exc)
    if problem is not None:
        shown = _PASSWORD.sub(r"\1***@", url)
        raise ValueError(f"invalid Redis URL {shown!r}: {problem}; expected {_URL_FORMS}")


def describe(client: redis.Redis) -> str:
    """Where *client* connects, for error messages (never includes a password)."""
    kwargs = getattr(client.connection_pool, "connection_kwargs", {})
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


class RedisErrors:
    """Context manager turning Redis connection errors into BackendUnavailableError."""

    __slots__ = ("_where",)

    def __init__(self, client: redis.Redis) -> None:
        self._where = describe(client)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, REDIS_DOWN):
            raise self.error(exc) from exc  # type: ignore[arg-type]

    def error(self, exc: BaseException) -> BackendUnavailableError:
        """The BackendUnavailableError that reports *exc*."""
        return self.unavailable(f"{type(exc).__name__}: {exc}")

    def unavailable(self, reason: str) -> BackendUnavailableError:
        """A BackendUnavailableError saying which Redis and why."""
        return BackendUnavailableError(
            f"Redis at {self._where} is unavailable ({reason}); the session backend cannot be reached, retry later"
        )


class RedisBacked:
    """Set-up and tear-down both Redis managers share: prefix, client, error translation."""

    _prefix: str
    _client: redis.Redis
    _owned_pool: redis.ConnectionPool | None
    _errors: RedisErrors

    def _connect(
        self,
        url_or_client: str | redis.Redis,
        *,
        prefix: str,
        socket_timeout: float,
        max_connections: int,
        role: str,
    ) -> float:
        """Check the environment, connect, and return the validated socket timeout."""
        check_gevent()
        self._prefix = _validate.text(prefix, "prefix")
        timeout = _validate.positive_seconds(socket_timeout, "socket_timeout")
        self._client, self._owned_pool = connect(
            url_or_client,
            socket_timeout=timeout,
            max_connections=max_connections,
            client_name=f"session_manager:{role}:{prefix}",
        )
        self._errors = RedisErrors(self._client)
        return timeout

    def _redis_location(self) -> str:
        """Where this component's client connects (for messages: never a password)."""
        return describe(self._client)

    def _run_once(self, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """One script call, never retried (:func:`run_once`): for calls Redis must not run twice."""
        try:
            return run_once(self._client, script, [(keys, args)])[0]
        except CallsFailed as failed:
            raise failed.error(self._errors) from failed.cause

    def _disconnect(self) -> None:
        """Disconnect the pool this manager created (a client passed in stays open)."""
        if self._owned_pool is not None:
            self._owned_pool.disconnect()


# -- calls run at most once ----------------------------------------------------------

#: One call of a script: its keys and its arguments.
Call = tuple[Sequence[str], Sequence[str | int]]


class CallsFailed(Exception):
    """:func:`run_once` stopped: ``calls[:done]`` ran; the others may have run if *unsure*, else none did."""

    def __init__(self, done: int, cause: BaseException, *, unsure: bool) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.done = done
        self.cause = cause
        self.unsure = unsure

    def error(self, errors: RedisErrors) -> BaseException:
        """What to raise: a BackendUnavailableError when Redis cannot be used, else Redis's own error."""
        return errors.error(self.cause) if isinstance(self.cause, REDIS_DOWN) else self.cause


def run_once(client: redis.Redis, script: Script, calls: Sequence[Call]) -> list[Any]:
    """Run *calls* (``(keys, args)`` of *script*) pipelined in one round trip, each at most once; their replies.

    Why not ``script(...)`` or a redis-py pipeline: both go through the
    client's retry policy, which runs a call again after a timeout although
    Redis may have run it already (a send delivered twice, or a batch of
    them), and a pipeline of scripts costs one more round trip per execute
    (``SCRIPT EXISTS``). Here a call is sent again only when Redis said it
    did not run it (``NOSCRIPT``: the script is loaded, then the calls from
    there on go again, once).

    Redis runs pipelined calls in order, so a failure always leaves a
    prefix: raises :class:`CallsFailed` with ``done`` = the calls known to
    have run. Its cause is a ``REDIS_DOWN`` error (no reply in time, lost
    connection) or a ``ResponseError`` (a call Redis refused; calls after
    it may still have run).
    """
    replies: list[Any] = []
    reloaded = False
    while True:
        start = len(replies)
        got = _pipeline(client, script.sha, calls[start:], start)
        failed = next((i for i, reply in enumerate(got) if isinstance(reply, redis.exceptions.ResponseError)), None)
        if failed is None:
            return replies + got
        missing = got[failed:]
        if reloaded or not all(isinstance(reply, redis.exceptions.NoScriptError) for reply in missing):
            raise CallsFailed(start + failed, got[failed], unsure=True)
        replies += got[:failed]  # the script cache was empty (a restarted Redis): none of the rest ran
        try:
            script.sha = client.script_load(script.script)
        except REDIS_DOWN as exc:
            raise CallsFailed(len(replies), exc, unsure=False) from exc
        reloaded = True


def _pipeline(client: redis.Redis, sha: str, calls: Sequence[Call], offset: int) -> list[Any]:
    """One round trip: EVALSHA each call on one connection, read every reply (a refused call's is its error)."""
    with _connection(client, offset) as connection:
        replies: list[Any] = []
        try:
            commands = [("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls]
            connection.send_packed_command(connection.pack_commands(commands))
            for _ in calls:
                try:
                    replies.append(client.parse_response(connection, "EVALSHA"))  # type: ignore[no-untyped-call]
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
        except BaseException as exc:
            connection.disconnect()  # replies may still be due on it: never reused
            if isinstance(exc, REDIS_DOWN):
                raise CallsFailed(offset + len(replies), exc, unsure=True) from exc
            raise
        return replies


@contextlib.contextmanager
def _connection(client: redis.Redis, offset: int) -> Iterator[Any]:
    """A connection of *client* for this caller alone: one of its pool, or its single connection under its lock."""
    single = client.connection
    if single is not None:
        with client.single_connection_lock:
            yield single
        return
    pool = client.connection_pool
    try:
        connection = pool.get_connection()  # checks the connection, reconnecting a stale one
    except REDIS_DOWN as exc:
        raise CallsFailed(offset, exc, unsure=False) from exc  # nothing was sent
    try:
        yield connection
    finally:
        pool.release(connection)
