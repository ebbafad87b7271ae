"""The Lua sources of :mod:`pushcore.store.redis` (one script per atomic step).

Every script gets ``ARGV[1]`` = the partition's key base (``pc:{p12}:``) and
touches only keys that start with it, so in a Redis Cluster each call runs
in one slot. ``KEYS[1]`` is one of those keys, so the client routes the call
to the node holding the slot.

Seqs never become Lua numbers: Lua numbers are doubles, exact only below
2**53, and seqs go up to 2**63-1. Counters are raised with ``HINCRBY`` (64-bit
in Redis) and read back as strings; seqs are compared as decimal strings
(:func:`lt`) and kept in sorted sets as 19-digit zero-padded members with
score 0, so ``ZRANGEBYLEX`` orders them exactly.

A stored message is an opaque string packed by Python; the scripts read only
its head: a 2-byte big-endian collapse key length, the collapse key, and the
4-byte big-endian expiry (:func:`pushcore.store.redis._pack`).
"""
from __future__ import annotations

__all__ = ["PRELUDE", "APPEND", "RANGE", "BACKLOG", "ACK", "ADVANCE", "PURGE", "PURGE_KEYS",
           "DROP_EMPTY", "EXPIRED_SIZES", "LIVE_DEVICES", "IDEM_PUT", "IDEM_DEL", "FLOOR_MAX"]

PRELUDE = r"""
local P = ARGV[1]
local function pad(s) return string.rep('0', 19 - #s) .. s end
-- a < b for non-negative decimal strings without leading zeros
local function lt(a, b) if #a ~= #b then return #a < #b end return a < b end
local function head(v)
  local n = string.byte(v, 1) * 256 + string.byte(v, 2)
  local a, b, c, d = string.byte(v, 3 + n, 6 + n)
  return string.sub(v, 3, 2 + n), ((a * 256 + b) * 256 + c) * 256 + d
end
-- Forget stored message ps (a padded seq) of device dev everywhere; false when it is not stored.
local function remove(dev, ps)
  local mk = P .. 'm:' .. dev
  local v = redis.call('HGET', mk, ps)
  if not v then return false end
  redis.call('HDEL', mk, ps)
  redis.call('ZREM', P .. 's:' .. dev, ps)
  local ck, exp = head(v)
  if ck ~= '' then redis.call('HDEL', P .. 'c:' .. dev, ck) end
  if exp ~= 0 then
    redis.call('ZREM', P .. 'x:' .. dev, ps)
    redis.call('ZREM', P .. 'expiring', ps .. dev)
  end
  redis.call('HINCRBY', P .. 'stats', 'messages', -1)
  if redis.call('HINCRBY', P .. 'd:' .. dev, 'n', -1) == 0 then
    redis.call('SREM', P .. 'devs', dev)
    redis.call('SADD', P .. 'empty', dev)
  end
  return true
end
local function floor_of(global)
  local f = redis.call('GET', P .. 'floor') or '0'
  if lt(f, global) then return global end
  return f
end
"""

# ARGV: P, now, cap, created (repr), expires (repr), global floor, D, D x (device, limit), then
# 7 per item: device, packed message, collapse key, expiry, idempotency key ('' none), digest, message id.
# Returns {'ok', collapsed, dropped, expired, {kind, seq[, message id, created]} per item},
# {'exhausted', device} or {'conflict', item} (then nothing was written).
APPEND = PRELUDE + r"""
local now, cap = ARGV[2], tonumber(ARGV[3])
local nnow = tonumber(now)
local created, expires = ARGV[4], ARGV[5]
local floor = floor_of(ARGV[6])
local D = tonumber(ARGV[7])
local i = 8
for _ = 1, D do
  local last = redis.call('HGET', P .. 'd:' .. ARGV[i], 'last') or floor
  if lt(ARGV[i + 1], last) then return {'exhausted', ARGV[i]} end
  i = i + 2
end
local first = i
local replays = {}
local item = 0
while i <= #ARGV do
  item = item + 1
  local key = ARGV[i + 4]
  if key ~= '' then
    local rec = redis.call('HGET', P .. 'k:' .. ARGV[i], key)
    if rec then
      local seq, mid, made, until_, digest = string.match(rec, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
      if tonumber(until_) > nnow then
        if digest ~= ARGV[i + 5] then return {'conflict', item} end
        replays[item] = {'r', seq, mid, made}
      end
    end
  end
  i = i + 7
end
local collapsed, dropped, expired = 0, 0, 0
local out = {}
i, item = first, 0
while i <= #ARGV do
  item = item + 1
  local dev, value, ck, exp, key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if replays[item] then
    out[item] = replays[item]
  else
    local dk = P .. 'd:' .. dev
    if redis.call('EXISTS', dk) == 0 then redis.call('HSET', dk, 'last', floor, 'n', 0) end
    if ck ~= '' then
      local old = redis.call('HGET', P .. 'c:' .. dev, ck)
      if old and remove(dev, old) then collapsed = collapsed + 1 end
    end
    redis.call('HINCRBY', dk, 'last', 1)
    local seq = redis.call('HGET', dk, 'last')
    local ps = pad(seq)
    redis.call('HSET', P .. 'm:' .. dev, ps, value)
    redis.call('ZADD', P .. 's:' .. dev, 0, ps)
    if ck ~= '' then redis.call('HSET', P .. 'c:' .. dev, ck, ps) end
    if exp ~= '0' then
      redis.call('ZADD', P .. 'x:' .. dev, exp, ps)
      redis.call('ZADD', P .. 'expiring', exp, ps .. dev)
    end
    redis.call('HINCRBY', P .. 'stats', 'messages', 1)
    local n = redis.call('HINCRBY', dk, 'n', 1)
    if n == 1 then
      redis.call('SADD', P .. 'devs', dev)
      redis.call('SREM', P .. 'empty', dev)
    end
    if key ~= '' then
      redis.call('HSET', P .. 'k:' .. dev, key,
                 seq .. ' ' .. ARGV[i + 6] .. ' ' .. created .. ' ' .. expires .. ' ' .. ARGV[i + 5])
      redis.call('ZADD', P .. 'idem', expires, key .. ' ' .. dev)
    end
    if n > cap then
      -- the cap policy: this device's expired messages first, then its oldest
      for _, e in ipairs(redis.call('ZRANGEBYSCORE', P .. 'x:' .. dev, '-inf', now)) do
        if remove(dev, e) then expired = expired + 1 end
      end
      n = tonumber(redis.call('HGET', dk, 'n'))
      if n > cap then
        for _, o in ipairs(redis.call('ZRANGE', P .. 's:' .. dev, 0, n - cap - 1)) do
          if remove(dev, o) then dropped = dropped + 1 end
        end
      end
    end
    out[item] = {'s', seq}
  end
  i = i + 7
end
return {'ok', collapsed, dropped, expired, out}
"""

# ARGV: P, device, padded after_seq, limit, now. Returns a flat list: padded seq, message, ...
RANGE = PRELUDE + r"""
local dev, want, now = ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
local sk, mk = P .. 's:' .. dev, P .. 'm:' .. dev
local out = {}
local start = '(' .. ARGV[3]
local chunk_size = math.min(want, 500)
while #out < 2 * want do
  local chunk = redis.call('ZRANGEBYLEX', sk, start, '+', 'LIMIT', 0, chunk_size)
  if #chunk == 0 then break end
  local values = redis.call('HMGET', mk, unpack(chunk))
  for j, ps in ipairs(chunk) do
    local v = values[j]
    if v then
      local _, exp = head(v)
      if exp == 0 or exp > now then
        out[#out + 1] = ps
        out[#out + 1] = v
        if #out == 2 * want then break end
      end
    end
  end
  start = '(' .. chunk[#chunk]
end
return out
"""

# ARGV: P, device, padded after_seq, now. Returns the unexpired stored messages above after_seq.
BACKLOG = PRELUDE + r"""
local dev, after = ARGV[2], ARGV[3]
local n = redis.call('ZLEXCOUNT', P .. 's:' .. dev, '(' .. after, '+')
if n == 0 then return 0 end
for _, ps in ipairs(redis.call('ZRANGEBYSCORE', P .. 'x:' .. dev, '-inf', ARGV[4])) do
  if ps > after then n = n - 1 end
end
return n
"""

# ARGV: P, then pairs (device, padded seq). Returns how many messages went.
ACK = PRELUDE + r"""
local removed = 0
for i = 2, #ARGV, 2 do
  local dev = ARGV[i]
  for _, ps in ipairs(redis.call('ZRANGEBYLEX', P .. 's:' .. dev, '-', '[' .. ARGV[i + 1])) do
    if remove(dev, ps) then removed = removed + 1 end
  end
end
return removed
"""

# ARGV: P, device, seq, global floor. Returns the counter (a decimal string).
ADVANCE = PRELUDE + r"""
local dev, seq = ARGV[2], ARGV[3]
local dk = P .. 'd:' .. dev
local last = redis.call('HGET', dk, 'last')
if not last then
  if seq == '0' then return '0' end
  -- a new record starts at the seq floor: no seq is handed out twice
  last = floor_of(ARGV[4])
  redis.call('HSET', dk, 'last', last, 'n', 0)
  redis.call('SADD', P .. 'empty', dev)
end
if lt(last, seq) then
  redis.call('HSET', dk, 'last', seq)
  last = seq
end
return last
"""

# ARGV: P, now, then members of the partition's expiring set. Returns how many messages went.
PURGE = PRELUDE + r"""
local removed = 0
local now = tonumber(ARGV[2])
for i = 3, #ARGV do
  local member = ARGV[i]
  local score = redis.call('ZSCORE', P .. 'expiring', member)
  if score and tonumber(score) <= now then
    if remove(string.sub(member, 20), string.sub(member, 1, 19)) then removed = removed + 1 end
  end
end
return removed
"""

# ARGV: P, now, limit. Forgets device-side key records past their window.
# Returns a flat list: key, the record as the key's own slot holds it (for IDEM_DEL), ...
PURGE_KEYS = PRELUDE + r"""
local out = {}
local ik = P .. 'idem'
for _, member in ipairs(redis.call('ZRANGEBYSCORE', ik, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))) do
  local space = string.find(member, ' ', 1, true)
  local key, dev = string.sub(member, 1, space - 1), string.sub(member, space + 1)
  local kk = P .. 'k:' .. dev
  local rec = redis.call('HGET', kk, key)
  redis.call('HDEL', kk, key)
  redis.call('ZREM', ik, member)
  out[#out + 1] = key
  out[#out + 1] = (rec or '') .. ' ' .. dev
end
return out
"""

# ARGV: P, limit, global floor. Drops records with nothing stored, raising the partition's floor.
# Returns {dropped, candidates left, the partition's floor}.
DROP_EMPTY = PRELUDE + r"""
local limit = tonumber(ARGV[2])
local floor = redis.call('GET', P .. 'floor') or '0'
local dropped, looks = 0, 4 * limit
while dropped < limit and looks > 0 do
  local dev = redis.call('SPOP', P .. 'empty')
  if not dev then break end
  looks = looks - 1
  local dk = P .. 'd:' .. dev
  local rec = redis.call('HMGET', dk, 'last', 'n')
  if rec[1] and tonumber(rec[2]) == 0 then
    if lt(floor, rec[1]) then floor = rec[1] end
    redis.call('DEL', dk)
    dropped = dropped + 1
  end
end
if dropped > 0 then redis.call('SET', P .. 'floor', floor) end
return {dropped, redis.call('SCARD', P .. 'empty'), floor}
"""

# ARGV: P, now. Returns {expired stored messages, devices whose every stored message is expired}.
EXPIRED_SIZES = PRELUDE + r"""
local per = {}
local messages, devices = 0, 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', P .. 'expiring', '-inf', ARGV[2])) do
  local dev = string.sub(member, 20)
  per[dev] = (per[dev] or 0) + 1
  messages = messages + 1
end
for dev, n in pairs(per) do
  if tonumber(redis.call('HGET', P .. 'd:' .. dev, 'n')) == n then devices = devices + 1 end
end
return {messages, devices}
"""

# ARGV: P, now. Returns the partition's devices with at least one unexpired stored message.
LIVE_DEVICES = PRELUDE + r"""
local out = {}
for _, dev in ipairs(redis.call('SMEMBERS', P .. 'devs')) do
  local n = tonumber(redis.call('HGET', P .. 'd:' .. dev, 'n') or '0')
  if n > redis.call('ZCOUNT', P .. 'x:' .. dev, '-inf', ARGV[2]) then out[#out + 1] = dev end
end
return out
"""

# The store-wide record of one idempotency key (its own slot): KEYS[1]; ARGV: record, expires-field
# position is the 4th word; ARGV[2] = now, ARGV[3] = ms to keep it. Set unless an unexpired one is there.
IDEM_PUT = r"""
local old = redis.call('GET', KEYS[1])
if old then
  local _, _, _, until_ = string.match(old, '^(%S+) (%S+) (%S+) (%S+) ')
  if until_ and tonumber(until_) > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

# KEYS[1]; ARGV[1]: the record a purge forgot. Deleted only if it is still that record.
IDEM_DEL = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1]: the store-wide floor; ARGV[1]: a partition's floor. Raises it (never lowers); returns it.
FLOOR_MAX = r"""
local f = redis.call('GET', KEYS[1]) or '0'
local g = ARGV[1]
if #f < #g or (#f == #g and f < g) then
  redis.call('SET', KEYS[1], g)
  return g
end
return f
"""
