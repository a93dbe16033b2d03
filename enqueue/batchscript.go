package enqueue

import (
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// How a batch writes its tasks. asynq v0.26 enqueues a task with one Lua
// script call per task (one round trip each) and has no batch call. A batch
// lets asynq's own Client build every task (options, defaults and the
// protobuf message, which lives in an internal package) on a Redis client
// that captures the script call instead of sending it. The captured keys
// and arguments of up to batchChunk rows then go to Redis in one call of
// batchEnqueueScript (after one read of the rows' dedup claims), which writes for each row exactly what asynq's
// enqueue script writes (the task hash and its ID on the pending list),
// unless the task ID is taken or the task's outcome record exists. The
// check and the write are thus one atomic step, and asynq's tools
// (asynqmon, the Inspector, the server) see ordinary tasks.
//
// The capture is used only when the script asynq calls is the one copied
// below (same SHA-1), so that what batchEnqueueScript writes is what that
// asynq version writes: another asynq version makes batches fall back to
// checking and enqueueing each row with asynq's own call, slower but just
// as safe. So does every row on Redis Cluster, where a row's keys lie in
// different slots (see batchRun.process).

// asynqEnqueueSource is asynq v0.26's enqueue script (internal/rdb's
// enqueueCmd), byte for byte.
//
// KEYS[1] asynq:{<queue>}:t:<task_id>, KEYS[2] asynq:{<queue>}:pending;
// ARGV[1] the encoded task message, ARGV[2] the task ID, ARGV[3] now in ns.
// Returns 1 when enqueued, 0 when the task ID is taken.
const asynqEnqueueSource = `
if redis.call("EXISTS", KEYS[1]) == 1 then
	return 0
end
redis.call("HSET", KEYS[1],
           "msg", ARGV[1],
           "state", "pending",
           "pending_since", ARGV[3])
redis.call("LPUSH", KEYS[2], ARGV[2])
return 1
`

// asynqEnqueueSHA is the SHA-1 under which asynq runs asynqEnqueueSource.
var asynqEnqueueSHA = func() string {
	sum := sha1.Sum([]byte(asynqEnqueueSource))
	return hex.EncodeToString(sum[:])
}()

// batchEnqueueScript enqueues many tasks of one queue, each as
// asynqEnqueueSource does unless its task ID is taken, its outcome record
// exists or, with a dedup window, another resend of the same user holds
// the user's dedup claim (see Enqueue) — a claim held by a task that ended
// as a dead letter does not count. A task it enqueues takes the user's
// claim for the window, as Enqueue would. It returns one reply per task:
// replyEnqueued, replyAlready, or replyPending when another enqueue of the
// user is under way (the caller then goes row by row, which waits for it). The IDs go on the pending list in one
// LPUSH, in the order of the tasks, as one LPUSH per task would leave them.
//
// Every key it touches is in KEYS. The record of the task that holds a
// user's claim is read with the claim: the caller reads the claims first
// (scriptRows.run) and passes each holder and its record's key; a claim
// found changed since counts as replyPending.
//
// For task i from 0: KEYS[5i+1] asynq:{<queue>}:t:<task_id>,
// KEYS[5i+2] asynq:{<queue>}:pending, KEYS[5i+3] the outcome record,
// KEYS[5i+4] the user's dedup claim, KEYS[5i+5] the outcome record of the
// task that held the claim when the caller read it; ARGV[4i+1] the encoded
// task message, ARGV[4i+2] the task ID, ARGV[4i+3] now in ns (the keys and
// arguments asynq passes, plus three keys), ARGV[4i+4] the claim as the
// caller read it ("" for none). Then three more ARGV: the dedup window in
// ms (0: none), outcome.StatusField (the one field of a record read here)
// and outcome.StatusDeadLetter.
var batchEnqueueScript = redis.NewScript(`
local replies, ids = {}, {}
local hold, statusField, dead = tonumber(ARGV[#ARGV - 2]), ARGV[#ARGV - 1], ARGV[#ARGV]
-- claimed returns 0 when the row may take the user's claim (none, its
-- own, or a dead letter's), 1 when another resend holds it, 2 when another
-- enqueue of the user is under way (its claim is pending) or the claim
-- changed since the caller read it.
local function claimed(key, id, seen, holderRecord)
	if hold <= 0 then return 0 end
	local held = redis.call("GET", key)
	if not held or held == id or held == "pending:" .. id then return 0 end
	if string.sub(held, 1, 8) == "pending:" or held ~= seen then return 2 end
	if redis.call("HGET", holderRecord, statusField) == dead then return 0 end
	return 1
end
for i = 0, #KEYS / 5 - 1 do
	local k, a, r = 5 * i, 4 * i, 0
	if redis.call("EXISTS", KEYS[k + 1], KEYS[k + 3]) == 0 then
		local c = claimed(KEYS[k + 4], ARGV[a + 2], ARGV[a + 4], KEYS[k + 5])
		if c == 2 then
			r = 2
		elseif c == 0 then
			redis.call("HSET", KEYS[k + 1],
			           "msg", ARGV[a + 1],
			           "state", "pending",
			           "pending_since", ARGV[a + 3])
			if hold > 0 then redis.call("SET", KEYS[k + 4], ARGV[a + 2], "PX", hold) end
			ids[#ids + 1] = ARGV[a + 2]
			r = 1
		end
	end
	replies[i + 1] = r
end
if #ids > 0 then
	redis.call("LPUSH", KEYS[2], unpack(ids))
end
return replies
`)

// scriptRow is one task for batchEnqueueScript: asynq's captured enqueue
// call, the task ID and its user's dedup claim key.
type scriptRow struct {
	call      scriptCall
	id, claim string
}

// runBatchScript enqueues rows with batchEnqueueScript in two round trips:
// one reads the users' claims (none without a dedup window), one runs the
// script. It returns one reply per row. Once asked, the enqueue is settled
// even when ctx ends. Run loads the script again if Redis lost it (a
// restart, SCRIPT FLUSH).
func (e *Enqueuer) runBatchScript(ctx context.Context, rows []scriptRow) ([]int64, error) {
	hold := max(e.opts.DedupWindow, 0).Milliseconds()
	held := make([]*redis.StringCmd, len(rows))
	if hold > 0 {
		_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, r := range rows {
				held[i] = p.Get(ctx, r.claim)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read the users' dedup claims: %w", err)
		}
	}
	keys := make([]string, 0, 5*len(rows))
	args := make([]any, 0, 4*len(rows)+3)
	for i, r := range rows {
		seen := ""
		if held[i] != nil {
			seen = held[i].Val()
		}
		holder := cmp.Or(strings.TrimPrefix(seen, pendingMark), r.id)
		keys = append(keys, r.call.keys[0], r.call.keys[1], e.outcomes.RecordKey(r.id), r.claim, e.outcomes.RecordKey(holder))
		args = append(append(args, r.call.args...), seen)
	}
	args = append(args, hold, outcome.StatusField, string(outcome.StatusDeadLetter))
	replies, err := batchEnqueueScript.Run(context.WithoutCancel(ctx), e.rdb, keys, args...).Int64Slice()
	if err == nil && len(replies) != len(rows) {
		err = fmt.Errorf("%d replies for %d resends", len(replies), len(rows))
	}
	return replies, err
}

// Replies of batchEnqueueScript.
const (
	replyAlready  = 0 // the task ID is held (the task waits, runs, retries or is archived), the task is done, or the user was sent another resend within the dedup window
	replyEnqueued = 1
	replyPending  = 2 // another enqueue of the user holds a pending claim
)

// scriptCall is one captured call of asynq's enqueue script.
type scriptCall struct {
	sha  string
	keys []string
	args []any
}

type captureKey struct{}

// capturingClient is the Redis client of the asynq Client that builds a
// batch's tasks: a script call whose context carries a *scriptCall is
// recorded there and answered "enqueued" without reaching Redis; every
// other call (asynq registers the queue name once with SADD) goes to Redis.
type capturingClient struct {
	redis.UniversalClient
}

// EvalSha records the call when ctx asks for it.
func (c capturingClient) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	call, ok := ctx.Value(captureKey{}).(*scriptCall)
	if !ok {
		return c.UniversalClient.EvalSha(ctx, sha, keys, args...)
	}
	call.sha, call.keys, call.args = sha, keys, args
	return redis.NewCmdResult(int64(1), nil)
}

// Eval must not run a captured call: EvalSha never reports NOSCRIPT to it.
func (c capturingClient) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	if _, ok := ctx.Value(captureKey{}).(*scriptCall); ok {
		return redis.NewCmdResult(nil, errors.New("enqueue: unexpected EVAL of a captured script"))
	}
	return c.UniversalClient.Eval(ctx, script, keys, args...)
}

// isAsynqEnqueue reports whether the call is asynqEnqueueSource's, with
// the keys and arguments batchEnqueueScript expects.
func (c scriptCall) isAsynqEnqueue() bool {
	return c.sha == asynqEnqueueSHA && len(c.keys) == 2 && len(c.args) == 3
}

// capture has client build the enqueue call of task without sending it.
func capture(client *asynq.Client, task *asynq.Task, queue, taskID string) (scriptCall, error) {
	var call scriptCall
	ctx := context.WithValue(context.Background(), captureKey{}, &call)
	if _, err := client.EnqueueContext(ctx, task, tasks.Options(queue, taskID)...); err != nil {
		return call, fmt.Errorf("build task %s: %w", taskID, err)
	}
	return call, nil
}
