"""RedisInfoSessionManager: session metadata shared by every process, in Redis.

Keys (layout in :mod:`._keys`): ``session:<sid>`` (hash: ``created``,
``ttl`` (ms), ``protocol_version``, ``client_info`` and
``client_capabilities`` as JSON, ``log_level``), ``subs:<sid>`` (set of its
subscribed URIs) and ``uri:<uri>`` (set of subscribed session ids). Every
call on a session (getters included) refreshes its expiry to
``session_ttl`` in the same script; the subscriber set of each URI lives as
long as its longest-lived subscriber. An open stream of the session (a
:class:`~session_manager.redis.RedisStreamSessionManager` with the same
prefix) keeps it alive, and a session in use keeps alive the event logs a
:class:`~session_manager.redis.RedisEventStore` with the same prefix holds
for it: the scripts name those keys with the builders of :mod:`._keys`,
from this manager's prefix and the session id.

Session caps (:class:`~session_manager.SessionQuota`) are counted in two
sorted sets scored by expiry, ``live-sessions`` (every session) and
``live-sessions:<principal>`` (see :mod:`._scripts`), which the create
script checks and updates in the same atomic step: a cap holds for the
whole deployment, whichever worker creates.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis as redis_py

from .. import _validate
from .._fields import FieldStoreInfoManager
from ..base import SessionQuota
from ..errors import SessionLimitError, SessionNotFoundError
from . import _scripts as lua
from ._common import RedisBacked, milliseconds, text
from ._keys import Keys

__all__ = ["RedisInfoSessionManager"]

#: No cap: how a create without a quota is counted (in the server-wide count only).
_NO_QUOTA = SessionQuota()


class RedisInfoSessionManager(RedisBacked, FieldStoreInfoManager):
    """Session metadata shared by every process, in Redis.

    Same semantics as :class:`~session_manager.InMemoryInfoSessionManager`,
    plus expiry: a session not used for ``session_ttl`` seconds is gone.
    Session caps (``create(..., quota=)``) are counted in Redis, so they
    hold across every process on the prefix.
    Every method that names a session (getters included) refreshes its
    expiry in the same script that does the work; ``get_subscriptions``
    does not (it is not activity of those sessions). Each call is one
    round trip; every write checks that the session exists atomically, so
    a setter racing a ``delete`` can never resurrect the session.

    :param url_or_client: a ``redis://`` URL, or a :class:`redis.Redis` client.
    :param prefix: namespace of every key.
    :param session_ttl: seconds of inactivity after which a session expires.
    :param socket_timeout: seconds before a Redis call gives up (clients built from a URL).
    :param max_connections: size of the command pool of a client built from a URL.
    """

    def __init__(
        self,
        url_or_client: str | redis_py.Redis,
        *,
        prefix: str = "mcp:",
        session_ttl: float = 3600.0,
        socket_timeout: float = 5.0,
        max_connections: int = 8,
    ) -> None:
        self._ttl_ms = milliseconds(session_ttl, "session_ttl")
        self._connect(
            url_or_client,
            prefix=prefix,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
            role="info",
        )
        self._keys = Keys(self._prefix)
        register = self._client.register_script
        self._create = register(lua.INFO_CREATE)
        self._exists = register(lua.INFO_EXISTS)
        self._get_all = register(lua.INFO_GET_ALL)
        self._get_field = register(lua.INFO_GET_FIELD)
        self._set_field = register(lua.INFO_SET_FIELD)
        self._subscribe = register(lua.INFO_SUBSCRIBE)
        self._unsubscribe = register(lua.INFO_UNSUBSCRIBE)
        self._delete = register(lua.INFO_DELETE)
        self._subscribers = register(lua.INFO_SUBSCRIBERS)
        self._shared_secret = register(lua.INFO_SHARED_SECRET)
        self._claim = register(lua.INFO_CLAIM)
        self._secrets: dict[str, bytes] = {}

    def _run(self, script: Callable[..., Any], session_id: str, *args: Any, extra_key: str | None = None) -> Any:
        """Run an info script on the keys of *session_id* (already validated)."""
        keys = [self._keys.session(session_id), self._keys.session_uris(session_id)]
        if extra_key is not None:
            keys.append(extra_key)
        with self._errors:
            return script(keys=keys, args=[self._prefix, self._ttl_ms, session_id, *args])

    def _insert(self, session_id: str, fields: dict[str, str], quota: SessionQuota | None) -> bool:
        quota = quota or _NO_QUOTA
        principal = quota.principal
        counted_for = ("0", "") if principal is None else ("1", principal)
        caps = (*counted_for, str(quota.max_sessions or 0), str(quota.max_per_principal or 0))  # 0: no cap
        # ttl: how long an open stream of the session keeps it alive (the stream heartbeat reads it).
        flat = ["created", repr(time.time()), "ttl", str(self._ttl_ms)]
        for name, value in fields.items():
            flat += [name, value]
        created = self._run(self._create, session_id, *caps, *flat)
        if isinstance(created, list):  # past a cap: [scope, ms until the oldest counted session expires]
            scope = text(created[0])
            limit = quota.max_sessions if scope == "server" else quota.max_per_principal
            assert limit is not None
            raise SessionLimitError(scope, limit, int(created[1]) / 1000)
        return bool(created)

    def _read_all(self, session_id: str) -> Mapping[str, str] | None:
        flat = self._run(self._get_all, session_id)
        return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)} if flat else None

    def _read(self, session_id: str, name: str) -> str | None:
        value = self._run(self._get_field, session_id, name)
        return None if value is None else text(value)

    def _write(self, session_id: str, name: str, value: str) -> bool:
        return bool(self._run(self._set_field, session_id, name, value))

    def exists(self, session_id: str) -> bool:
        return bool(self._run(self._exists, _validate.session_id(session_id)))

    def get_subscriptions(self, uri: str) -> list[str]:
        _validate.text(uri, "uri")
        with self._errors:
            members = self._subscribers(keys=[self._keys.uri(uri)], args=[self._prefix, uri])
        return [text(sid) for sid in members]

    def add_subscription(self, session_id: str, uri: str) -> None:
        _validate.session_id(session_id)
        _validate.text(uri, "uri")
        if not self._run(self._subscribe, session_id, uri, extra_key=self._keys.uri(uri)):
            raise SessionNotFoundError(session_id)

    def remove_subscription(self, session_id: str, uri: str) -> None:
        _validate.session_id(session_id)
        _validate.text(uri, "uri")
        self._run(self._unsubscribe, session_id, uri, extra_key=self._keys.uri(uri))

    def delete(self, session_id: str) -> None:
        self._run(self._delete, _validate.session_id(session_id))

    def shared_secret(self, name: str) -> bytes:
        """See :meth:`InfoSessionManager.shared_secret`: kept in Redis (``secret:<name>``), read once per process."""
        _validate.text(name, "name")
        secret = self._secrets.get(name)
        if secret is None:
            with self._errors:
                value = self._shared_secret(keys=[self._keys.secret(name)], args=[secrets.token_hex(32)])
            secret = self._secrets[name] = bytes.fromhex(text(value))
        return secret

    def claim(self, token: str, ttl: float) -> bool:
        """See :meth:`InfoSessionManager.claim`: ``SET NX PX`` on ``claim:<token>``, run at most once.

        Never retried: a retry after a timeout would find the first attempt's
        claim and refuse a legitimate use. A timeout raises
        :class:`~session_manager.BackendUnavailableError` instead.
        """
        _validate.text(token, "token")
        return bool(self._run_once(self._claim, [self._keys.claim(token)], [milliseconds(ttl, "ttl")]))

    def close(self) -> None:
        """Disconnect the pool this manager created (a client passed in stays open)."""
        self._disconnect()

    def __repr__(self) -> str:
        return f"<RedisInfoSessionManager prefix={self._prefix!r}>"
