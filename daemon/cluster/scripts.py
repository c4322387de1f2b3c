"""The queue's transitions as Lua scripts: each runs whole inside Redis, so no two nodes ever see
a job half-moved (a claim racing a cancel, two takeovers of one entry).

Keys, all under the prefix `<cluster.name>:` (ARGV[1]; several libraries share one Redis):
  job:<id>        hash: the job's fields (daemon.journal.Job) + `queue`, `entry` (its stream
                  entry while it waits or runs) and `holder` (the node running it)
  ident:<sha1>    the job id of an input identity (rel_path, size, mtime), set once (NX)
  path:<sha1>     set: the ids of every job of one input path (`outputs_of`)
  state:<state>   sorted set: ids in that state by updated_at; `all`: every id likewise
  due             sorted set: retry_wait ids by next_attempt_at
  claimed         hash: each node's last claim (its token, the job id, the entry)
  levels          sorted set: the priority levels that have a stream
  q:<priority>    the stream of one priority level, consumer group `workers`; an entry
                  {job: <id>} is a job waiting (unread) or running (pending, owned by the
                  node that claimed it: its heartbeats keep the entry's idle time low)
Streams are FIFO, so priority is a stream per level, read highest first: a claim takes the
oldest entry of the highest level. A job re-enters the back of its level when it is requeued,
due again after a retry wait, reset or prioritized (SQLite orders those by created_at).
"""

from __future__ import annotations

PRELUDE = """
local P = ARGV[1]
local GROUP = 'workers'
local function job_key(id) return P .. 'job:' .. id end
local function set_state(id, old, new, now)
  if old then redis.call('ZREM', P .. 'state:' .. old, id) end
  redis.call('ZADD', P .. 'state:' .. new, now, id)
  redis.call('ZADD', P .. 'all', now, id)
  redis.call('HSET', job_key(id), 'state', new, 'updated_at', now)
end
local function enqueue(id)
  local prio = redis.call('HGET', job_key(id), 'priority') or '0'
  local s = P .. 'q:' .. prio
  if redis.call('EXISTS', s) == 0 then
    redis.call('XGROUP', 'CREATE', s, GROUP, '0', 'MKSTREAM')
  end
  redis.call('ZADD', P .. 'levels', tonumber(prio), prio)
  local entry = redis.call('XADD', s, '*', 'job', id)
  redis.call('HSET', job_key(id), 'queue', s, 'entry', entry)
  redis.call('HDEL', job_key(id), 'holder')
end
local function drop_ticket(id)
  local t = redis.call('HMGET', job_key(id), 'queue', 'entry')
  if t[1] and t[2] then
    redis.call('XACK', t[1], GROUP, t[2])
    redis.call('XDEL', t[1], t[2])
  end
  redis.call('HDEL', job_key(id), 'queue', 'entry', 'holder')
end
"""

# ARGV: prefix, identity sha, path sha, new id, now, state, field, value, ...
# → the job's fields (HGETALL), or false when the identity already has a job
ADMIT = PRELUDE + """
local ident = P .. 'ident:' .. ARGV[2]
local now = ARGV[5]
local old = redis.call('GET', ident)
if old then
  local st = redis.call('HMGET', job_key(old), 'state', 'error')
  if st[1] ~= 'canceled' or st[2] ~= 'vanished' then return false end
  -- its file had vanished (a share unmounted) and is back: the same job, afresh
  redis.call('HSET', job_key(old), 'attempts', 0)
  redis.call('HDEL', job_key(old), 'error', 'message', 'finished_at')
  set_state(old, 'canceled', 'queued', now)
  enqueue(old)
  return redis.call('HGETALL', job_key(old))
end
local id, state = ARGV[4], ARGV[6]
redis.call('SET', ident, id)
redis.call('HSET', job_key(id), unpack(ARGV, 7))
redis.call('SADD', P .. 'path:' .. ARGV[3], id)
set_state(id, nil, state, now)
if state == 'queued' then enqueue(id) end
return redis.call('HGETALL', job_key(id))
"""

# ARGV: prefix, identity sha → 1 when the identity has a job that counts (not a vanished one)
KNOWN = PRELUDE + """
local id = redis.call('GET', P .. 'ident:' .. ARGV[2])
if not id then return 0 end
local st = redis.call('HMGET', job_key(id), 'state', 'error')
if st[1] == 'canceled' and st[2] == 'vanished' then return 0 end
return 1
"""

# ARGV: prefix, consumer (node), now, claim token → {entry, HGETALL...} of the claimed job, or
# false. Due retries enter their level's stream first; an entry whose job moved on meanwhile is
# acknowledged and dropped. The node keeps its token until a reply reaches it, so a claim asked
# again after its reply was lost returns the job it took then (`claimed`: node → token, id,
# entry), instead of a second job while the first waits, charged, for `recover`.
CLAIM = PRELUDE + """
local consumer, now, token = ARGV[2], ARGV[3], ARGV[4]
local last = redis.call('HGET', P .. 'claimed', consumer)
if last then
  local t, lid, leid = string.match(last, '^(%S+) (%S+) (%S+)$')
  local j = redis.call('HMGET', job_key(lid), 'state', 'entry', 'holder')
  if t == token and j[1] == 'running' and j[2] == leid and j[3] == consumer then
    local out = redis.call('HGETALL', job_key(lid))
    table.insert(out, 1, leid)
    return out
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', now, 'LIMIT', 0, 100)) do
  redis.call('ZREM', P .. 'due', id)
  if redis.call('HGET', job_key(id), 'state') == 'retry_wait' then enqueue(id) end
end
for _, lvl in ipairs(redis.call('ZREVRANGE', P .. 'levels', 0, -1)) do
  local s = P .. 'q:' .. lvl
  for _ = 1, 1000 do
    local got = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', 1,
                           'STREAMS', s, '>')
    if not got then break end
    local entry = got[1][2][1]
    local eid, id = entry[1], entry[2][2]
    local j = redis.call('HMGET', job_key(id), 'state', 'queue', 'entry')
    if (j[1] == 'queued' or j[1] == 'retry_wait') and j[2] == s and j[3] == eid then
      redis.call('HINCRBY', job_key(id), 'attempts', 1)
      redis.call('HSET', job_key(id), 'started_at', now, 'holder', consumer)
      redis.call('HDEL', job_key(id), 'next_attempt_at')
      set_state(id, j[1], 'running', now)
      redis.call('HSET', P .. 'claimed', consumer, token .. ' ' .. id .. ' ' .. eid)
      local out = redis.call('HGETALL', job_key(id))
      table.insert(out, 1, eid)
      return out
    end
    redis.call('XACK', s, GROUP, eid)
    redis.call('XDEL', s, eid)
  end
end
return false
"""

# ARGV: prefix, id, held entry ('' = none), to state, now, from states (comma separated),
# 'refund' or '', n, n field/value pairs, fields to delete... → 1 when moved, 0 when the job
# is in none of the from states (or runs, but not under the caller's entry). A move out of a
# held entry is noted (`moved`: entry>state), so the same move asked again after its reply was
# lost answers 1 without acting twice (an entry is one claim's: a requeue makes a new one).
MOVE = PRELUDE + """
local id, held, to, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jk = job_key(id)
local st = redis.call('HMGET', jk, 'state', 'entry')
local from = st[1]
if not from then return 0 end
local allowed = false
for s in string.gmatch(ARGV[6], '[^,]+') do
  if s == from then allowed = true end
end
if not allowed or (from == 'running' and st[2] ~= held) then
  -- this very move, made before its reply was lost (a cut connection, Redis killed): done
  if held ~= '' and from == to and redis.call('HGET', jk, 'moved') == held .. '>' .. to then
    return 1
  end
  return 0
end
drop_ticket(id)
if held ~= '' then redis.call('HSET', jk, 'moved', held .. '>' .. to) end
redis.call('ZREM', P .. 'due', id)
local n = tonumber(ARGV[8])
if n > 0 then redis.call('HSET', jk, unpack(ARGV, 9, 8 + 2 * n)) end
if #ARGV >= 9 + 2 * n then redis.call('HDEL', jk, unpack(ARGV, 9 + 2 * n)) end
if ARGV[7] == 'refund' then
  local attempts = tonumber(redis.call('HGET', jk, 'attempts') or '0')
  redis.call('HSET', jk, 'attempts', math.max(attempts - 1, 0))
end
set_state(id, from, to, now)
if to == 'queued' then enqueue(id) end
if to == 'retry_wait' then
  redis.call('ZADD', P .. 'due', redis.call('HGET', jk, 'next_attempt_at'), id)
end
return 1
"""

# ARGV: prefix, id, held entry, consumer → 1 when the entry is still this node's (its idle
# time starts again), 0 when the job was taken over or has ended
HEARTBEAT = PRELUDE + """
local t = redis.call('HMGET', job_key(ARGV[2]), 'state', 'queue', 'entry')
if t[1] ~= 'running' or t[3] ~= ARGV[3] then return 0 end
return #redis.call('XCLAIM', t[2], GROUP, ARGV[4], 0, ARGV[3], 'JUSTID')
"""

# ARGV: prefix, id, held entry, now, JSON ('' forgets the note) → 1 when noted
WRITTEN = PRELUDE + """
local jk = job_key(ARGV[2])
local t = redis.call('HMGET', jk, 'state', 'entry')
if t[1] ~= 'running' or t[2] ~= ARGV[3] then return 0 end
if ARGV[5] == '' then redis.call('HDEL', jk, 'written')
else redis.call('HSET', jk, 'written', ARGV[5]) end
set_state(ARGV[2], 'running', 'running', ARGV[4])
return 1
"""

# ARGV: prefix, consumer, min idle ms ('' = only this node's own), max attempts, now, the
# entries this node holds... → {requeued count, {ids failed for good}}.
# Takes over the entries of dead workers: this node's own from before a restart at once, and
# (with a min idle) any entry no heartbeat touched for that long (XAUTOCLAIM). The attempt the
# dead worker was charged stays charged, so a file that kills every worker that takes it fails
# after max_attempts (unless it noted whole outputs: the next claim finishes it from them).
REAP = PRELUDE + """
local consumer, min_idle, max_attempts, now = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local held = {}
for i = 6, #ARGV do held[ARGV[i]] = true end
local requeued, failed = 0, {}
local function reap(s, entry)
  local p = redis.call('XPENDING', s, GROUP, entry, entry, 1)
  if #p == 0 or p[1][2] ~= consumer then return end  -- a heartbeat took it back just now
  local e = redis.call('XRANGE', s, entry, entry)
  if #e == 0 then redis.call('XACK', s, GROUP, entry) return end
  local id = e[1][2][2]
  local jk = job_key(id)
  local j = redis.call('HMGET', jk, 'state', 'queue', 'entry', 'attempts', 'written')
  if j[2] ~= s or j[3] ~= entry then
    redis.call('XACK', s, GROUP, entry)
    redis.call('XDEL', s, entry)
    return
  end
  local attempts = tonumber(j[4] or '0')
  drop_ticket(id)
  if j[1] == 'running' and attempts >= max_attempts and not j[5] then
    redis.call('HSET', jk, 'error', 'crashed', 'finished_at', now, 'message',
      'the worker processing this file stopped abruptly (killed, or silent for'
      .. ' cluster.claim_timeout) ' .. attempts .. ' times')
    set_state(id, 'running', 'failed', now)
    table.insert(failed, id)
    return
  end
  if j[1] == 'running' then set_state(id, 'running', 'queued', now) end
  enqueue(id)
  requeued = requeued + 1
end
for _, lvl in ipairs(redis.call('ZRANGE', P .. 'levels', 0, -1)) do
  local s = P .. 'q:' .. lvl
  for _, p in ipairs(redis.call('XPENDING', s, GROUP, '-', '+', 100, consumer)) do
    if not held[p[1]] then reap(s, p[1]) end
  end
  if min_idle ~= '' then
    local got = redis.call('XAUTOCLAIM', s, GROUP, consumer, min_idle, '0-0', 'COUNT', 100,
                           'JUSTID')
    for _, entry in ipairs(got[2]) do
      if not held[entry] then reap(s, entry) end
    end
  end
end
return {requeued, failed}
"""

# ARGV: prefix, run (a node's life), seq, cap, type, job id, timestamp, payload JSON
# → the event's id, or 0 when this run's seq was stored already (a batch sent again after a
# lost reply). Ids count up from the first node's start time in ms, like a lone daemon's.
EVENT = """
local P = ARGV[1]
local seen = P .. 'events:sent:' .. ARGV[2]
local seq = tonumber(ARGV[3])
if seq <= tonumber(redis.call('GET', seen) or '0') then return 0 end
redis.call('SET', seen, seq, 'EX', 86400)
local id = redis.call('INCR', P .. 'events:id')
redis.call('XADD', P .. 'events', 'MAXLEN', '~', ARGV[4], id .. '-0', 'run', ARGV[2],
           'type', ARGV[5], 'job', ARGV[6], 'ts', ARGV[7], 'payload', ARGV[8])
return id
"""
