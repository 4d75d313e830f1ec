"""Lua scripts of the Redis managers: each runs atomically in one round trip.

Stream keys hold a *token* ``<node>:<n>`` naming the process (node) that
holds the stream and which registration it is, or a tombstone ``-<token>``
left by a ``delete`` from another node until the owner has closed the
stream. Scripts derive channel and per-URI key names from the prefix, so
they need a single Redis (standalone or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

# -- streams -----------------------------------------------------------------

#: Claim a stream key for a new registration. KEYS: stream key.
#: ARGV: token, node, ttl ms. Returns 1, or 0 if a live stream of another node holds it.
STREAM_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v and string.byte(v, 1) ~= 45 and string.match(v, '^[^:]*') ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

#: Heartbeat of one batch. KEYS: stream keys. ARGV: ttl ms, then one token per key.
#: Per key: 1 = refreshed (or re-created after Redis lost it), 0 = deleted
#: elsewhere (tombstone) or taken over by another node: close the local stream.
STREAM_REFRESH = """
local out = {}
for i, key in ipairs(KEYS) do
  local token = ARGV[i + 1]
  local v = redis.call('GET', key)
  if v == token then
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = 1
  elseif not v then
    redis.call('SET', key, token, 'PX', ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

#: Forget ended streams. KEYS: stream keys. ARGV: one token per key. Deletes a
#: key only if it still holds that token (or its tombstone), never a newer stream.
STREAM_FORGET = """
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[i] or v == '-' .. ARGV[i] then
    redis.call('DEL', key)
  end
end
return 0
"""

#: Delete a stream wherever it is. KEYS: stream key. ARGV: this node, node
#: channel prefix, session id, tombstone ttl ms. A stream of this node is simply
#: deleted (the caller closed it); another node's is replaced by a tombstone
#: (``has`` is false at once) and its owner told to close it.
STREAM_DELETE = """
local v = redis.call('GET', KEYS[1])
if not v or string.byte(v, 1) == 45 then
  return 0
end
local node = string.match(v, '^[^:]*')
if node == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('SET', KEYS[1], '-' .. v, 'PX', ARGV[4])
redis.call('PUBLISH', ARGV[2] .. node, 'd ' .. ARGV[3] .. ' ' .. v)
return 2
"""

#: Targeted send. KEYS: stream keys. ARGV: node channel prefix, data, then one
#: session id per key. One PUBLISH per owning node, carrying its ids and the data.
STREAM_SEND = """
local groups, order = {}, {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v and string.byte(v, 1) ~= 45 then
    local node = string.match(v, '^[^:]*')
    local ids = groups[node]
    if not ids then
      ids = {}
      groups[node] = ids
      order[#order + 1] = node
    end
    ids[#ids + 1] = ARGV[i + 2]
  end
end
for _, node in ipairs(order) do
  redis.call('PUBLISH', ARGV[1] .. node, 'm ' .. table.concat(groups[node], ' ') .. '\\n' .. ARGV[2])
end
return #order
"""

# -- info --------------------------------------------------------------------
# Every info script gets KEYS[1] = session hash, KEYS[2] = its set of URIs,
# ARGV[1] = per-URI key prefix, ARGV[2] = session ttl in ms.

#: Refresh the expiry of a session, its URI index and the subscriber set of
#: each of its URIs, so a subscriber set lives as long as its longest-lived
#: subscriber.
_TOUCH = """
local function touch()
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if redis.call('PEXPIRE', KEYS[2], ARGV[2]) == 1 then
    for _, uri in ipairs(redis.call('SMEMBERS', KEYS[2])) do
      redis.call('PEXPIRE', ARGV[1] .. uri, ARGV[2])
    end
  end
end
"""

#: ARGV[3..]: field, value pairs (always including the ``created`` marker).
#: Returns 0 if the session exists already.
INFO_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

#: Returns 1 (and refreshes the session) if it exists, else 0.
INFO_EXISTS = _TOUCH + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
touch()
return 1
"""

#: Returns every field (flat list), or nil if the session does not exist.
INFO_GET_ALL = _TOUCH + """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return false
end
touch()
return fields
"""

#: ARGV[3]: field. Returns its value, or nil.
INFO_GET_FIELD = _TOUCH + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
touch()
return redis.call('HGET', KEYS[1], ARGV[3])
"""

#: ARGV[3], ARGV[4]: field, value. Returns 0 (nothing written) if the session does not exist.
INFO_SET_FIELD = _TOUCH + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
touch()
return 1
"""

#: KEYS[3]: the URI's subscriber set. ARGV[3], ARGV[4]: uri, session id.
#: Returns 0 if the session does not exist.
INFO_SUBSCRIBE = _TOUCH + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
touch()
return 1
"""

#: KEYS[3]: the URI's subscriber set. ARGV[3], ARGV[4]: uri, session id.
INFO_UNSUBSCRIBE = _TOUCH + """
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('SREM', KEYS[3], ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 1 then
  touch()
end
return 1
"""

#: ARGV[3]: session id. Removes the session from each of its URIs' subscriber
#: sets (through its own index, no scan), then the session and the index.
INFO_DELETE = """
for _, uri in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('SREM', ARGV[1] .. uri, ARGV[3])
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

#: KEYS[1]: the URI's subscriber set. ARGV: session key prefix, index key
#: prefix, uri. Returns the live subscribers; members whose session expired,
#: was deleted, or no longer lists the URI are removed on the way.
INFO_SUBSCRIBERS = """
local live = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('SISMEMBER', ARGV[2] .. sid, ARGV[3]) == 1
      and redis.call('EXISTS', ARGV[1] .. sid) == 1 then
    live[#live + 1] = sid
  else
    redis.call('SREM', KEYS[1], sid)
  end
end
return live
"""
