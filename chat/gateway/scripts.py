"""The gateway's Lua scripts: each runs atomically in Redis on keys of one hash slot.

Their SHA1s (EVALSHA) and ``SCRIPTS`` (SHA -> body, for the NOSCRIPT re-send of
``redis_async.run_scripts``) are at the end.
"""

from __future__ import annotations

import hashlib

# KEYS: 1 request window (zset: member -> arrival ms), 2 token charges (zset: "member:n" ->
# charge ms), 3 concurrency slots (zset: member -> expiry ms), 4 running sum of the charges
# in KEYS[2] (string; keeps the token check O(expired charges), not O(charges)).
# ARGV: 1 window ms, 2 max requests, 3 max tokens per minute, 4 max concurrent, 5 member,
# 6 slot ttl ms.
# Returns {allowed, reason (0 ok, 1 requests, 2 tokens, 3 concurrency), requests in window
# (including this one when allowed), ms until the window frees a slot, retry-after ms}.
CHECK_SCRIPT = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local max_req = tonumber(ARGV[2])
local max_tok = tonumber(ARGV[3])
local max_conc = tonumber(ARGV[4])
local member = ARGV[5]
local slot_ttl = tonumber(ARGV[6])

local function charge(entry)
  return tonumber(string.match(entry, ':(%d+)$')) or 0
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local reset = window
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
if max_req > 0 and count >= max_req then
  return {0, 1, count, reset, reset}
end
if max_tok > 0 then
  local used = redis.call('GET', KEYS[4])
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  end
  if used == false then
    -- No running sum (first charge, or it expired apart from the charges): recount.
    used = 0
    local charges = redis.call('ZRANGE', KEYS[2], 0, -1)
    for i = 1, #charges do used = used + charge(charges[i]) end
    local ttl = redis.call('PTTL', KEYS[2])
    if ttl > 0 then redis.call('SET', KEYS[4], used, 'PX', ttl) end  -- expires with the charges
  else
    used = tonumber(used)
    if #expired > 0 then
      for i = 1, #expired do used = used - charge(expired[i]) end
      if used < 0 then used = 0 end
      redis.call('SET', KEYS[4], used, 'KEEPTTL')
    end
  end
  if used >= max_tok then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local wait = 1000
    if first[2] then wait = tonumber(first[2]) + 60000 - now end
    return {0, 2, count, reset, wait}
  end
end
if max_conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= max_conc then
    return {0, 3, count, reset, 1000}
  end
  redis.call('ZADD', KEYS[3], now + slot_ttl, member)
  redis.call('PEXPIRE', KEYS[3], slot_ttl)
end
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0, count + 1, reset, 0}
"""

# KEYS: 1 token charges, 2 concurrency slots, 3 running sum. ARGV: 1 member, 2 tokens (0: none).
SETTLE_SCRIPT = b"""
redis.call('ZREM', KEYS[2], ARGV[1])
local n = tonumber(ARGV[2])
if n > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if redis.call('EXISTS', KEYS[3]) == 0 then
    -- The sum must cover the charges still in the window before this one is added.
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
    local used = 0
    local charges = redis.call('ZRANGE', KEYS[1], 0, -1)
    for i = 1, #charges do used = used + (tonumber(string.match(charges[i], ':(%d+)$')) or 0) end
    redis.call('SET', KEYS[3], used)
  end
  redis.call('ZADD', KEYS[1], now, ARGV[1] .. ':' .. n)
  redis.call('PEXPIRE', KEYS[1], 60000)
  redis.call('INCRBY', KEYS[3], n)
  redis.call('PEXPIRE', KEYS[3], 60000)
end
return 1
"""

# Undo a check whose sibling check refused (the request never ran).
UNDO_SCRIPT = b"""
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# Usage counters and budget charges of one request (chat/gateway/usage.py, budgets.py).
# KEYS: 1 the shard's live usage hash, 2.. the caller's monthly budget counters (same slot).
# ARGV: 1 field prefix ("<day>|<model>|<key id>|<user id>|"), 2 tokens charged to each budget,
# 3 a new counter's lifetime (s), then pairs metric, amount. HINCRBY only the non-zero amounts:
# a request adds 2-4 fields, not one per metric.
USAGE_SCRIPT = b"""
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  for i = 2, #KEYS do
    redis.call('INCRBY', KEYS[i], tokens)
    if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end
  end
end
for i = 4, #ARGV, 2 do
  local n = tonumber(ARGV[i + 1])
  if n ~= 0 then redis.call('HINCRBY', KEYS[1], ARGV[1] .. ARGV[i], n) end
end
return 1
"""

# Start flushing a usage shard: the live hash becomes a batch (KEYS[2], same slot) and the
# batch id joins the shard's pending set, atomically, so increments after this go to a
# fresh live hash and a flusher that dies leaves a batch another one finds.
# KEYS: 1 live hash, 2 batch hash, 3 pending set. ARGV: 1 batch id. Returns 1, or 0 (nothing).
FLUSH_BEGIN_SCRIPT = b"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# A batch is in PostgreSQL: forget it. KEYS: 1 batch hash, 2 pending set. ARGV: 1 batch id.
FLUSH_END_SCRIPT = b"""
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# Renew a running request's concurrency slot (chat/gateway/services/slot_lease.py): its expiry
# moves to now + ttl if the slot is still there (XX: a released or expired slot stays gone).
# KEYS: 1 concurrency slots. ARGV: 1 member, 2 slot ttl ms. Returns 1 when renewed.
RENEW_SCRIPT = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return renewed
"""


CHECK_SHA = hashlib.sha1(CHECK_SCRIPT).hexdigest()
SETTLE_SHA = hashlib.sha1(SETTLE_SCRIPT).hexdigest()
UNDO_SHA = hashlib.sha1(UNDO_SCRIPT).hexdigest()
USAGE_SHA = hashlib.sha1(USAGE_SCRIPT).hexdigest()
RENEW_SHA = hashlib.sha1(RENEW_SCRIPT).hexdigest()
SCRIPTS = {
    CHECK_SHA: CHECK_SCRIPT,
    SETTLE_SHA: SETTLE_SCRIPT,
    UNDO_SHA: UNDO_SCRIPT,
    USAGE_SHA: USAGE_SCRIPT,
    RENEW_SHA: RENEW_SCRIPT,
}
