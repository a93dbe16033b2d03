package outcome

import "github.com/redis/go-redis/v9"

// The Lua scripts of the Store. Each runs as one EVALSHA. Index keys are
// computed inside the scripts from the prefix and the suffixes stored in a
// record, so the Store needs a single Redis node (not Redis Cluster).

// finishScript writes a record, replacing an earlier one of the same task.
//
// KEYS: 1 record hash, 2 rate state hash, 3 stats hash.
// ARGV: 1 index key prefix, 2 task ID, 3 record JSON, 4 attempts known to the
// caller, 5 project ID, 6 score (finished_at in ms), 7 index suffixes and
// 8 stats fields, both newline-separated.
// Returns the total attempts: ARGV[4] plus the rate-limited calls.
var finishScript = redis.NewScript(`
local rec, rl, stats = KEYS[1], KEYS[2], KEYS[3]
local prefix, id = ARGV[1], ARGV[2]
local old = redis.call('HMGET', rec, 'index', 'stats')
if old[1] then
  for s in string.gmatch(old[1], '[^\n]+') do
    redis.call('ZREM', prefix .. s, id)
  end
  for f in string.gmatch(old[2] or '', '[^\n]+') do
    if redis.call('HINCRBY', stats, f, -1) <= 0 then redis.call('HDEL', stats, f) end
  end
end
local attempts = tonumber(ARGV[4]) + tonumber(redis.call('HGET', rl, 'calls') or '0')
redis.call('HSET', rec, 'record', ARGV[3], 'attempts', attempts, 'project', ARGV[5],
  'index', ARGV[7], 'stats', ARGV[8])
for s in string.gmatch(ARGV[7], '[^\n]+') do
  redis.call('ZADD', prefix .. s, ARGV[6], id)
end
for f in string.gmatch(ARGV[8], '[^\n]+') do
  redis.call('HINCRBY', stats, f, 1)
end
redis.call('DEL', rl)
return attempts
`)

// rateLimitedScript counts one 429 of a task that is not final yet.
//
// KEYS: 1 rate state hash. ARGV: 1 now in ms, 2 time to live in ms.
// Returns {calls so far, ms of the first call}.
var rateLimitedScript = redis.NewScript(`
local calls = redis.call('HINCRBY', KEYS[1], 'calls', 1)
redis.call('HSETNX', KEYS[1], 'since', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {calls, tonumber(redis.call('HGET', KEYS[1], 'since'))}
`)

// latestScript finds the newest record of a user, optionally in one project.
//
// KEYS: 1 user index. ARGV: 1 record key prefix, 2 project ID or "" for any,
// 3 most index entries to look at.
// Returns {record JSON, attempts} or nil.
var latestScript = redis.NewScript(`
local limit, step = tonumber(ARGV[3]), 20
for start = 0, limit - 1, step do
  local ids = redis.call('ZREVRANGE', KEYS[1], start, math.min(start + step, limit) - 1)
  for _, id in ipairs(ids) do
    local r = redis.call('HMGET', ARGV[1] .. id, 'record', 'attempts', 'project')
    if r[1] and (ARGV[2] == '' or r[3] == ARGV[2]) then return {r[1], r[2]} end
  end
  if #ids < step then break end
end
return false
`)

// scanScript reads index entries after a position, newest first. The position
// is a score and a member: the entries after it are those with a lower score,
// and those with the same score and a lower member. When the member is still
// in the index at that score its rank gives the start; otherwise the start is
// the first entry at or below the score and the caller skips the entries that
// are not after the position.
//
// KEYS: 1 index. ARGV: 1 score (ms, or +inf), 2 member or "", 3 count.
// Returns a flat list of member, score pairs.
var scanScript = redis.NewScript(`
local key, max, member, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local start
if member ~= '' then
  local sc = redis.call('ZSCORE', key, member)
  if sc and tonumber(sc) == tonumber(max) then
    start = redis.call('ZREVRANK', key, member) + 1
  end
end
if not start then start = redis.call('ZCOUNT', key, '(' .. max, '+inf') end
return redis.call('ZREVRANGE', key, start, start + count - 1, 'WITHSCORES')
`)

// trimScript removes up to a batch of records finished before a cutoff.
//
// KEYS: 1 index of all records, 2 stats hash. ARGV: 1 index key prefix,
// 2 record key prefix, 3 cutoff in ms (exclusive), 4 batch size.
// Returns how many records it removed.
var trimScript = redis.NewScript(`
local all, stats, prefix = KEYS[1], KEYS[2], ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', all, '-inf', '(' .. ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  local rec = ARGV[2] .. id
  local old = redis.call('HMGET', rec, 'index', 'stats')
  for s in string.gmatch(old[1] or '', '[^\n]+') do
    redis.call('ZREM', prefix .. s, id)
  end
  for f in string.gmatch(old[2] or '', '[^\n]+') do
    if redis.call('HINCRBY', stats, f, -1) <= 0 then redis.call('HDEL', stats, f) end
  end
  redis.call('ZREM', all, id)
  redis.call('DEL', rec)
end
return #ids
`)
