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
``m``  ``m <sid> <sid>...\\n<data>``          Lua ``wire_targeted``:                  queue *data* on these local streams;
                                             ``STREAM_SEND_MANY``                    :func:`decode_batch`
``e``  ``e <n> <event id> <n> <event id>``   Lua ``wire_stored``:                    a stored message: queue it on each
       ``...\\n<data>``                       ``STREAM_SEND_MANY``                    registration ``<n>`` with its event id;
                                                                                     :func:`decode_batch`
``f``  ``f <n> <entry id>``                  Lua ``wire_live``:                      registration ``<n>`` is live: it takes
                                             ``STREAM_CLAIM_LOGGED``,                the broadcasts stored after that entry;
                                             ``STREAM_RESUME``                       :func:`decode_live`
``c``  ``c <n>``                             Python :func:`encode_catch_up`:         catch registration ``<n>`` up: its ``f``
                                             ``RedisStreamSessionManager.create``    may have been lost;
                                                                                     :func:`decode_catch_up`
``d``  ``d <sid> <token>``                   Lua ``wire_close``: ``STREAM_DELETE``,  close the stream if its token is still
                                             ``STREAM_RESUME``                       *token*; :func:`decode_close`
``r``  ``r <request id> <sid>\\n<reply>``    Lua ``wire_reply``:                     a client's reply to a request of
                                             ``REPLY_DELIVER``                       session *sid* waiting in this node;
                                                                                     :func:`decode_reply`
``x``  ``x``                                 Python :data:`WAKE`: ``Node.shutdown``  nothing: wakes the listener to stop
``b``  ``b <len> <len>...\\n<message>...``   Lua ``wire_node_batch``:                several ``m`` or ``e`` messages, each
                                             ``STREAM_SEND_MANY``                    *len* bytes long, in order;
                                                                                     :func:`messages`
=====  ====================================  ======================================  =======================================

Broadcast channel (``send(None, data)``; no kind character: a message never
starts with a digit or ``*``, an entry id always starts with a digit):

==============================  ===================================================  ===============================
message                         encoder: producers                                   decoder
==============================  ===================================================  ===============================
``<data>``                      none (the data as is): ``STREAM_SEND_MANY`` of a     :func:`decode_broadcast`
                                manager without an event store, any other publisher  (entry id ``None``)
``<entry id>\\n<data>``          Lua ``wire_stored_broadcast``:                       :func:`decode_broadcast`
                                ``STREAM_SEND_MANY`` (with an event store)
``* <len> <len>...\\n<message>``  Lua ``wire_broadcasts``: ``STREAM_SEND_MANY``         :func:`messages`, then
``...``                         (several broadcasts, each one of the two above and   :func:`decode_broadcast`
                                *len* bytes long; also one that starts with ``*``)
==============================  ===================================================  ===============================

Batches (``b``, ``*``): one ``send_many`` publishes each run of consecutive
broadcasts as one message on the broadcast channel, and each run of
consecutive targeted messages as one message per node holding targets (a
lone message is published as itself). Runs are published in batch order,
so every stream still gets its messages in order, and a listener decodes a
batch of K messages at once rather than K pub/sub messages.

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
    "REPLY",
    "STORED",
    "TARGETED",
    "WAKE",
    "decode_batch",
    "decode_broadcast",
    "decode_catch_up",
    "decode_close",
    "decode_live",
    "decode_reply",
    "encode_catch_up",
    "messages",
]

#: The kinds of the node channel's messages (their first character).
TARGETED, STORED, LIVE, CATCH_UP, CLOSE, REPLY = "m", "e", "f", "c", "d", "r"
#: The whole wake-up message (kind ``x``).
WAKE = "x"
#: The first character of a batch: on the node channel, and on the broadcast channel.
NODE_BATCH, BROADCASTS = "b", "*"

#: A batch encoder: the parts as is when there is one that cannot be taken for a batch, else the batch.
_BATCH_ENCODER = """local function {name}(parts)
  if #parts == 1 and string.byte(parts[1], 1) ~= {kind_byte} then
    return parts[1]
  end
  local lengths = {{}}
  for i, part in ipairs(parts) do
    lengths[i] = #part
  end
  return '{kind} ' .. table.concat(lengths, ' ') .. '\\n' .. table.concat(parts)
end
"""

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
    "wire_reply": f"""local function wire_reply(request_id, sid, reply)
  return '{REPLY} ' .. request_id .. ' ' .. sid .. '\\n' .. reply
end
""",
    "wire_stored_broadcast": """local function wire_stored_broadcast(entry_id, data)
  return entry_id .. '\\n' .. data
end
""",
    **{
        name: _BATCH_ENCODER.format(name=name, kind=kind, kind_byte=ord(kind))
        for name, kind in (("wire_node_batch", NODE_BATCH), ("wire_broadcasts", BROADCASTS))
    },
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


def decode_reply(payload: str) -> tuple[str, str, str]:
    """``r``: the request id, the session id (the rest of the line: it may hold spaces) and the reply."""
    head, _, reply = payload.partition("\n")
    _, request_id, session_id = head.split(" ", 2)
    return request_id, session_id, reply


def decode_broadcast(payload: str) -> tuple[str | None, str]:
    """A broadcast: its entry id in the event store's broadcast log (``None``: not stored) and the data."""
    header = _STORED_BROADCAST.match(payload)
    if header is None:
        return None, payload
    return header.group(1), payload[header.end() :]


def messages(payload: bytes | str, batch_kind: str) -> list[str]:
    """The messages a pub/sub payload carries: those of a batch of *batch_kind* (``b``, ``*``), else itself.

    Lengths are in bytes (Lua's), so a batch is split as bytes. A broadcast
    from another publisher that only looks like a batch (``*`` then
    something else) is taken as itself.
    """
    head = batch_kind + " "
    if payload[:2] == (head.encode() if isinstance(payload, bytes) else head):
        raw = payload if isinstance(payload, bytes) else payload.encode("utf-8")
        header, newline, body = raw.partition(b"\n")
        try:
            lengths = [int(length) for length in header[2:].split(b" ")]
        except ValueError:
            lengths = []
        if newline and lengths and sum(lengths) == len(body) and min(lengths) >= 0:
            parts, start = [], 0
            for length in lengths:
                parts.append(body[start : start + length].decode("utf-8"))
                start += length
            return parts
    return [payload.decode("utf-8") if isinstance(payload, bytes) else payload]
