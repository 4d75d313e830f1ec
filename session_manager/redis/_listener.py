"""One pub/sub connection kept alive: what every Redis component that listens shares.

:func:`keep_listening` is a listener thread's body: subscribe, serve until
the connection fails, reconnect with exponential backoff (jittered), log
each outage once (and again at most every minute while it lasts), until
stopped. :func:`messages` is what serving reads: the subscription's
messages, with an idle connection probed by ``PING`` so that a silent one
(a Redis that stopped answering, a dropped NAT entry) counts as lost
within the socket timeout rather than never.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import redis as redis_py

from ._common import REDIS_DOWN

__all__ = ["POLL", "Listening", "keep_listening", "messages"]

logger = logging.getLogger(__name__)

#: Reconnection backoff of a listener, in seconds.
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 5.0
#: Longest a listener waits for a message before checking whether to stop.
POLL = 1.0
#: Seconds between two warnings about the same outage.
_LOG_EVERY = 60.0


class Listening(Protocol):
    """What a listener's owner exposes: when to stop, whether it is subscribed, its failed attempts in a row."""

    stop: threading.Event
    ready: threading.Event
    failures: int


def keep_listening(
    owner: Listening,
    client: redis_py.Redis,
    channels: Sequence[str],
    serve: Callable[[Any], None],
    name: Callable[[], str],
) -> None:
    """Subscribe *client* to *channels* and run ``serve(pubsub)``; on failure reconnect with backoff, until ``owner.stop``.

    ``serve`` returns when stopped and raises a ``REDIS_DOWN`` error when the
    connection is lost; it sets ``owner.ready`` once subscribed (and resets
    ``owner.failures``). *name* describes the listener in log lines.
    """
    backoff = _BACKOFF_MIN
    last_log = 0.0
    while not owner.stop.is_set():
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        try:
            pubsub.subscribe(*channels)
            serve(pubsub)
        except REDIS_DOWN as exc:
            if owner.ready.is_set():  # it was working: a new outage starts
                owner.failures, backoff = 0, _BACKOFF_MIN
            owner.failures += 1
            now = time.monotonic()
            if owner.failures == 1 or now - last_log > _LOG_EVERY:
                last_log = now
                logger.warning(
                    "%s disconnected (%s: %s); reconnecting with backoff (attempt %d)",
                    name(), type(exc).__name__, exc, owner.failures,
                )
            else:
                logger.debug("%s: attempt %d failed (%s)", name(), owner.failures, exc)
        except Exception:
            owner.failures += 1
            logger.exception("%s failed unexpectedly; restarting it", name())
        finally:
            owner.ready.clear()
            try:
                pubsub.close()
            except Exception:  # closing a broken connection may fail too
                logger.debug("closing the connection of the %s failed", name(), exc_info=True)
        if not owner.stop.is_set():
            owner.stop.wait(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, _BACKOFF_MAX)
    logger.debug("%s stopped", name())


def messages(pubsub: Any, stop: threading.Event, interval: float, timeout: float) -> Iterator[dict[str, Any]]:
    """The messages of *pubsub* until *stop*; raises ``ConnectionError`` if an idle connection stays silent.

    After *interval* seconds without a message a ``PING`` goes out; no reply
    (any message counts) within ``max(timeout, interval)`` means the
    connection is lost.
    """
    last_seen = time.monotonic()
    ping_sent: float | None = None
    while not stop.is_set():
        message: dict[str, Any] | None = pubsub.get_message(timeout=min(POLL, interval))
        now = time.monotonic()
        if message is None:
            if ping_sent is None:
                if now - last_seen >= interval:
                    pubsub.ping()  # a reply proves the connection alive
                    ping_sent = now
            elif now - ping_sent > max(timeout, interval):
                raise redis_py.exceptions.ConnectionError("no reply to PING on the pub/sub connection")
            continue
        last_seen, ping_sent = now, None
        yield message
