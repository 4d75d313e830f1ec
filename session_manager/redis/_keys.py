"""Every Redis key and channel name of the backend: the layout, defined once.

:data:`LAYOUT` holds one template per name, under the ``prefix`` of the
manager or store that uses it (``mcp:`` by default). Both languages build
names from it and from nothing else:

- Python, with :class:`Keys`: the keys a call passes to its script as
  ``KEYS``, and the channel names (or, for ``node:<node>``, the head that a
  script completes with the node id it reads from a stream key).
- Lua, with the ``key_<name>(p, <fields>...)`` builders of :data:`LUA`,
  generated from the same templates (:mod:`._scripts` includes those a script
  calls): the keys a script can only name once it runs (the logs listed in a
  session's index, the subscriber set of each of its URIs), and the keys of
  another component on the same prefix (the info scripts keep a session's
  event logs alive; the stream heartbeat keeps its info alive). Such a script
  gets the prefix and the session id as arguments; no script takes a key name
  apart to find another.

One prefix for the three components (``RedisStreamSessionManager``,
``RedisInfoSessionManager``, ``RedisEventStore``) is what lets each keep the
others' keys of a session alive. Names are built from the prefix in the
scripts, so every key must live on one Redis (standalone or Sentinel), not on
Redis Cluster.

Streams (:class:`~session_manager.redis.RedisStreamSessionManager`):

- ``stream:<sid>`` (string, TTL ``liveness_ttl``): ``<node>:<n>``, the token
  of the node and registration holding the stream; ``-<node>:<n>`` is a
  tombstone left by a ``delete`` from another node until the owner has
  closed the stream.
- ``reply:<request id>:<sid>`` (string, TTL the request's timeout): the
  node whose handler waits for the client's reply to a server-to-client
  request; the reply takes it (at most once) and goes to that node's channel.
- ``sent:<idempotency key>`` (string, TTL ``dedupe_ttl``): a send with
  that key ran (the send script sets it, ``SET NX``, before it routes or
  stores anything); a send with the key does nothing while it lives. A
  message with more than 1,000 targets is sent in parts of 1,000 targets,
  each marked on its own: ``sent:<key>`` for the first, ``sent:<key> <i>``
  for part *i* (a key never holds a space).
- channels ``node:<node>`` (one per process) and ``broadcast``: their
  messages are in :mod:`._codec`.

Listen streams (:class:`~session_manager.redis.RedisSubscriptionManager`):
the channel ``subscriptions`` (its messages are in :mod:`._subscriptions`).

Info (:class:`~session_manager.redis.RedisInfoSessionManager`):

- ``session:<sid>`` (hash: ``created``, ``ttl`` (ms), ``protocol_version``,
  ``client_info`` and ``client_capabilities`` as JSON, ``log_level``);
- ``subs:<sid>`` (set of the session's subscribed URIs);
- ``uri:<uri>`` (set of the ids of the sessions subscribed to the URI).
- ``secret:<name>`` (string, no TTL): a random secret every process shares
  (:meth:`~session_manager.InfoSessionManager.shared_secret`), e.g. the key
  sealing multi round-trip request states.
- ``claim:<token>`` (string, TTL the claim's): a token used once
  (:meth:`~session_manager.InfoSessionManager.claim`), e.g. a request
  state's nonce.

Event logs (:class:`~session_manager.redis.RedisEventStore`):

- ``events:<sid>`` (hash: the session's stream ids -> the entry id each log
  was opened at);
- ``event-log:<stream>:<sid>`` (a Redis stream: an opening marker entry
  ``o``, then one entry ``m`` = message per event);
- ``event-log:broadcast`` (the shared log of broadcasts, which every GET
  stream's replay merges: an opening marker ``o``, then one entry ``m`` per
  broadcast);
- ``event-sizes:<stream>:<sid>`` and ``event-sizes:broadcast`` (sorted sets,
  the byte bound of a log holding long messages: each long message's entry
  id scored by a running total of bytes, after a marker of what was dropped;
  see :mod:`._scripts`), refreshed and deleted with their log;
- ``events-clock`` (the latest entry id issued).
"""

from __future__ import annotations

import string

__all__ = ["LAYOUT", "LUA", "Keys"]

#: name -> template, under the prefix. A ``{field}`` is filled in by the caller.
LAYOUT: dict[str, str] = {
    # streams
    "stream": "stream:{sid}",
    "node_channel": "node:{node}",
    "broadcast_channel": "broadcast",
    "subscriptions_channel": "subscriptions",
    "reply": "reply:{rid}:{sid}",
    "sent": "sent:{key}",
    # info
    "session": "session:{sid}",
    "session_uris": "subs:{sid}",
    "uri": "uri:{uri}",
    # event logs
    "event_index": "events:{sid}",
    "event_log": "event-log:{stream}:{sid}",
    "broadcast_log": "event-log:broadcast",
    "event_sizes": "event-sizes:{stream}:{sid}",
    "broadcast_sizes": "event-sizes:broadcast",
    "event_clock": "events-clock",
    # shared by every process
    "secret": "secret:{name}",
    "claim": "claim:{token}",
}


def _parse(template: str) -> list[tuple[str, str | None]]:
    """The (literal, field) pieces of a template."""
    return [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]


def _lua_builder(name: str, template: str) -> str:
    """``local function key_<name>(p, <fields in template order>)``: the Lua twin of a template."""
    fields: list[str] = []
    parts = ["p"]
    for literal, field in _parse(template):
        if literal:
            assert "'" not in literal and "\\" not in literal, template
            parts.append(f"'{literal}'")
        if field:
            fields.append(field)
            parts.append(field)
    return f"local function key_{name}({', '.join(['p', *fields])})\n  return {' .. '.join(parts)}\nend\n"


#: Lua function name -> its definition: ``key_<name>(p, ...)`` for each template of :data:`LAYOUT`.
LUA: dict[str, str] = {f"key_{name}": _lua_builder(name, template) for name, template in LAYOUT.items()}


def _head(name: str) -> str:
    """The constant part of a template that ends with its one field (``stream:`` of ``stream:{sid}``)."""
    ((literal, field),) = _parse(LAYOUT[name])
    assert field, name
    return literal


class Keys:
    """The names under one prefix that Python passes to Redis (the scripts build the rest)."""

    __slots__ = (
        "_sent",
        "_session",
        "_session_uris",
        "_stream",
        "_uri",
        "broadcast_channel",
        "node_channel_head",
        "prefix",
        "subscriptions_channel",
    )

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._stream = prefix + _head("stream")
        self._session = prefix + _head("session")
        self._session_uris = prefix + _head("session_uris")
        self._uri = prefix + _head("uri")
        self._sent = prefix + _head("sent")
        #: ``node:<node>`` without the node id: a script appends the id of the node it reads in a stream key.
        self.node_channel_head = prefix + _head("node_channel")
        self.broadcast_channel = prefix + LAYOUT["broadcast_channel"]
        self.subscriptions_channel = prefix + LAYOUT["subscriptions_channel"]

    def stream(self, session_id: str) -> str:
        return self._stream + session_id

    def reply(self, request_id: str, session_id: str) -> str:
        return self.prefix + LAYOUT["reply"].format(rid=request_id, sid=session_id)

    def sent(self, key: str, part: int = 0) -> str:
        """The mark of a send with idempotency key *key* (of its part *part*, for a message sent in parts)."""
        return f"{self._sent}{key} {part}" if part else self._sent + key

    def node_channel(self, node: str) -> str:
        return self.node_channel_head + node

    def claim(self, token: str) -> str:
        return self.prefix + LAYOUT["claim"].format(token=token)

    def secret(self, name: str) -> str:
        return self.prefix + LAYOUT["secret"].format(name=name)

    def session(self, session_id: str) -> str:
        return self._session + session_id

    def session_uris(self, session_id: str) -> str:
        return self._session_uris + session_id

    def uri(self, uri: str) -> str:
        return self._uri + uri
