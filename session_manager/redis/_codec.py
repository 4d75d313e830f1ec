"""The pub/sub messages of the Redis stream manager: one codec, in both languages.

Each process (a *node*, :mod:`._node`) of a
:class:`~session_manager.redis.RedisStreamSessionManager` listens on two
channels (names in :mod:`._keys`): its own ``node:<node>`` and the shared
``broadcast``. Every message on them is built by an encoder below, in Python
or in Lua (:data:`LUA`: :mod:`._scripts` includes the encoders a script
calls), and read by the decoder of its kind, here. On the node channel the
first character is the kind.

Node channel (``<node>:<n>`` is the token of registration ``<n>`` of the node):

=====  ====================================  ======================================  =======================================
kind   message                               encoder: producers                      means, decoder
=====  ====================================  ======================================  =======================================
``m``  ``m <sid> <sid>...\\n<data>``          Lua ``wire_targeted``: ``STREAM_SEND``  queue *data* on these local streams;
                                                                                     :func:`decode_batch`
``e``  ``e <n> <event id> <n> <event id>``   Lua ``wire_stored``:                    a stored message: queue it on each
       ``...\\n<data>``                       ``STREAM_SEND_LOGGED``                  registration ``<n>`` with its event id;
                                                                                     :func:`decode_batch`
``f``  ``f <n> <entry id>``                  Lua ``wire_live``:                      registration ``<n>`` is live: it takes
                                             ``STREAM_CLAIM_LOGGED``,                the broadcasts stored after that entry;
                                             ``STREAM_RESUME``                       :func:`decode_live`
``c``  ``c <n>``                             Python :func:`encode_catch_up`:         catch registration ``<n>`` up: its ``f``
                                             ``RedisStreamSessionManager.create``    may have been lost;
                                                                                     :func:`decode_catch_up`
``d``  ``d <sid> <token>``                   Lua ``wire_close``: ``STREAM_DELETE``,  close the stream if its token is still
                                             ``STREAM_RESUME``                       *token*; :func:`decode_close`
``x``  ``x``                                 Python :data:`WAKE`: ``Node.shutdown``  nothing: wakes the listener to stop
=====  ====================================  ======================================  =======================================

Broadcast channel (``send(None, data)``; no kind character: a message never
starts with a digit, an entry id always does):

==============================  ===================================================  ===============================
message                         encoder: producers                                   decoder
==============================  ===================================================  ===============================
``<data>``                      none (the data as is): ``send(None, data)`` of a     :func:`decode_broadcast`
                                manager without an event store, any other publisher  (entry id ``None``)
``<entry id>\\n<data>``          Lua ``wire_stored_broadcast``:                       :func:`decode_broadcast`
                                ``STREAM_BROADCAST_LOGGED``
==============================  ===================================================  ===============================

The listener decodes every message it receives, so the decoders are plain
slicing and splitting, with no validation beyond what delivery needs: only
the scripts and this module produce them.
"""

from __future__ import annotations

import re

__all__ = [
    "CATCH_UP",
    "CLOSE",
    "LIVE",
    "LUA",
    "STORED",
    "TARGETED",
    "WAKE",
    "decode_batch",
    "decode_broadcast",
    "decode_catch_up",
    "decode_close",
    "decode_live",
    "encode_catch_up",
]

#: The kinds of the node channel's messages (their first character).
TARGETED, STORED, LIVE, CATCH_UP, CLOSE = "m", "e", "f", "c", "d"
#: The whole wake-up message (kind ``x``).
WAKE = "x"

#: Lua function name -> its definition: the encoders of the messages the scripts publish.
LUA: dict[str, str] = {
    "wire_targeted": f"""local function wire_targeted(sids, data)
  return '{TARGETED} ' .. table.concat(sids, ' ') .. '\\n' .. data
end
""",
    "wire_stored": f"""local function wire_stored(items, data)  -- items: n, event id, n, event id...
  return '{STORED} ' .. table.concat(items, ' ') .. '\\n' .. data
end
""",
    "wire_live": f"""local function wire_live(n, entry_id)
  return '{LIVE} ' .. n .. ' ' .. entry_id
end
""",
    "wire_close": f"""local function wire_close(sid, token)
  return '{CLOSE} ' .. sid .. ' ' .. token
end
""",
    "wire_stored_broadcast": """local function wire_stored_broadcast(entry_id, data)
  return entry_id .. '\\n' .. data
end
""",
}

#: The head of a stored broadcast: its entry id.
_STORED_BROADCAST = re.compile(r"([0-9]{1,20}-[0-9]{1,20})\n")


def encode_catch_up(number: str) -> str:
    return f"{CATCH_UP} {number}"


def decode_batch(payload: str) -> tuple[list[str], str]:
    """``m`` and ``e``: the items (session ids; or registration numbers and event ids, alternating) and the data."""
    head, _, data = payload.partition("\n")
    return head[2:].split(" "), data


def decode_live(payload: str) -> tuple[str, str]:
    """``f``: the registration number and the entry id it is live from."""
    _, number, entry_id = payload.split(" ", 2)
    return number, entry_id


def decode_catch_up(payload: str) -> str:
    """``c``: the registration number."""
    return payload[2:]


def decode_close(payload: str) -> tuple[str, str]:
    """``d``: the session id and the token of the stream to close."""
    _, session_id, token = payload.split(" ", 2)
    return session_id, token


def decode_broadcast(payload: str) -> tuple[str | None, str]:
    """A broadcast: its entry id in the event store's broadcast log (``None``: not stored) and the data."""
    header = _STORED_BROADCAST.match(payload)
    if header is None:
        return None, payload
    return header.group(1), payload[header.end() :]
