package enqueue

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/tasks"
)

// How a batch writes its tasks. asynq v0.26 enqueues a task with one Lua
// script call per task (one round trip each) and has no batch call. A batch
// lets asynq's own Client build every task (options, defaults and the
// protobuf message, which lives in an internal package) on a Redis client
// that captures the script call instead of sending it. The captured keys
// and arguments of up to batchChunk rows then go to Redis in one call of
// batchEnqueueScript, which writes for each row exactly what asynq's
// enqueue script writes (the task hash and its ID on the pending list),
// unless the task ID is taken or the task's outcome record exists. The
// check and the write are thus one atomic step, and asynq's tools
// (asynqmon, the Inspector, the server) see ordinary tasks.
//
// The capture is used only when the script asynq calls is the one copied
// below (same SHA-1), so that what batchEnqueueScript writes is what that
// asynq version writes: another asynq version makes batches fall back to
// checking and enqueueing each row with asynq's own call, slower but just
// as safe.

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
// For task i from 0: KEYS[4i+1] asynq:{<queue>}:t:<task_id>,
// KEYS[4i+2] asynq:{<queue>}:pending, KEYS[4i+3] the outcome record,
// KEYS[4i+4] the user's dedup claim; ARGV[3i+1] the encoded task message,
// ARGV[3i+2] the task ID, ARGV[3i+3] now in ns: the keys and arguments
// asynq passes, plus two keys. Then four more ARGV: the dedup window in ms
// (0: none), the outcome record key prefix (outcome.Store.RecordKey("")),
// outcome.StatusField (the one field of a record read here) and
// outcome.StatusDeadLetter.
var batchEnqueueScript = redis.NewScript(`
local replies, ids = {}, {}
local hold, records, statusField, dead = tonumber(ARGV[#ARGV - 3]), ARGV[#ARGV - 2], ARGV[#ARGV - 1], ARGV[#ARGV]
-- claimed returns 0 when the row may take the user's claim (none, its
-- own, or a dead letter's), 1 when another resend holds it, 2 when another
-- enqueue of the user is under way (its claim is pending).
local function claimed(key, id)
	if hold <= 0 then return 0 end
	local held = redis.call("GET", key)
	if not held or held == id or held == "pending:" .. id then return 0 end
	if string.sub(held, 1, 8) == "pending:" then return 2 end
	if redis.call("HGET", records .. held, statusField) == dead then return 0 end
	return 1
end
for i = 0, #KEYS / 4 - 1 do
	local k, a, r = 4 * i, 3 * i, 0
	if redis.call("EXISTS", KEYS[k + 1], KEYS[k + 3]) == 0 then
		local c = claimed(KEYS[k + 4], ARGV[a + 2])
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
