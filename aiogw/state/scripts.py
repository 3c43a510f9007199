"""The Lua scripts shared state runs in Redis, as data: each is one atomic step (take from a
bucket, give back, claim a probe lease, sync the windows, publish a breaker transition)."""

# KEYS[1]: the target's bucket hash. ARGV: rpm, tpm (0 = none), tokens needed now, and the
# requests/tokens wanted for a lease (at least what is needed). Grants up to the lease from
# what the bucket holds. Returns {1, granted requests, granted tokens} or
# {0, wait_ms, "rpm" | "tpm"}.
# Every script first drops its key when it holds another type than a hash (not something
# aiogw wrote): a WRONGTYPE error would otherwise read as Redis being away.
_OWN_HASH = """
local kt = redis.call('TYPE', KEYS[1]).ok
if kt ~= 'hash' and kt ~= 'none' then redis.call('DEL', KEYS[1]) end
"""

TAKE = (
    _OWN_HASH
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, need = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local want_r, want_t = tonumber(ARGV[4]), tonumber(ARGV[5])
local b = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local r, tk, ts = tonumber(b[1]) or rpm, tonumber(b[2]) or tpm, tonumber(b[3]) or now
local elapsed = math.max(0, now - ts)
if rpm > 0 then r = math.min(rpm, r + elapsed * rpm / 60000) end
if tpm > 0 then tk = math.min(tpm, tk + elapsed * tpm / 60000); need = math.min(need, tpm) end
local verdict
if rpm > 0 and r < 1 then
  verdict = {0, math.ceil((1 - r) * 60000 / rpm), 'rpm'}
elseif tpm > 0 and tk < need then
  verdict = {0, math.ceil((need - tk) * 60000 / tpm), 'tpm'}
else
  local gr, gt = 0, 0
  if rpm > 0 then gr = math.max(1, math.min(want_r, math.floor(r))); r = r - gr end
  if tpm > 0 then gt = math.max(need, math.min(want_t, math.floor(tk))); tk = tk - gt end
  verdict = {1, gr, gt}
end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(tk), 'ts', now)
redis.call('PEXPIRE', KEYS[1], 120000)
return verdict
"""
)

# KEYS[1]: the bucket hash. ARGV: rpm, tpm, requests and tokens to give back (unused lease,
# tokens reserved but not used; the tokens may be < 0 when a call used more).
SETTLE = (
    _OWN_HASH
    + """
local b = redis.call('HMGET', KEYS[1], 'r', 't')
local r, tk = tonumber(b[1]), tonumber(b[2])
if r == nil and tk == nil then return 0 end
if r ~= nil and tonumber(ARGV[1]) > 0 then r = math.min(tonumber(ARGV[1]), r + tonumber(ARGV[3])) end
if tk ~= nil and tonumber(ARGV[2]) > 0 then tk = math.min(tonumber(ARGV[2]), tk + tonumber(ARGV[4])) end
redis.call('HSET', KEYS[1], 'r', tostring(r or 0), 't', tostring(tk or 0))
return 1
"""
)

# KEYS[1]: a target's probe lease. ARGV: replica, lease ms. The holder may renew it (a
# half-open breaker closes after several probe successes). Returns 1 when ours, else minus
# the ms the holder keeps it (the others need not ask again before then).
PROBE = """
local kt = redis.call('TYPE', KEYS[1]).ok
if kt ~= 'string' and kt ~= 'none' then redis.call('DEL', KEYS[1]) end
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return -math.max(1, redis.call('PTTL', KEYS[1]))
"""

# ARGV: prefix, n, then n x (target id, new calls, new failures). Per target one hash holds
# the fleet's calls/failures per Redis second (`c:<s>`, `f:<s>`) and their running sums over
# the last 60 s (`c`, `f`, from second `tail`): seconds leaving the window are subtracted
# once, by whichever replica syncs first, so a sync costs a few commands per target instead
# of one per second of the window. Returns {server second, server ms, then n x (fleet
# calls, fleet failures, rl bucket r, t, ts), breaker hash}; each replica takes its own
# pushes back out of the sums. A window hash whose fields are not integers where they must
# be (not written by this script) starts over; keys of another type read as empty.
SYNC = """
local function int(x)
  local v = tonumber(x)
  return v ~= nil and v == math.floor(v)
end
local function add(key, fld, by)
  local r = redis.pcall('HINCRBY', key, fld, by)
  if type(r) == 'table' and r.err then redis.call('HSET', key, fld, by) end
end
local function hash(key)
  return redis.call('TYPE', key).ok == 'hash'
end
local t = redis.call('TIME')
local sec = tonumber(t[1])
local prefix, n = ARGV[1], tonumber(ARGV[2])
local oldest = sec - 59
local out = {sec, sec * 1000 + math.floor(tonumber(t[2]) / 1000)}
for i = 0, n - 1 do
  local id, c, f = ARGV[3 + i * 3], tonumber(ARGV[4 + i * 3]), tonumber(ARGV[5 + i * 3])
  local key = prefix .. ':hw:' .. id
  if redis.call('EXISTS', key) == 1 and not hash(key) then redis.call('DEL', key) end
  local tail = tonumber(redis.call('HGET', key, 'tail'))
  local sums = redis.call('HMGET', key, 'c', 'f')
  if tail == nil or tail < oldest - 60 or tail > sec or not int(sums[1]) or not int(sums[2]) then
    -- new, untouched for over a minute (every field is older than the window), or unreadable
    redis.call('DEL', key)
    redis.call('HSET', key, 'tail', oldest, 'c', 0, 'f', 0)
  elseif tail < oldest then
    local dc, df = 0, 0
    for s = tail, oldest - 1 do
      local v = redis.call('HMGET', key, 'c:' .. s, 'f:' .. s)
      if v[1] or v[2] then
        dc, df = dc + (tonumber(v[1]) or 0), df + (tonumber(v[2]) or 0)
        redis.call('HDEL', key, 'c:' .. s, 'f:' .. s)
      end
    end
    -- 0 - x, not -x: Redis renders Lua's -0 as "-0", which HINCRBY refuses
    redis.call('HINCRBY', key, 'c', 0 - dc)
    redis.call('HINCRBY', key, 'f', 0 - df)
    redis.call('HSET', key, 'tail', oldest)
  end
  if c > 0 then
    add(key, 'c:' .. sec, c)
    redis.call('HINCRBY', key, 'c', c)
    if f > 0 then
      add(key, 'f:' .. sec, f)
      redis.call('HINCRBY', key, 'f', f)
    end
  end
  redis.call('EXPIRE', key, 120)
  sums = redis.call('HMGET', key, 'c', 'f')
  out[#out + 1] = tonumber(sums[1]) or 0
  out[#out + 1] = tonumber(sums[2]) or 0
  local rl = prefix .. ':rl:' .. id
  local b = hash(rl) and redis.call('HMGET', rl, 'r', 't', 'ts') or {false, false, false}
  out[#out + 1] = b[1]
  out[#out + 1] = b[2]
  out[#out + 1] = b[3]
end
local breakers = prefix .. ':breakers'
out[#out + 1] = hash(breakers) and redis.call('HGETALL', breakers) or {}
return out
"""

# KEYS[1]: the breakers hash. ARGV: channel, target id, payload, at (server ms). The newest
# transition wins: a replica back from a Redis outage may announce one older than what
# another replica wrote meanwhile. A stored record without a readable `at_ms` (every
# version has one), or one dated over a minute ahead of Redis' clock, is replaced: it must
# not pin the target's state for good.
PUBLISH = (
    _OWN_HASH
    + """
local old = redis.call('HGET', KEYS[1], ARGV[2])
if old then
  local ok, d = pcall(cjson.decode, old)
  local at = ok and type(d) == 'table' and tonumber(d.at_ms)
  local t = redis.call('TIME')
  if at and at >= tonumber(ARGV[4]) and at <= tonumber(t[1]) * 1000 + 60000 then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
return 1
"""
)

# Budget windows: one hash per (budget, window start) with `s` (settled spend) and `r`
# (reserved by requests in flight), integers in nano-dollars.
_OWN_HASHES = """
for i = 1, #KEYS do
  local kt = redis.call('TYPE', KEYS[i]).ok
  if kt ~= 'hash' and kt ~= 'none' then redis.call('DEL', KEYS[i]) end
end
"""

# KEYS: the request's budget windows. ARGV: amount, then n limits, then n TTLs in ms (0:
# none). Holds the amount against every window, or none of them: returns 0 when held, else
# the 1-based index of the first window whose spend reached its limit or has no room.
BUDGET_RESERVE = (
    _OWN_HASHES
    + """
local n, amount = #KEYS, tonumber(ARGV[1])
for i = 1, n do
  local b = redis.call('HMGET', KEYS[i], 's', 'r')
  local s, r, limit = tonumber(b[1]) or 0, tonumber(b[2]) or 0, tonumber(ARGV[1 + i])
  if s >= limit or s + r + amount > limit then return i end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], 'r', amount)
  local ttl = tonumber(ARGV[1 + n + i])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 0
"""
)

# KEYS: the windows a request held. ARGV: the amount held, then n actual costs. Returns
# each window's spend after.
BUDGET_SETTLE = (
    _OWN_HASHES
    + """
local out = {}
for i = 1, #KEYS do
  local r = redis.call('HINCRBY', KEYS[i], 'r', -tonumber(ARGV[1]))
  if r < 0 then redis.call('HSET', KEYS[i], 'r', 0) end
  out[i] = redis.call('HINCRBY', KEYS[i], 's', tonumber(ARGV[1 + i]))
end
return out
"""
)

# KEYS[1]: one window. ARGV: the spend the durable ledger holds for it, TTL ms (0: none).
# The first replica to touch the window starts it; later ones find it started.
BUDGET_SEED = (
    _OWN_HASHES
    + """
redis.call('HSETNX', KEYS[1], 's', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
)
