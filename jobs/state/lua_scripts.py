"""Lua scripts that make each multi-key job transition one atomic step in Redis.

Separate GET-then-SET round trips let two writers interleave: two submissions with one
Idempotency-Key both created a job, and a cancel racing the runner finished a job twice.
A script runs alone on the server, so each check and its writes cannot be split.
"""

from __future__ import annotations

# KEYS: job, active, created, owner ('' = none), events, idem ('' = none),
#       owner's stored audio ('' = none: hash job id -> bytes), jobs waited on ('' = the
#       job has no waiting caller)
# ARGV: record, id, created_at, progress, idem_ttl, max_active (0 = no cap), events_maxlen,
#       job key prefix (to find an idempotent twin), the owner's active-job cap (0 = none),
#       the owner's stored-bytes cap (0 = none), this upload's bytes, now
CREATE = """
if KEYS[6] ~= '' then
  local existing = redis.call('GET', KEYS[6])
  if existing and redis.call('EXISTS', ARGV[8] .. existing) == 1 then
    if KEYS[8] ~= '' then redis.call('ZADD', KEYS[8], ARGV[12], existing) end
    return {'existing', existing}
  end
end
local cap = tonumber(ARGV[6])
if cap > 0 and redis.call('SCARD', KEYS[2]) >= cap then
  return {'full', ''}
end
if KEYS[4] ~= '' then
  local key_cap = tonumber(ARGV[9])
  if key_cap > 0 then
    local mine = 0
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
      if redis.call('ZSCORE', KEYS[4], id) then mine = mine + 1 end
    end
    if mine >= key_cap then return {'key_full', tostring(mine)} end
  end
  local bytes_cap = tonumber(ARGV[10])
  if bytes_cap > 0 then
    local stored, entries = 0, redis.call('HGETALL', KEYS[7])
    for i = 1, #entries, 2 do
      if redis.call('EXISTS', ARGV[8] .. entries[i]) == 1 then
        stored = stored + tonumber(entries[i + 1])
      else
        redis.call('HDEL', KEYS[7], entries[i])  -- the job expired: its audio went first
      end
    end
    if stored + tonumber(ARGV[11]) > bytes_cap then return {'key_bytes', tostring(stored)} end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
if KEYS[4] ~= '' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', 'data', ARGV[4])
if KEYS[6] ~= '' then redis.call('SET', KEYS[6], ARGV[2], 'EX', ARGV[5]) end
if KEYS[7] ~= '' then redis.call('HSET', KEYS[7], ARGV[2], ARGV[11]) end
if KEYS[8] ~= '' then redis.call('ZADD', KEYS[8], ARGV[12], ARGV[2]) end
return {'created', ARGV[2]}
"""

# KEYS: job, active, finished, events, lease, outbox, webhook, then keys that expire with
#       a finished job (or persist again on requeue)
# ARGV: mode ('progress' | 'finish' | 'requeue'), record, id, progress ('' = no event),
#       events_maxlen, finished_at, ttl, lease token ('' = unfenced), webhook JSON ('' = none)
# Returns 'ok', or why nothing was written: 'missing', 'terminal', 'not_retryable', 'lease'.
TRANSITION = """
local current = redis.call('GET', KEYS[1])
if not current then return 'missing' end
local status = cjson.decode(current)['status']
local terminal = status == 'completed' or status == 'failed' or status == 'cancelled'
local mode = ARGV[1]
if mode == 'requeue' then
  if status ~= 'failed' and status ~= 'cancelled' then return 'not_retryable' end
elseif terminal then
  return 'terminal'
end
if ARGV[8] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[8] then return 'lease' end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'data', ARGV[4])
end
if mode == 'finish' then
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[3])
  for i = 8, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
  if ARGV[9] ~= '' then
    redis.call('SET', KEYS[7], ARGV[9])
    redis.call('ZADD', KEYS[6], 0, ARGV[3])
  end
else
  redis.call('SADD', KEYS[2], ARGV[3])
  if mode == 'requeue' then
    redis.call('ZREM', KEYS[3], ARGV[3])
    for i = 8, #KEYS do redis.call('PERSIST', KEYS[i]) end
  end
end
return 'ok'
"""

# KEYS: lease.  ARGV: token, ttl_ms.  Take a free lease or extend our own.
CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease.  ARGV: token.  Drop the lease only if we still hold it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: outbox.  ARGV: id, now, busy_until.  Claim a due entry (push its time past a try).
CLAIM_DUE = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

# Writes a runner makes while it works. Each is fenced by its lease (a runner that lost
# the job to another manager writes nothing) and safe to send twice: redis-py resends a
# command whose reply was lost, and a second APPEND or RENAME would corrupt or fail.
_FENCE = "if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lease' end\n"

# KEYS: lease, key.  ARGV: token, replace ('1' = delete the key first), field, value, ...
FENCED_HSET = (
    _FENCE
    + """
if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 'ok'
"""
)

# KEYS: lease, partial result.  ARGV: token, byte offset the chunk starts at, chunk, ttl.
# A resent append finds its chunk already there and does nothing.
APPEND_AT = (
    _FENCE
    + """
local size, offset = redis.call('STRLEN', KEYS[2]), tonumber(ARGV[2])
if size == offset then
  redis.call('APPEND', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  return 'ok'
end
if size == offset + string.len(ARGV[3]) then return 'ok' end
return 'gap'
"""
)

# KEYS: lease, partial result, result.  ARGV: token, the result's length in bytes.
# A resent commit finds the result published (of the same length) and succeeds.
COMMIT = (
    _FENCE
    + """
if redis.call('STRLEN', KEYS[2]) == tonumber(ARGV[2]) then
  redis.call('RENAME', KEYS[2], KEYS[3])
  redis.call('PERSIST', KEYS[3])
  return 'ok'
end
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('STRLEN', KEYS[3]) == tonumber(ARGV[2]) then
  return 'ok'
end
return 'gap'
"""
)
