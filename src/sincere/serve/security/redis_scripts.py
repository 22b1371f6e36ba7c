"""The Lua scripts of the shared books (:mod:`sincere.serve.security.shared`): text only.

Every script but :data:`INSTANCE` opens with the same check (``instance()``): the Redis
*instance* hash (``KEYS[1]``) holds a random ``token`` made when the books were first
written to this Redis, the time from which keys may be admitted (``ready_at``) and a
``clock`` that every settlement advances. The caller passes the token it works under
(``ARGV[1]``), its ``now`` (``ARGV[2]``) and the highest clock it has seen (``ARGV[3]``):

* no instance hash -- Redis lost its data (restart without persistence, ``FLUSHALL``);
* another token -- the caller has not yet joined the books as they are now;
* a clock below the caller's -- Redis went back in time (restored from a snapshot).

In each case the script changes nothing and says so; the caller rebuilds (see
:mod:`sincere.serve.security.ledger`). Per key (``KEYS[2..]``, all under the token):
``money`` (``spent``, ``base``: the durable record's request count when seeded,
``reserved``), ``res`` (reservation id -> worst-case cost: held), ``lease`` (reservation
id -> expiry), ``gone`` (ids whose lease ran out, and ``x:``-prefixed ids of cancelled
admissions -> when, kept ``keep_s``), ``synced`` (the processes that added their unwritten
usage). A settlement charges only a reservation held or gone: sent again, it finds
neither and changes nothing -- each applies once, with no record of every settled id.
"""

from __future__ import annotations

_INSTANCE = """
local function instance()
  local inst = redis.call('HMGET', KEYS[1], 'token', 'ready_at', 'clock')
  if not inst[1] then return {'no-instance', '', ''} end
  if inst[1] ~= ARGV[1] then return {'new-instance', inst[1], ''} end
  local clock = tonumber(inst[3] or '0')
  if clock < tonumber(ARGV[3]) then return {'regressed', inst[1], tostring(clock)} end
  return nil, tonumber(inst[2] or '0'), clock
end
"""

_PRUNE = """
local function prune(money, res, lease, gone, now, keep)
  local out = redis.call('ZRANGEBYSCORE', lease, '-inf', '(' .. now)
  for _, rid in ipairs(out) do
    local c = redis.call('HGET', res, rid)
    if c then redis.call('HINCRBYFLOAT', money, 'reserved', -tonumber(c)) end
    redis.call('HDEL', res, rid)
    redis.call('ZADD', gone, now, rid)
  end
  if #out > 0 then redis.call('ZREMRANGEBYSCORE', lease, '-inf', '(' .. now) end
  if redis.call('ZCARD', lease) == 0 then redis.call('HSET', money, 'reserved', '0') end
  redis.call('ZREMRANGEBYSCORE', gone, '-inf', tonumber(now) - keep)
end
"""

# A window's hash: bucket number -> amount, and two fields of its own named below every
# bucket: ``-1``, the total of the buckets it holds, and ``-2``, the lowest bucket it may
# still hold (those below have been dropped and taken off the total). A check reads the
# two, drops the buckets that left the window one by one, and needs no scan of the hash:
# its cost does not grow with the buckets a busy key fills. The hash is counted whole (and
# given the two fields again) when it has none (new, or written by a script that kept
# none: it drops them as expired buckets, being below every bucket), and once a window
# (the first check past each multiple of ``n`` buckets), so a total can never drift from
# its buckets for longer than a window.
_WINDOW = """
local function roll(key, bucket, n, ttl)
  local cut = bucket - n
  local own = redis.call('HMGET', key, '-1', '-2')
  local total, low = tonumber(own[1]), tonumber(own[2])
  if total and low and low >= cut then return total end
  if total and low and math.floor(low / n) == math.floor(cut / n) then
    for b = math.max(low, 0), cut - 1 do
      local v = redis.call('HGET', key, b)
      if v then
        total = total - tonumber(v)
        redis.call('HDEL', key, b)
      end
    end
  else
    local all = redis.call('HGETALL', key)
    total = 0
    for i = 1, #all, 2 do
      local b = tonumber(all[i])
      if b < 0 then  -- the two fields of its own: written again below
      elseif b < cut then
        redis.call('HDEL', key, all[i])
      else
        total = total + tonumber(all[i + 1])
      end
    end
  end
  redis.call('HSET', key, '-1', total, '-2', cut)
  redis.call('EXPIRE', key, ttl)  -- it may have made the hash: every hash expires
  return total
end

local function window(key, bucket, n, limit, add, ttl)
  if limit <= 0 then return 0, -1 end
  local total = roll(key, bucket, n, ttl)
  if total + add <= limit then return total, -1 end
  if add > limit then return total, -2 end
  local all = redis.call('HGETALL', key)
  local parts = {}
  for i = 1, #all, 2 do
    local b = tonumber(all[i])
    if b >= 0 and b >= bucket - n then parts[#parts + 1] = {b, tonumber(all[i + 1])} end
  end
  table.sort(parts, function(x, y) return x[1] < y[1] end)
  local freed = 0
  for _, p in ipairs(parts) do
    freed = freed + p[2]
    if total - freed + add <= limit then return total, p[1] end
  end
  return total, -2
end

local function count(key, bucket, add, ttl)
  redis.call('HINCRBY', key, bucket, add)
  redis.call('HINCRBY', key, '-1', add)
  redis.call('EXPIRE', key, ttl)
end
"""

# KEYS: instance; ARGV: expected token ('': create if none; '?': only read), new token,
#       ready_at, clock. Answers the token and clock in force afterwards ('' : none).
INSTANCE = """
local cur = redis.call('HMGET', KEYS[1], 'token', 'clock')
if (ARGV[1] == '' and not cur[1]) or (cur[1] and cur[1] == ARGV[1]) then
  redis.call('HSET', KEYS[1], 'token', ARGV[2], 'ready_at', ARGV[3], 'clock', ARGV[4])
  return {ARGV[2], ARGV[4]}
end
return {cur[1] or '', cur[2] or '0'}
"""

_SETTLE_ONE = """
local function settle_one(k, mirror, a, now, n, keep, ttl)
  if redis.call('EXISTS', k[1]) == 0 then return 'u' end
  local held = redis.call('HGET', k[2], a[1])
  if held then
    redis.call('HINCRBYFLOAT', k[1], 'reserved', -tonumber(held))
    redis.call('HDEL', k[2], a[1])
    redis.call('ZREM', k[3], a[1])
  elseif a[10] == '1' then
    redis.call('ZADD', k[4], now, 'x:' .. a[1])  -- refuse it if it runs later
  elseif redis.call('ZREM', k[4], a[1]) == 0 then
    return 'd'  -- neither held nor gone: settled already
  end
  if a[10] == '1' then return 'c' end
  redis.call('HINCRBYFLOAT', k[1], 'spent', a[2])
  local tb = tonumber(a[3])
  if tb >= 0 and tonumber(a[5]) - tb <= n then
    local low = tonumber(redis.call('HGET', k[5], '-2'))  -- nil: no running total
    if low == nil or tb >= low then  -- else dropped from the window: nothing to adjust
      local was = tonumber(redis.call('HGET', k[5], tb) or '0')
      local v = was + tonumber(a[4])
      if v < 0 then v = 0 end
      redis.call('HSET', k[5], tb, v)
      if low ~= nil then redis.call('HINCRBY', k[5], '-1', v - was) end
    end
  end
  redis.call('ZREMRANGEBYSCORE', k[4], '-inf', now - keep)
  for i = 1, 4 do redis.call('EXPIRE', k[i], ttl) end
  local f = a[6] .. ':' .. a[9] .. ':'
  redis.call('HINCRBYFLOAT', mirror, f .. 's', a[2])
  redis.call('HINCRBY', mirror, f .. 'r', 1)
  redis.call('HINCRBY', mirror, f .. 'p', a[7])
  redis.call('HINCRBY', mirror, f .. 'c', a[8])
  redis.call('EXPIRE', mirror, ttl)
  return 'o'
end

local function settle_all(m, k0, a0, now, n, keep, ttl, clock)
  local out, charged, i = {}, 0, 0
  while a0 + 10 * i <= #ARGV do
    local k, a = {}, {}
    for j = 1, 5 do k[j] = KEYS[k0 + 5 * i + j - 1] end
    for j = 1, 10 do a[j] = ARGV[a0 + 10 * i + j - 1] end
    local v = settle_one(k, KEYS[m], a, now, n, keep, ttl)
    if v == 'o' then charged = charged + 1 end
    out[#out + 1] = v
    i = i + 1
  end
  if charged > 0 then clock = redis.call('HINCRBY', KEYS[1], 'clock', charged) end
  return table.concat(out), tostring(clock)
end
"""

_ADMIT_ONE = """
local function admit_one(ready_at)
  if redis.call('EXISTS', KEYS[2]) == 0 then return {'unseeded', '', ''} end
  local now = tonumber(ARGV[2])
  if now < ready_at then return {'syncing', tostring(ready_at - now), ''} end
  prune(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[2], tonumber(ARGV[14]))
  local budget, cost = tonumber(ARGV[10]), tonumber(ARGV[11])
  local spent = tonumber(redis.call('HGET', KEYS[2], 'spent') or '0')
  local reserved = tonumber(redis.call('HGET', KEYS[2], 'reserved') or '0')
  local function left(extra)
    if budget < 0 then return '' end
    return tostring(budget - spent - reserved - extra)
  end
  if redis.call('HEXISTS', KEYS[3], ARGV[4]) == 1 then
    return {'ok', '', left(0)}  -- a retried call: admitted once
  end
  if redis.call('ZSCORE', KEYS[5], 'x:' .. ARGV[4]) then
    return {'budget', '', left(0)}  -- cancelled by its process before it ran
  end
  local bucket, n = tonumber(ARGV[5]), tonumber(ARGV[6])
  local rpm, tpm, amount, ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[12]
  local _, wait = window(KEYS[6], bucket, n, rpm, 1, ttl)
  if wait ~= -1 then return {'rpm', tostring(wait), ''} end
  local _, twait = window(KEYS[7], bucket, n, tpm, amount, ttl)
  if twait ~= -1 then return {'tpm', tostring(twait), ''} end
  if budget >= 0 then
    local remaining = budget - spent - reserved
    if remaining <= 0 or cost > remaining then return {'budget', '', tostring(remaining)} end
  end
  if rpm > 0 then count(KEYS[6], bucket, 1, ttl) end
  if tpm > 0 then count(KEYS[7], bucket, amount, ttl) end
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[11])
  redis.call('ZADD', KEYS[4], ARGV[13], ARGV[4])
  redis.call('HINCRBYFLOAT', KEYS[2], 'reserved', ARGV[11])
  return {'ok', '', left(cost)}
end
"""

# A settlement (see :data:`SETTLE`) takes 5 keys -- money, res, lease, gone, tokens window
# of its key -- and 10 arguments: rid, cost, tokens_bucket (<0: none), tokens_delta, the
# bucket of its admission, flush batch, prompt tokens, completion tokens, key id, cancel
# (1: an admission its process gave up on -- released, nothing charged). Its verdict is one
# letter: o (charged), c (cancelled), d (a duplicate: settled already), u (key unseeded).

# Settlements of earlier requests ride along: they are applied first (freeing what they
# over-reserved), then the admission; one round trip for both.
# KEYS: instance, money, res, lease, gone, requests window, tokens window, the settling
#       process's mirror, then 5 per settlement
# ARGV: token, now, clock, rid, bucket, num_buckets, rpm (0: none), tpm (0: none), amount,
#       budget (<0: none), cost, window ttl_s, lease expiry, keep_s, books ttl_s, then 10 per
#       settlement. Answers verdict, two values, the settlements' verdicts and the clock
#       (these two only when the instance check passed: the settlements were applied).
ADMIT = (
    _INSTANCE
    + _PRUNE
    + _WINDOW
    + _SETTLE_ONE
    + _ADMIT_ONE
    + """
local bad, ready_at, clock = instance()
if bad then return bad end
local now, n, keep = tonumber(ARGV[2]), tonumber(ARGV[6]), tonumber(ARGV[14])
local settled, after = settle_all(8, 9, 16, now, n, keep, ARGV[15], clock)
local v = admit_one(ready_at)
return {v[1], v[2], v[3], settled, after}
"""
)

# KEYS: instance, the settling process's mirror, then 5 per settlement
# ARGV: token, now, clock, num_buckets, keep_s, books ttl_s, then 10 per settlement
# Answers ok, the settlements' verdicts (a letter each) and the clock after them.
SETTLE = (
    _INSTANCE
    + _SETTLE_ONE
    + """
local bad, _, clock = instance()
if bad then return bad end
local now, n, keep = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local settled, after = settle_all(2, 3, 7, now, n, keep, ARGV[6], clock)
return {'ok', settled, after}
"""
)

# KEYS: instance, money, res, lease, gone, synced
# ARGV: token, now, clock, process id, seed spent ('': do not seed), seed base,
#       unwritten usage, lease expiry, ttl_s, num_batches, then (num_requests_after,
#       spent) per batch written, then (rid, cost) per reservation held
SYNC = (
    _INSTANCE
    + """
local bad = instance()
if bad then return bad end
if redis.call('EXISTS', KEYS[2]) == 0 then
  if ARGV[5] == '' then return {'unseeded', '', ''} end
  redis.call('HSET', KEYS[2], 'spent', ARGV[5], 'base', ARGV[6], 'reserved', '0')
end
local base = tonumber(redis.call('HGET', KEYS[2], 'base') or '0')
local nb = tonumber(ARGV[10])
if redis.call('SADD', KEYS[6], ARGV[4]) == 1 then
  local add = tonumber(ARGV[7])
  for i = 0, nb - 1 do
    if tonumber(ARGV[11 + 2 * i]) > base then add = add + tonumber(ARGV[12 + 2 * i]) end
  end
  if add ~= 0 then redis.call('HINCRBYFLOAT', KEYS[2], 'spent', add) end
end
for i = 11 + 2 * nb, #ARGV, 2 do
  local rid, cost = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', KEYS[3], rid) == 0 then  -- lost with the books, or run out
    redis.call('HSET', KEYS[3], rid, cost)
    redis.call('HINCRBYFLOAT', KEYS[2], 'reserved', cost)
    redis.call('ZREM', KEYS[5], rid)
  end
  redis.call('ZADD', KEYS[4], ARGV[8], rid)
end
for i = 2, 6 do redis.call('EXPIRE', KEYS[i], ARGV[9]) end
return {'ok', '', ''}
"""
)

# A process's *mirror* (``w:<process id>``): the usage of its settlements as Redis applied
# them, by flush batch (fields ``<batch>:<key id>:<s|r|p|c>``), so that a survivor can
# write a killed process's unwritten usage. ``procs``: process id -> heartbeat expiry.
# KEYS: procs, mirror; ARGV: what, then
#   beat: process id, expiry, now ('-inf': judge no one), claim until -> the dead
#         process ids (heartbeat expired before now), now claimed until "claim until"
#   read: -> the mirror's fields and values
#   trim: last batch written -> (fields of batches up to it removed)
#   forget: process id, keep_s -> (its heartbeat removed; its mirror kept keep_s: should
#           the process come back and settle more into a batch, that batch stays whole)
WRITERS = """
local what = ARGV[1]
if what == 'beat' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  if ARGV[4] == '-inf' then return {} end
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
  for _, id in ipairs(dead) do redis.call('ZADD', KEYS[1], ARGV[5], id) end
  return dead
elseif what == 'read' then
  return redis.call('HGETALL', KEYS[2])
elseif what == 'trim' then
  local upto = tonumber(ARGV[2])
  for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
    local b = tonumber(string.match(f, '^(%d+):'))
    if b and b <= upto then redis.call('HDEL', KEYS[2], f) end
  end
  return {}
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[2])
return {}
"""
