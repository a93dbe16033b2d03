package outcome

import "github.com/redis/go-redis/v9"

// The Lua scripts of the Store. Each runs as one EVALSHA, and every key it
// touches is passed in KEYS, all of one shard (one hash tag on a cluster). A
// record keeps the suffixes of the index keys that list it; a script that
// must remove it from them is given the keys (prefix + suffix) and looks the
// suffixes up among them.

// finishScript writes one or more records, each replacing an earlier one of
// the same task, as if they were written one after the other in the order
// given, except that a record of status sent is never replaced by one of
// another status: an email that went out stays sent. The index entries and
// stats counts of the records are added at the end, one ZADD per index key
// and one HINCRBY per stats field for all of them (first, before a record
// that replaces one of the same run).
//
// KEYS: 1 stats hash, then for each record: its record hash, its rate
// state hash and its attempt history; then the index keys (the index key
// prefix and a suffix) of the records written and of those they replace.
// A history, which only a task with a running state has (see
// addAttemptScript), stops expiring: Trim removes it with the record.
// ARGV: 1 index key prefix, 2 number of records, then for each record eight
// values: task ID, record JSON, attempts known to the caller, project ID,
// score (finished_at in ms), index suffixes and stats fields, both
// newline-separated, and status.
// Returns two values per record: its total attempts (the attempts passed
// plus the task's rate-limited calls) and "" when it was written; or, when
// the task's sent record was kept instead, that record's attempts and JSON.
// When a record it would replace is listed in an index whose key it was not
// given, it writes nothing and returns -1 and the suffixes of those indexes.
var finishScript = redis.NewScript(indexKeysLua + `
local stats, nrec = KEYS[1], tonumber(ARGV[2])
local idx = indexKeys(ARGV[1], 1 + 3 * nrec)
local missing = {}
for r = 1, nrec do
  local old = redis.call('HGET', KEYS[3 * r - 1], 'index')
  for s in string.gmatch(old or '', '[^\n]+') do
    if not idx[s] then missing[#missing + 1] = s; idx[s] = true end
  end
end
if #missing > 0 then return {-1, unpack(missing)} end
local out, seen, adds, keys, counts, fields = {}, {}, {}, {}, {}, {}
local function flush()
  for _, k in ipairs(keys) do redis.call('ZADD', idx[k], unpack(adds[k])) end
  for _, f in ipairs(fields) do redis.call('HINCRBY', stats, f, counts[f]) end
  adds, keys, counts, fields, seen = {}, {}, {}, {}, {}
end
local function sent(index)
  return string.find('\n' .. index .. '\n', '\nstatus:sent\n', 1, true) ~= nil
end
-- write replaces the record of task id with the one at ARGV[a + 2] and
-- returns its attempts.
local function write(rec, rl, hist, a, id, index, counters, old)
  if old[1] then
    for s in string.gmatch(old[1], '[^\n]+') do
      redis.call('ZREM', idx[s], id)
    end
    for f in string.gmatch(old[2] or '', '[^\n]+') do
      if redis.call('HINCRBY', stats, f, -1) <= 0 then redis.call('HDEL', stats, f) end
    end
  end
  local attempts = tonumber(ARGV[a + 3])
  local calls, held, history = unpack(redis.call('HMGET', rl, 'calls', 'held', 'history'))
  if calls then attempts = attempts + tonumber(calls) end
  if history then redis.call('PERSIST', hist) end
  if calls or held or history then redis.call('DEL', rl) end
  redis.call('HSET', rec, 'record', ARGV[a + 2], 'attempts', attempts, 'project', ARGV[a + 4],
    'index', index, 'stats', counters, 'status', ARGV[a + 8])
  for s in string.gmatch(index, '[^\n]+') do
    local t = adds[s]
    if not t then t = {}; adds[s] = t; keys[#keys + 1] = s end
    t[#t + 1] = ARGV[a + 5]
    t[#t + 1] = id
  end
  for f in string.gmatch(counters, '[^\n]+') do
    if not counts[f] then counts[f] = 0; fields[#fields + 1] = f end
    counts[f] = counts[f] + 1
  end
  return attempts
end
for r = 1, nrec do
  local rec, rl, hist, a = KEYS[3 * r - 1], KEYS[3 * r], KEYS[3 * r + 1], 8 * (r - 1) + 2
  local id, index, counters = ARGV[a + 1], ARGV[a + 6], ARGV[a + 7]
  if seen[id] then flush() end
  seen[id] = true
  local old = redis.call('HMGET', rec, 'index', 'stats', 'record', 'attempts')
  if old[1] and sent(old[1]) and not sent(index) then
    redis.call('PERSIST', hist)
    redis.call('DEL', rl)
    out[2 * r - 1], out[2 * r] = tonumber(old[4]), old[3]
  else
    out[2 * r - 1], out[2 * r] = write(rec, rl, hist, a, id, index, counters, old), ''
  end
end
flush()
return out
`)

// indexKeysLua defines indexKeys(prefix, from), which maps the suffix of
// each key KEYS[from + 1], ... that starts with prefix to the key: the
// index keys a script was given, by the suffixes records keep.
const indexKeysLua = `
local function indexKeys(prefix, from)
  local idx = {}
  for i = from + 1, #KEYS do
    if string.sub(KEYS[i], 1, #prefix) == prefix then idx[string.sub(KEYS[i], #prefix + 1)] = KEYS[i] end
  end
  return idx
end
`

// rateLimitedScript counts one 429 of a task that is not final yet.
//
// KEYS: 1 the task's running state. ARGV: 1 time to live in ms.
// Returns {calls so far, ms of waits recorded}.
var rateLimitedScript = redis.NewScript(`
local calls = redis.call('HINCRBY', KEYS[1], 'calls', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {calls, tonumber(redis.call('HGET', KEYS[1], 'waited') or '0')}
`)

// addWaitScript adds to one of a task's waits: waited (asked by its 429s)
// or held (by outages).
//
// KEYS: 1 the task's running state. ARGV: 1 the field, 2 ms to add, 3 time
// to live in ms. Returns the total ms.
var addWaitScript = redis.NewScript(`
local total = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return total
`)

// addAttemptScript appends one attempt to a task's history, keeps the
// newest, and marks the task's running state as having a history, so that
// Finish keeps the history without a command for tasks that have none.
//
// KEYS: 1 the history list, 2 the task's running state. ARGV: 1 the
// attempt as JSON, 2 most attempts kept, 3 time to live in ms.
var addAttemptScript = redis.NewScript(`
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], 'history', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
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

// expiredScript lists up to a batch of records that finished more than the
// retention period ago by Redis's clock.
//
// KEYS: 1 index of all records. ARGV: 1 retention in ms, 2 batch size.
// Returns their task IDs, oldest first.
var expiredScript = redis.NewScript(`
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'LIMIT', 0, tonumber(ARGV[2]))
`)

// removeScript removes records with their index entries, stats counts,
// running states and attempt histories.
//
// KEYS: 1 index of all records, 2 stats hash, then for each record: its
// record hash, its running state and its attempt history; then the index
// keys that list the records (the index key prefix and a suffix).
// ARGV: 1 index key prefix, 2... the records' task IDs.
// Returns how many records it removed; or, when a record is listed in an
// index whose key it was not given, it removes nothing and returns -1 and
// the suffixes of those indexes.
var removeScript = redis.NewScript(indexKeysLua + `
local all, stats, nrec = KEYS[1], KEYS[2], #ARGV - 1
local idx = indexKeys(ARGV[1], 2 + 3 * nrec)
local olds, missing = {}, {}
for r = 1, nrec do
  olds[r] = redis.call('HMGET', KEYS[3 * r], 'index', 'stats')
  for s in string.gmatch(olds[r][1] or '', '[^\n]+') do
    if not idx[s] then missing[#missing + 1] = s; idx[s] = true end
  end
end
if #missing > 0 then return {-1, unpack(missing)} end
local n = 0
for r = 1, nrec do
  local id, old = ARGV[r + 1], olds[r]
  for s in string.gmatch(old[1] or '', '[^\n]+') do
    redis.call('ZREM', idx[s], id)
  end
  for f in string.gmatch(old[2] or '', '[^\n]+') do
    if redis.call('HINCRBY', stats, f, -1) <= 0 then redis.call('HDEL', stats, f) end
  end
  redis.call('ZREM', all, id)
  redis.call('DEL', KEYS[3 * r + 1], KEYS[3 * r + 2])
  n = n + redis.call('DEL', KEYS[3 * r])
end
return {n}
`)
