"""Lua scripts of the Redis managers: each runs atomically in one round trip.

Names: a script gets the keys Python can name as ``KEYS`` and builds any
other key with the ``key_<name>()`` builders of :mod:`._keys` (one layout,
defined there), from a prefix it gets as an argument. Messages: a script
publishes only what the ``wire_<kind>()`` encoders of :mod:`._codec` build
(one codec, decoded there too). :func:`_script` puts the builders and
encoders a script calls in front of it.

Stream keys hold a *token* ``<node>:<n>`` naming the process (node) that
holds the stream and which registration it is, or a tombstone ``-<token>``
left by a ``delete`` from another node until the owner has closed the
stream. Scripts build names from a prefix, so they need a single Redis
(standalone or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

import re

from . import _codec, _keys

_LIBRARY: dict[str, str] = {**_keys.LUA, **_codec.LUA}
_NAME = re.compile(r"\b(?:key|wire)_[a-z_]+\b")


def _script(*chunks: str) -> str:
    """Join *chunks* into one script, after the key builders and message encoders they use."""
    body = "".join(chunks)
    used = sorted(set(_NAME.findall(body)))
    unknown = [name for name in used if name not in _LIBRARY]
    assert not unknown, f"no Lua builder or encoder named {unknown}"
    return "".join(_LIBRARY[name] for name in used) + body


# -- shared secrets -------------------------------------------------------------

#: The secret named by KEYS[1], set to ARGV[1] if there is none yet: the first process's wins.
INFO_SHARED_SECRET = _script("""
local v = redis.call('GET', KEYS[1])
if v then
  return v
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
""")


#: Claim a token once. KEYS: its claim key. ARGV: ttl ms. 1 the first time, 0 while it is claimed.
INFO_CLAIM = _script("""
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 1
end
return 0
""")


# -- replies to server-to-client requests ---------------------------------------

#: Hand a client's reply to the node whose handler waits for it, at most once.
#: KEYS: the request's reply key (holding the waiting node). ARGV: node channel
#: head, request id, session id, reply, the calling node. Returns 0 if nothing
#: waits (unknown, answered, expired) or its node's listener got nothing, 2 if the
#: caller's node waits (it hands the reply over itself), 1 once the waiting node
#: has it.
REPLY_DELIVER = _script("""
local node = redis.call('GET', KEYS[1])
if not node then
  return 0
end
redis.call('DEL', KEYS[1])
if node == ARGV[5] then
  return 2
end
if redis.call('PUBLISH', ARGV[1] .. node, wire_reply(ARGV[2], ARGV[3], ARGV[4])) == 0 then
  return 0  -- its node's listener is not subscribed (reconnecting, or the process died): nobody got it
end
return 1
""")


# -- streams -----------------------------------------------------------------

#: Forget ended streams. KEYS: stream keys. ARGV: one token per key. Deletes a
#: key only if it still holds that token (or its tombstone), never a newer stream.
STREAM_FORGET = _script("""
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == ARGV[i] or v == '-' .. ARGV[i] then
    redis.call('DEL', key)
  end
end
return 0
""")

#: Delete a stream wherever it is. KEYS: stream key. ARGV: this node, node
#: channel head, session id, tombstone ttl ms. A stream of this node is simply
#: deleted (the caller closed it); another node's is replaced by a tombstone
#: (``has`` is false at once) and its owner told to close it.
STREAM_DELETE = _script("""
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
redis.call('PUBLISH', ARGV[2] .. node, wire_close(ARGV[3], v))
return 2
""")

# -- info --------------------------------------------------------------------
# Every info script gets KEYS[1] = session hash, KEYS[2] = its set of URIs,
# ARGV[1] = prefix, ARGV[2] = session ttl in ms, ARGV[3] = session id; its own
# arguments start at ARGV[4].
#
# Session caps count live sessions in sorted sets scored by each session's
# expiry (Redis server time, ms): ``live-sessions`` holds every session,
# ``live-sessions:<principal>`` those created with a quota naming the
# principal (the session hash keeps it as ``principal``). Keys expire with no
# hook, so a count is the members scored after now (ZCOUNT, O(log n)); each
# create also forgets up to 64 expired members, and a set expires with its
# longest-lived member. Where a session's TTL is refreshed its score is too.
# These two names belong in ``_keys.LAYOUT``; they are here until they move.
_LIBRARY.update(
    (f"key_{name}", _keys._lua_builder(name, template))
    for name, template in {"live_sessions": "live-sessions", "principal_sessions": "live-sessions:{principal}"}.items()
)

#: Refresh the expiry of a session (prefix *p*), its URI index and the
#: subscriber set of each of its URIs, so a subscriber set lives as long as
#: its longest-lived subscriber; and, never shortening them, the event logs a
#: RedisEventStore on the same prefix keeps for the session (and the store's
#: shared keys), so a session in use keeps what a resume needs; and its
#: place in the counts of session caps.
_TOUCH_SESSION = """
local function extend(key, ttl)
  if redis.call('PTTL', key) < tonumber(ttl) then
    redis.call('PEXPIRE', key, ttl)
  end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Count session *sid* (of *principal*, or nil) as live until *ttl* ms after *now*.
local function count_live(p, sid, principal, now, ttl)
  local sets = {key_live_sessions(p)}
  if principal then
    sets[2] = key_principal_sessions(p, principal)
  end
  for _, set in ipairs(sets) do
    redis.call('ZADD', set, string.format('%d', now + tonumber(ttl)), sid)
    extend(set, ttl)
  end
end

local function touch_session(p, sid, ttl)
  local index = key_session_uris(p, sid)
  if redis.call('PEXPIRE', key_session(p, sid), ttl) == 1 then
    count_live(p, sid, redis.call('HGET', key_session(p, sid), 'principal') or nil, now_ms(), ttl)
  end
  if redis.call('PEXPIRE', index, ttl) == 1 then
    for _, uri in ipairs(redis.call('SMEMBERS', index)) do
      redis.call('PEXPIRE', key_uri(p, uri), ttl)
    end
  end
  local logs = key_event_index(p, sid)
  if redis.call('EXISTS', logs) == 1 then
    extend(logs, ttl)
    for _, stream in ipairs(redis.call('HKEYS', logs)) do
      extend(key_event_log(p, stream, sid), ttl)
      extend(key_event_sizes(p, stream, sid), ttl)
    end
    extend(key_broadcast_log(p), ttl)
    extend(key_broadcast_sizes(p), ttl)
    extend(key_event_clock(p), ttl)
  end
end
"""

_TOUCH = _TOUCH_SESSION + """
local function touch()
  touch_session(ARGV[1], ARGV[3], ARGV[2])
end
"""

#: ARGV[4]: '1' if the session counts for a principal, ARGV[5]: the principal;
#: ARGV[6], ARGV[7]: the caps of the server and of the principal (0: none);
#: ARGV[8..]: field, value pairs (always including the ``created`` marker).
#: Returns 1 once created, 0 if the session exists already, or, past a cap
#: (nothing created), {scope, ms until the oldest counted session expires}.
INFO_CREATE = _script(_TOUCH_SESSION, """
-- The live members of a count (forgetting up to 64 expired ones on the way).
local function live(set, now)
  local expired = redis.call('ZCOUNT', set, '-inf', string.format('%d', now))
  if expired > 0 then
    redis.call('ZREMRANGEBYRANK', set, 0, math.min(expired, 64) - 1)
  end
  return redis.call('ZCOUNT', set, string.format('(%d', now), '+inf')
end

-- {scope, ms until the oldest live member expires} if the count is at its cap (0: none), else false.
local function over(set, cap, now, scope)
  if live(set, now) < cap or cap == 0 then
    return false
  end
  local oldest = redis.call('ZRANGEBYSCORE', set, string.format('(%d', now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return {scope, tonumber(oldest[2]) - now}
end

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local p, sid, ttl = ARGV[1], ARGV[3], ARGV[2]
local principal = ARGV[4] == '1' and ARGV[5] or nil
local now = now_ms()
local full = over(key_live_sessions(p), tonumber(ARGV[6]), now, 'server')
if not full and principal then
  full = over(key_principal_sessions(p, principal), tonumber(ARGV[7]), now, 'principal')
end
if full then
  return full
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
if principal then
  redis.call('HSET', KEYS[1], 'principal', principal)
end
redis.call('PEXPIRE', KEYS[1], ttl)
count_live(p, sid, principal, now, ttl)
return 1
""")

#: Returns 1 (and refreshes the session) if it exists, else 0.
INFO_EXISTS = _script(_TOUCH, """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
touch()
return 1
""")

#: Returns every field (flat list), or nil if the session does not exist.
INFO_GET_ALL = _script(_TOUCH, """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return false
end
touch()
return fields
""")

#: ARGV[4]: field. Returns its value, or nil.
INFO_GET_FIELD = _script(_TOUCH, """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
touch()
return redis.call('HGET', KEYS[1], ARGV[4])
""")

#: ARGV[4], ARGV[5]: field, value. Returns 0 (nothing written) if the session does not exist.
INFO_SET_FIELD = _script(_TOUCH, """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
touch()
return 1
""")

#: KEYS[3]: the URI's subscriber set. ARGV[4]: uri.
#: Returns 0 if the session does not exist.
INFO_SUBSCRIBE = _script(_TOUCH, """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[3])
touch()
return 1
""")

#: KEYS[3]: the URI's subscriber set. ARGV[4]: uri.
INFO_UNSUBSCRIBE = _script(_TOUCH, """
redis.call('SREM', KEYS[2], ARGV[4])
redis.call('SREM', KEYS[3], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 then
  touch()
end
return 1
""")

#: Removes the session from each of its URIs' subscriber sets (through its
#: own index, no scan) and from the counts of session caps, then the session
#: and the index.
INFO_DELETE = _script("""
for _, uri in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('SREM', key_uri(ARGV[1], uri), ARGV[3])
end
local principal = redis.call('HGET', KEYS[1], 'principal')
redis.call('ZREM', key_live_sessions(ARGV[1]), ARGV[3])
if principal then
  redis.call('ZREM', key_principal_sessions(ARGV[1], principal), ARGV[3])
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
""")

#: KEYS[1]: the URI's subscriber set. ARGV: prefix, uri. Returns the live
#: subscribers; members whose session expired, was deleted, or no longer
#: lists the URI are removed on the way.
INFO_SUBSCRIBERS = _script("""
local live = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('SISMEMBER', key_session_uris(ARGV[1], sid), ARGV[2]) == 1
      and redis.call('EXISTS', key_session(ARGV[1], sid)) == 1 then
    live[#live + 1] = sid
  else
    redis.call('SREM', KEYS[1], sid)
  end
end
return live
""")

# -- event logs --------------------------------------------------------------
# The keys of a store with prefix P are in _keys (``events:<sid>``,
# ``event-log:<stream>:<sid>``, ``event-log:broadcast``, ``events-clock``, and
# the size keys ``event-sizes:<stream>:<sid>``, ``event-sizes:broadcast``).
# Entry ids come from that one clock (``<ms>-<seq>``, never below the server
# time), so an id is unique across the store's logs, except that a message
# sent to many sessions at once has the same id in each. The broadcast log is
# created with the first GET log (again with the next GET stream opened, if
# Redis lost it: a GET log without it has lost broadcasts, so its ids are
# unknown) and refreshed with every GET log (never by a broadcast), so it lives
# exactly as long as the longest-lived GET log; the clock is refreshed with
# every log, so it outlives them. Every script using them gets ARGV[1..4] = P,
# the log bounds ('<max events> <max bytes> <short>'), ttl ms, max POST logs
# (P = '' when there is no store); its own arguments start at ARGV[5].
#
# Byte bound: a message of more than <short> bytes is *long*. A log holding
# long messages has a size key (its broadcast log's too), a sorted set: the
# entry id of each long message scored by the running total of the log's long
# bytes up to it, after a marker scored by the total dropped so far and named
# 't' before any drop, then 't<id> <next>': <id> the newest entry dropped for
# the bound, <next> the entry that followed it ('' if trimming by count had
# dropped <id> already). The log's long messages hold the newest score minus
# the marker's; past <max bytes> the oldest go, with every entry before them
# (XTRIM MINID, so the log's first entry moves as with trimming by count),
# never the newest. A short message costs no command more while its log has
# no long one. A size key is refreshed and deleted with its log.

_EVENTS = """
local EV = {p = ARGV[1], ttl = ARGV[3], streams = tonumber(ARGV[4])}
EV.max, EV.bytes, EV.short = string.match(ARGV[2], '^(%d+) (%d+) (%d+)$')  -- no match without a store
EV.bytes, EV.short = tonumber(EV.bytes), tonumber(EV.short)
local function ev_is_get(stream) return string.byte(stream, 1) == 103 end

local function ev_split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function ev_less(a, b)
  local a_ms, a_seq = ev_split(a)
  local b_ms, b_seq = ev_split(b)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end

-- A new entry id, above every id issued before (even if the server time went back).
local function ev_next_id()
  local clock = key_event_clock(EV.p)
  local now = redis.call('TIME')
  local ms, seq = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), 0
  local last = redis.call('GET', clock)
  if last then
    local last_ms, last_seq = ev_split(last)
    if last_ms >= ms then
      ms, seq = last_ms, last_seq + 1
    end
  end
  local id = string.format('%.0f-%.0f', ms, seq)
  redis.call('SET', clock, id, 'PX', EV.ttl)
  EV.clocked = true  -- refreshed: ev_touch need not
  return id
end

-- Refresh the session's index and the given logs (and the broadcast log with a GET log); with
-- *sized*, their size keys too (an append refreshes its log's itself, if there is one). The
-- store's shared keys once per script: the clock (unless it just issued an id), the broadcast
-- log and its size key.
local function ev_touch(sid, streams, sized)
  if not EV.clocked then
    redis.call('PEXPIRE', key_event_clock(EV.p), EV.ttl)
    EV.clocked = true
  end
  redis.call('PEXPIRE', key_event_index(EV.p, sid), EV.ttl)
  for _, stream in ipairs(streams) do
    redis.call('PEXPIRE', key_event_log(EV.p, stream, sid), EV.ttl)
    if sized then
      redis.call('PEXPIRE', key_event_sizes(EV.p, stream, sid), EV.ttl)
    end
    if ev_is_get(stream) and not EV.shared_touched then
      redis.call('PEXPIRE', key_broadcast_log(EV.p), EV.ttl)
      redis.call('PEXPIRE', key_broadcast_sizes(EV.p), EV.ttl)
      EV.shared_touched = true
    end
  end
end

-- The id of the newest entry of a log (false if there is none).
local function ev_latest(key)
  local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  return newest and newest[1]
end

-- Open (or find) a log; return the event id of its latest entry (for a GET
-- log, the latest of its own and of the broadcast log).
local function ev_open(sid, stream)
  local key = key_event_log(EV.p, stream, sid)
  local id
  if redis.call('EXISTS', key) == 1 then
    id = ev_latest(key)
  else
    redis.call('DEL', key_event_sizes(EV.p, stream, sid))  -- one left by a log Redis lost is not this log's
    id = redis.call('XADD', key, 'MAXLEN', '~', EV.max, ev_next_id(), 'o', '')
    local index = key_event_index(EV.p, sid)
    redis.call('HSET', index, stream, id)
    if not ev_is_get(stream) then  -- forget the oldest POST logs beyond the bound (opening ids follow opening order)
      local logs, posts = redis.call('HGETALL', index), {}
      for i = 1, #logs, 2 do
        if not ev_is_get(logs[i]) then
          posts[#posts + 1] = {logs[i], logs[i + 1]}
        end
      end
      if #posts > EV.streams then
        table.sort(posts, function(a, b) return ev_less(a[2], b[2]) end)
        for i = 1, #posts - EV.streams do
          redis.call('DEL', key_event_log(EV.p, posts[i][1], sid), key_event_sizes(EV.p, posts[i][1], sid))
          redis.call('HDEL', index, posts[i][1])
        end
      end
    end
  end
  if ev_is_get(stream) then
    local broadcasts = key_broadcast_log(EV.p)
    local shared = ev_latest(broadcasts)
    if not shared then  -- the first GET log (or Redis lost the broadcast log): start it
      redis.call('DEL', key_broadcast_sizes(EV.p))
      redis.call('XADD', broadcasts, id, 'o', '')
      EV.shared_touched = nil  -- a new key: ev_touch refreshes it
    elseif ev_less(id, shared) then
      id = shared
    end
  end
  ev_touch(sid, {stream}, true)
  return stream .. '.' .. id
end

-- A long message (entry *id*, *size* bytes) went onto log *key*: count it in
-- the log's size key (*fresh*: none yet), then drop the oldest long messages,
-- and every entry before them, while the long ones hold more than EV.bytes;
-- never the newest (see the byte bound above).
local function ev_bound(key, sizes, id, size, fresh)
  local total = size
  if fresh then
    redis.call('ZADD', sizes, 0, 't', string.format('%.0f', total), id)
  else
    total = total + tonumber(redis.call('ZRANGE', sizes, -1, -1, 'WITHSCORES')[2])
    redis.call('ZADD', sizes, string.format('%.0f', total), id)
  end
  if total <= EV.bytes then  -- (the marker's score is never negative)
    return
  end
  -- Drop through the oldest long message whose drop leaves at most EV.bytes (the marker: none).
  local cut = redis.call(
    'ZRANGEBYSCORE', sizes, string.format('%.0f', total - EV.bytes), '+inf', 'WITHSCORES', 'LIMIT', 0, 2)
  local last, score, next_long = cut[1], cut[2], cut[3]
  if last == id then  -- the newest alone holds more: drop every other
    cut = redis.call('ZREVRANGE', sizes, 1, 1, 'WITHSCORES')
    last, score, next_long = cut[1], cut[2], id
  end
  if string.byte(last, 1) == 116 then  -- 't': the marker, nothing to drop
    return
  end
  redis.call('ZREMRANGEBYSCORE', sizes, '-inf', score)
  local ms, seq = ev_split(last)
  local after = ''
  if redis.call('XTRIM', key, 'MINID', string.format('%.0f-%.0f', ms, seq + 1)) > 0 then
    -- *last* was still there, so what followed it is the log's first entry now: a short one
    -- before next_long, or next_long itself (not read: it may be large)
    local short = redis.call('XRANGE', key, '-', '(' .. next_long, 'COUNT', 1)[1]
    after = short and short[1] or next_long
  end
  redis.call('ZADD', sizes, score, 't' .. last .. ' ' .. after)
end

-- Store a message on an existing log; its event id, or false if there is no
-- log. Every log a script stores one message on gets the same entry id
-- (*shared*.id, taken from the clock at the first one). A long message is
-- counted in the log's size key, which an append refreshes if there is one.
local function ev_append(sid, stream, message, shared)
  local key, sizes = key_event_log(EV.p, stream, sid), key_event_sizes(EV.p, stream, sid)
  local found = redis.call('EXISTS', key, key, sizes)  -- a key named twice counts twice: 2 the log, 3 with its size key
  if found < 2 then
    return false
  end
  shared.id = shared.id or ev_next_id()
  redis.call('XADD', key, 'MAXLEN', '~', EV.max, shared.id, 'm', message)
  local long = #message > EV.short
  if long then
    ev_bound(key, sizes, shared.id, #message, found == 2)
  end
  if long or found == 3 then
    redis.call('PEXPIRE', sizes, EV.ttl)
  end
  return stream .. '.' .. shared.id
end

-- Store a broadcast once, on the shared log; its entry id, or false if no GET
-- log lives (the broadcast log goes with the last of them): nobody to reach.
-- A long one is counted in the log's size key, which lives as long as the log
-- (refreshed with it by ev_touch, never by a broadcast).
local function ev_broadcast(message)
  local key, sizes = key_broadcast_log(EV.p), key_broadcast_sizes(EV.p)
  local found = redis.call('EXISTS', key, key, sizes)  -- as in ev_append
  if found < 2 then
    return false
  end
  local id = ev_next_id()
  redis.call('XADD', key, 'MAXLEN', '~', EV.max, id, 'm', message)
  if #message > EV.short then
    ev_bound(key, sizes, id, #message, found == 2)
    local left = found == 2 and redis.call('PTTL', key)
    if left and left > 0 then
      redis.call('PEXPIRE', sizes, left)
    end
  end
  return id
end

-- The newest entry a log dropped for its byte bound and the entry that followed
-- it (its size key's marker), or nothing.
local function ev_trimmed(sizes)
  local marker = redis.call('ZRANGE', sizes, 0, 0)[1]
  if marker then
    return string.match(marker, '^t(%S+) (%S+)$')
  end
end

-- Whether a log (with size key *sizes*) still holds every entry after *pos*:
-- trimming drops the oldest entries first, so it does if its oldest kept entry
-- is at or before *pos*, or is its opening marker (nothing was ever dropped),
-- or the newest entry dropped for the byte bound is at or before *pos* and
-- the log still starts with the entry that followed it. A missing log holds
-- nothing.
local function ev_complete(key, sizes, pos)
  local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
  if not first or first[2][1] == 'o' or not ev_less(pos, first[1]) then
    return true
  end
  local dropped, after = ev_trimmed(sizes)
  return dropped ~= nil and not ev_less(pos, dropped) and first[1] == after
end

-- Whether *pos* is an entry of a log, or the newest it dropped for its byte bound.
local function ev_holds(key, sizes, pos)
  return #redis.call('XRANGE', key, pos, pos) > 0 or ev_trimmed(sizes) == pos
end

-- Append {event id, message} of the ``m`` entries of a log after *pos* to *out*.
local function ev_collect(out, key, pos)
  for _, entry in ipairs(redis.call('XRANGE', key, '(' .. pos, '+')) do
    if entry[2][1] == 'm' then
      out[#out + 1] = {entry[1], entry[2][2]}
    end
  end
end

-- The events after entry *pos*: {id, message, ...}, or 'unknown' / 'expired'.
-- A GET stream's replay merges its own log with the broadcast log, in entry-id
-- order (pos is never before the log's opening, so only broadcasts sent while
-- the log existed). 'expired': either log may have dropped entries after pos;
-- 'unknown': pos is before the log's opening, or is neither the opening, nor
-- an entry of the log (kept, or the newest dropped for the byte bound), nor
-- (GET) such a broadcast after the opening; or a log is
-- gone (the broadcast log lives as long as any GET log: without it, Redis
-- lost data, and broadcasts sent meanwhile reached nobody).
local function ev_replay(sid, stream, pos)
  local key = key_event_log(EV.p, stream, sid)
  local opened = redis.call('HGET', key_event_index(EV.p, sid), stream)
  local get = ev_is_get(stream)
  local shared = key_broadcast_log(EV.p)
  if not opened or redis.call('EXISTS', key, get and shared or key) < 2 or ev_less(pos, opened) then
    return 'unknown'
  end
  local sizes, shared_sizes = key_event_sizes(EV.p, stream, sid), key_broadcast_sizes(EV.p)
  if not ev_complete(key, sizes, pos) or (get and not ev_complete(shared, shared_sizes, pos)) then
    return 'expired'
  end
  if pos ~= opened and not ev_holds(key, sizes, pos) and not (get and ev_holds(shared, shared_sizes, pos)) then
    return 'unknown'
  end
  local own, others = {}, {}
  ev_collect(own, key, pos)
  if get then
    ev_collect(others, shared, pos)
  end
  local out, i, j = {}, 1, 1
  while own[i] or others[j] do
    local entry
    if not others[j] or (own[i] and ev_less(own[i][1], others[j][1])) then
      entry, i = own[i], i + 1
    else
      entry, j = others[j], j + 1
    end
    out[#out + 1] = stream .. '.' .. entry[1]
    out[#out + 1] = entry[2]
  end
  ev_touch(sid, {stream}, true)
  return out
end
"""

#: ARGV[5], ARGV[6]: session id, stream id. Returns the priming event id.
EVENTS_OPEN = _script(_EVENTS, """
return ev_open(ARGV[5], ARGV[6])
""")

#: ARGV[5..7]: session id, stream id, message. Returns the event id, or nil without a log.
EVENTS_APPEND = _script(_EVENTS, """
local id = ev_append(ARGV[5], ARGV[6], ARGV[7], {})
if id then
  ev_touch(ARGV[5], {ARGV[6]})
end
return id
""")

#: ARGV[5..7]: session id, stream id, position. Returns {id, message, ...} or an error word.
EVENTS_REPLAY = _script(_EVENTS, """
return ev_replay(ARGV[5], ARGV[6], ARGV[7])
""")

#: ARGV[5]: session id. Deletes every log of the session.
EVENTS_DELETE = _script(_EVENTS, """
local sid = ARGV[5]
local index = key_event_index(EV.p, sid)
for _, stream in ipairs(redis.call('HKEYS', index)) do
  redis.call('DEL', key_event_log(EV.p, stream, sid), key_event_sizes(EV.p, stream, sid))
end
redis.call('DEL', index)
return 1
""")

# -- streams with and without event logs --------------------------------------

#: claim(): take a stream key for a new registration, unless a live stream of
#: another node holds it. routes()/route(): group one message's items per
#: owning node (in ``groups``, the nodes in ``order``); with *tagged* an item is
#: preceded by the registration number (``<n>`` of ``<node>:<n>``).
_STREAMS = """
local function claim(key, token, node, ttl)
  local v = redis.call('GET', key)
  if v and string.byte(v, 1) ~= 45 and string.match(v, '^[^:]*') ~= node then
    return false
  end
  redis.call('SET', key, token, 'PX', ttl)
  return true
end

local function routes()
  return {groups = {}, order = {}}
end

local function route(r, v, item, tagged)
  if not v or string.byte(v, 1) == 45 then
    return
  end
  local node, n = string.match(v, '^([^:]*):(.*)$')
  local items = r.groups[node]
  if not items then
    items = {}
    r.groups[node] = items
    r.order[#r.order + 1] = node
  end
  if tagged then
    items[#items + 1] = n
  end
  items[#items + 1] = item
end

"""

#: Claim a stream key for a new registration. KEYS: stream key.
#: ARGV: token, node, ttl ms. Returns 1, or 0 if a live stream of another node holds it.
STREAM_CLAIM = _script(_STREAMS, """
return claim(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) and 1 or 0
""")

#: Tell the listener a registration is live from *floor* on: ``f <n> <entry id>``
#: on the node channel, in the script that makes the stream key name it. The
#: listener queues broadcasts on a registration only after this message (and
#: with ids above the floor): those published earlier are in its replay, or
#: were before its priming id, or came before the session's log.
_LIVE = """
local function live(channel_head, node, token, event_id)
  local n = string.match(token, ':(.*)$')
  redis.call('PUBLISH', channel_head .. node, wire_live(n, string.match(event_id, '[^.]*$')))
end
"""

#: Claim a stream key and open the session's GET log. KEYS: stream key.
#: ARGV[5..10]: token, node, ttl ms, session id, GET stream id, node channel
#: head. Returns the priming event id, or nil if a live stream of another
#: node holds the key.
STREAM_CLAIM_LOGGED = _script(_EVENTS, _STREAMS, _LIVE, """
if not claim(KEYS[1], ARGV[5], ARGV[6], ARGV[7]) then
  return false
end
local primer = ev_open(ARGV[8], ARGV[9])
live(ARGV[10], ARGV[6], ARGV[5], primer)
return primer
""")

#: Resume: replay the session's GET log (merged with the broadcast log) after a
#: position and take the stream key over, telling a previous owner on another
#: node to close its stream (``d <sid> <token>``). KEYS: stream key.
#: ARGV[5..11]: token, node, ttl ms, session id, GET stream id, position, node
#: channel head. Returns {id, message, ...}, or 'unknown' / 'expired'
#: (nothing taken over).
STREAM_RESUME = _script(_EVENTS, _LIVE, """
local sid = ARGV[8]
local events = ev_replay(sid, ARGV[9], ARGV[10])
if type(events) == 'string' then
  return events
end
local v = redis.call('GET', KEYS[1])
if v and string.byte(v, 1) ~= 45 and v ~= ARGV[5] then
  local node = string.match(v, '^[^:]*')
  if node ~= ARGV[6] then
    redis.call('PUBLISH', ARGV[11] .. node, wire_close(sid, v))
  end
end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[7])
live(ARGV[11], ARGV[6], ARGV[5], #events > 0 and events[#events - 1] or ARGV[10])
return events
""")

#: Send a batch of messages, in order: every send of a RedisStreamSessionManager
#: (``send`` is a batch of one). Per message, without an event store (P = ''):
#: a broadcast goes on the broadcast channel as is; a targeted message goes as
#: ``m <sid>...`` to each node holding targets. With one: a broadcast is stored
#: once on the broadcast log and goes with its entry id (nowhere when no GET
#: log lives); a targeted message is stored on each target's GET log (sessions
#: without one are skipped) and goes as ``e <n> <event id>...`` to each owning
#: node, in the same step, so ids are in delivery order; it has one entry id in
#: every log. Each run of consecutive broadcasts is one PUBLISH, each run of
#: targeted messages one PUBLISH per node (batches of :mod:`._codec`), a run
#: published before the next starts: every stream gets its messages in batch
#: order. Logs are refreshed once per call.
#:
#: Idempotent sends: a message with an idempotency key has a mark key (its
#: ``sent:`` key of :mod:`._keys`), set with ``SET NX PX`` before anything of
#: the message is routed or stored; if it was set already (a send with that
#: key ran), the message is skipped. Store-less guard: without a store, the
#: call refuses to send anything (returns -1) if an event store keeps logs
#: on the manager's prefix (its broadcast log lives, so a GET log does):
#: those messages would carry no id and miss the logs, a hole no resume
#: could see.
#:
#: KEYS: per message, its mark key if it has one, then the stream key of
#: every target. ARGV[5..8]: node channel head, broadcast channel, the
#: prefix the guard checks ('' with a store), mark ttl ms; then per message:
#: ``k`` if it has a mark key, its target count n (-1: broadcast), data, n
#: session ids, and with a store n GET stream ids. Returns the number of
#: messages, or -1 (refused, nothing done).
STREAM_SEND_MANY = _script(_EVENTS, _STREAMS, """
local head, channel, logged = ARGV[5], ARGV[6], EV.p ~= ''
if ARGV[7] ~= '' and redis.call('EXISTS', key_broadcast_log(ARGV[7])) == 1 then
  return -1
end
local touched, k, a, count = {}, 0, 9, 0
local casts, queued, nodes = {}, {}, {}  -- the open run: broadcasts, or per node (in order) targeted messages

local function publish_run()
  if #casts > 0 then
    redis.call('PUBLISH', channel, wire_broadcasts(casts))
    casts = {}
  end
  for _, node in ipairs(nodes) do
    redis.call('PUBLISH', head .. node, wire_node_batch(queued[node]))
  end
  queued, nodes = {}, {}
end

while a <= #ARGV do
  local fresh = true
  if ARGV[a] == 'k' then
    k = k + 1
    fresh = redis.call('SET', KEYS[k], '1', 'NX', 'PX', ARGV[8]) ~= false
    a = a + 1
  end
  local n, data = tonumber(ARGV[a]), ARGV[a + 1]
  a = a + 2
  count = count + 1
  if not fresh then  -- a send with its key ran: skip it
    if n > 0 then
      a = a + (logged and 2 or 1) * n
      k = k + n
    end
  elseif n < 0 then
    if #nodes > 0 then
      publish_run()
    end
    if not logged then
      casts[#casts + 1] = data
    else
      local id = ev_broadcast(data)
      if id then
        casts[#casts + 1] = wire_stored_broadcast(id, data)
      end
    end
  else
    local r = routes()
    if not logged then
      for i = 1, n do
        route(r, redis.call('GET', KEYS[k + i]), ARGV[a + i - 1], false)
      end
      a = a + n
    else
      local shared = {}
      for i = 1, n do
        local sid, stream = ARGV[a + i - 1], ARGV[a + n + i - 1]
        local id = ev_append(sid, stream, data, shared)
        if id then
          local log = stream .. ' ' .. sid
          if not touched[log] then
            ev_touch(sid, {stream})
            touched[log] = true
          end
          route(r, redis.call('GET', KEYS[k + i]), id, true)
        end
      end
      a = a + 2 * n
    end
    if #casts > 0 and #r.order > 0 then
      publish_run()
    end
    for _, node in ipairs(r.order) do
      local run = queued[node]
      if not run then
        run = {}
        queued[node] = run
        nodes[#nodes + 1] = node
      end
      run[#run + 1] = logged and wire_stored(r.groups[node], data) or wire_targeted(r.groups[node], data)
    end
    k = k + n
  end
end
publish_run()
return count
""")

#: Heartbeat of one batch. KEYS: stream keys. ARGV[5], ARGV[6]: ttl ms, the
#: stream manager's prefix; then one token per key, then one session id per
#: key, then (with a store) one GET stream id per key. Per key: 1 = refreshed
#: (or, without a store, re-created after Redis lost it), 0 = deleted
#: elsewhere (tombstone) or taken over by another node, 2 = (with a store) its
#: GET log or the broadcast log is gone (Redis lost data), 3 = (with a store)
#: its key expired (a late heartbeat, a stalled Redis: messages sent
#: meanwhile were stored but routed nowhere): close the local stream. A lost
#: log is never re-opened under an open stream (messages sent meanwhile were
#: dropped): closed, the stream's client resumes and learns of the gap (410;
#: ``ev_replay`` knows no id of a lost log). An open stream keeps its session
#: alive: it refreshes the session's info keys on that prefix (to the ``ttl``
#: its hash holds) and its event logs.
STREAM_REFRESH = _script(_EVENTS, _TOUCH_SESSION, """
local out = {}
local count = #KEYS
for i, key in ipairs(KEYS) do
  local token, sid, stream = ARGV[i + 6], ARGV[i + 6 + count], ARGV[i + 6 + 2 * count]
  local v = redis.call('GET', key)
  if v and v ~= token then
    out[i] = 0
  elseif EV.p ~= '' and redis.call('EXISTS', key_event_log(EV.p, stream, sid), key_broadcast_log(EV.p)) < 2 then
    out[i] = 2
  elseif EV.p ~= '' and not v then
    out[i] = 3
  else
    redis.call('SET', key, token, 'PX', ARGV[5])
    out[i] = 1
    local ttl = redis.call('HGET', key_session(ARGV[6], sid), 'ttl')
    if ttl then
      touch_session(ARGV[6], sid, ttl)
    end
    if EV.p ~= '' then
      ev_open(sid, stream)
      ev_touch(sid, redis.call('HKEYS', key_event_index(EV.p, sid)), true)
    end
  end
end
return out
""")

#: After a listener outage: what each local stream missed. ARGV[5..]: session
#: id, stream id, position, for each stream. Returns one replay reply per
#: stream ({id, message, ...} or 'unknown' / 'expired').
STREAM_CATCH_UP = _script(_EVENTS, """
local out = {}
for i = 5, #ARGV, 3 do
  out[#out + 1] = ev_replay(ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
return out
""")
