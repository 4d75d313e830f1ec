"""Redis backends: any number of processes on any number of hosts act as one server.

- :class:`RedisStreamSessionManager`: each process holds the SSE streams of
  its HTTP connections and registers them in Redis; a ``send`` from any
  process reaches them through pub/sub.
- :class:`RedisInfoSessionManager`: session metadata in Redis hashes and sets.
- :class:`RedisEventStore`: resumable streams, their logs in Redis streams.
- :class:`RedisSubscriptionManager`: 2026-07-28 listen streams; a list change
  or resource update from any process reaches them (one PUBLISH each).

One module a job (all private):

==================  =========================================================================
``_streams``        the stream manager: public API and routing (create, resume, send,
                    send_many: a batch in one round trip, delete)
``_node``           the per-process node: local streams, listener (batched delivery) and
                    heartbeat threads, fork handling, catch-up bookkeeping, failure behaviour
``_codec``          the pub/sub messages: every encoder (Python and Lua) and decoder
``_info``           the info manager
``_subscriptions``  the subscription manager: listen streams notified from any process
                    (one PUBLISH per notification, local fan-out through an index)
``_events``         the event store, its event ids and its replies
``_keys``           every key and channel name, defined once (for Python and Lua)
``_scripts``        the Lua scripts (each call one atomic round trip)
``_listener``       a pub/sub connection kept alive (reconnects with backoff, PING probes),
                    for every listener
``_common``         client set-up, the gevent check, Redis error translation, script calls
                    run at most once (sends and appends are never retried)
==================  =========================================================================

Each component takes a ``redis://`` URL or a :class:`redis.Redis` client (a
client passed in is used as configured and left open by ``close``; give it
socket timeouts, a bounded pool and few retries, since redis-py's default
retry policy can hold a call for seconds while Redis is down; sends and
event appends bypass it: they are never run twice). Give every component
the same ``prefix``: the session ones keep each other's keys of a session
alive, and the subscription manager's channel lives under it too.
All scripts run on one Redis (standalone or Sentinel), not on Redis Cluster.
"""

from __future__ import annotations

# First, before any submodule imports it: a missing redis-py is named with the extra that installs it.
try:
    import redis  # noqa: F401
except ImportError as exc:
    from .._extras import missing_extra

    raise missing_extra("session_manager.redis", "redis", exc) from exc

from ._events import RedisEventStore
from ._info import RedisInfoSessionManager
from ._streams import RedisStreamSessionManager
from ._subscriptions import RedisSubscriptionManager

__all__ = ["RedisEventStore", "RedisInfoSessionManager", "RedisStreamSessionManager", "RedisSubscriptionManager"]
