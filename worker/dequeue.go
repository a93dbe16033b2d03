package worker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// How the asynq servers of a Server take tasks (dequeuer).
const (
	// emptyQueueRecheck is how long they skip a queue that was found empty
	// (or paused) before they ask Redis again while the process is busy
	// with another queue; at most Config.PollInterval.
	emptyQueueRecheck = 5 * time.Millisecond
	// idleAfter is how long after its last task a process counts as idle:
	// then it skips an empty queue for half the Config.PollInterval, so
	// that its asynq servers, each polling on its own, ask Redis about as
	// often as one would.
	idleAfter = time.Second
	// dequeueBatch is the most tasks of one queue a round trip takes.
	dequeueBatch = 8
	// holdMax is how long a task taken ahead may wait for an asynq server
	// to ask for it before it goes back to its queue: well within asynq's
	// 30 s lease, which the task holds from the moment it was taken.
	holdMax = 5 * time.Second
)

// dequeuer is the Redis client the asynq servers of a Server take their
// tasks on: every command goes through unchanged except asynq's dequeue,
// and the acks of tasks whose outcome records are still being written,
// which wait in acks (see ackGate).
//
// asynq v0.26 takes one task per round trip, trying the queues one script
// call each in an order shuffled by weight (processor.queues,
// RDB.Dequeue). So a bulk backlog costs a round trip and a script run per
// task, and while the signup queue is empty, eight dequeues in nine first
// miss on it: another round trip and script run each (docs/BENCHMARKS.md).
// The dequeuer instead
//   - remembers for emptyQueueRecheck, for every asynq server of the
//     process, that a queue had nothing to give, and answers a dequeue of
//     it as Redis would (nil) without asking: a queue with tasks never
//     misses, and a signup enqueued during a bulk drain waits at most
//     emptyQueueRecheck longer. An idle process remembers it for half its
//     poll interval, so that its asynq servers together ask Redis less
//     often than they would on their own;
//   - takes up to dequeueBatch tasks of a queue in one script run, moving
//     each exactly as asynq's own dequeue does (pending to active, with
//     its lease), hands asynq the first and the others to the next
//     dequeues of the same queue, without a round trip. A task only leaves
//     the dequeuer when an asynq server asks for its queue, so the
//     weights between queues hold as asynq makes them.
//
// A task taken ahead and not asked for within holdMax, and every one still
// held when the Server shuts down, goes back to the front of its queue as
// asynq's own Requeue puts it back. One held when the process dies is
// active with a lease, like a task in flight: asynq's recoverer hands it to
// another worker once the lease expires. asynq's data layout is untouched.
//
// It recognises asynq's dequeue script by its keys (pending, paused, active
// and lease of one queue, in that order), which asynq v0.26 passes in KEYS.
// It runs on the real clock, as asynq's own polling and leases do.
//
// On a Redis Cluster it works as on one node: its scripts touch the keys of
// one queue, asynq:{Q}:..., all in the slot of the queue's hash tag. They
// are the one exception to the rule that every script of ours gets each
// key it touches in KEYS: like asynq's own dequeue and requeue scripts,
// they build a task's key, asynq:{Q}:t:<id>, from its ID inside Lua (the
// IDs are only known there), and that key lies in the queue's slot too.
type dequeuer struct {
	redis.UniversalClient
	recheck     time.Duration // while busy
	idleRecheck time.Duration // while idle
	batch       int
	now         func() time.Time

	acks *ackGate // holds the acks of tasks whose outcome is being written

	mu       sync.Mutex
	queues   map[string]*dequeueState
	lastTask time.Time // when a dequeue last found a task
}

// dequeueState is what the dequeuer knows of one queue.
type dequeueState struct {
	keys       []string  // pending, paused, active, lease
	taskPrefix string    // asynq:{Q}:t:
	emptyUntil time.Time // skip the queue until then
	held       []heldTask
}

// heldTask is a task taken ahead: active in Redis, not yet handed to asynq.
type heldTask struct {
	id, msg string
	at      time.Time
	lease   any // the lease's expiry it was taken with (asynq's, Unix seconds)
}

// Unwrap returns the client the dequeuer wraps, so that rkey.IsCluster
// tells a dequeuer on a Redis Cluster.
func (d *dequeuer) Unwrap() redis.UniversalClient { return d.UniversalClient }

// newDequeuer takes up to batch tasks per round trip on rdb, and skips a
// queue found empty for recheck while busy, idleRecheck while idle.
func newDequeuer(rdb redis.UniversalClient, recheck, idleRecheck time.Duration, batch int) *dequeuer {
	return &dequeuer{
		UniversalClient: rdb, recheck: recheck, idleRecheck: max(recheck, idleRecheck), batch: max(1, batch),
		now: time.Now, queues: map[string]*dequeueState{},
	}
}

// EvalSha is how go-redis' Script.Run, and so asynq, runs a script.
func (d *dequeuer) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if q, ok := dequeuedQueue(keys); ok && len(args) == 2 {
		return d.dequeue(ctx, q, keys, args)
	}
	if c, ok := d.acks.intercept(ctx, sha, "", keys, args); ok {
		return c
	}
	return d.UniversalClient.EvalSha(ctx, sha, keys, args...)
}

// Eval is Script.Run's fallback when Redis does not have a script yet.
func (d *dequeuer) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	if q, ok := dequeuedQueue(keys); ok && len(args) == 2 {
		return d.dequeue(ctx, q, keys, args)
	}
	if c, ok := d.acks.intercept(ctx, "", script, keys, args); ok {
		return c
	}
	return d.UniversalClient.Eval(ctx, script, keys, args...)
}

// dequeue answers asynq's dequeue of queue q (args: the lease's expiry in
// Unix seconds, the prefix of the queue's task keys) as asynq's script
// would: the task's message, or redis.Nil.
func (d *dequeuer) dequeue(ctx context.Context, q string, keys []string, args []any) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	now := d.now()
	d.mu.Lock()
	st := d.queues[q]
	if st == nil {
		prefix, _ := args[1].(string)
		st = &dequeueState{keys: keys, taskPrefix: prefix}
		d.queues[q] = st
	}
	stale := st.takeOlder(now, holdMax)
	var next *heldTask
	if len(st.held) > 0 {
		t := st.held[0]
		next, st.held = &t, st.held[1:]
	}
	skip := now.Before(st.emptyUntil)
	d.mu.Unlock()
	if len(stale) > 0 {
		_ = d.requeueOrKeep(ctx, st, stale) // the release every second tries again
	}
	if next != nil {
		cmd.SetVal(next.msg)
		return cmd
	}
	if skip {
		cmd.SetErr(redis.Nil)
		return cmd
	}
	res, err := dequeueManyScript.Run(ctx, d.UniversalClient, keys, args[0], args[1], d.batch).StringSlice()
	if err != nil {
		cmd.SetErr(err)
		return cmd
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(res) < 2 {
		recheck := d.recheck
		if now.Sub(d.lastTask) >= idleAfter {
			recheck = d.idleRecheck
		}
		st.emptyUntil = d.now().Add(recheck)
		cmd.SetErr(redis.Nil)
		return cmd
	}
	st.emptyUntil, d.lastTask = time.Time{}, now
	for i := 2; i+1 < len(res); i += 2 {
		st.held = append(st.held, heldTask{id: res[i], msg: res[i+1], at: now, lease: args[0]})
	}
	cmd.SetVal(res[1])
	return cmd
}

// takeOlder removes from st the held tasks taken age or more before now
// (the oldest come first) and returns them. The dequeuer's mu is held.
func (st *dequeueState) takeOlder(now time.Time, age time.Duration) []heldTask {
	i := 0
	for i < len(st.held) && now.Sub(st.held[i].at) >= age {
		i++
	}
	old := st.held[:i:i]
	st.held = st.held[i:]
	return old
}

// requeue puts held tasks back at the front of their queue, in the order
// they were taken.
func (d *dequeuer) requeue(ctx context.Context, st *dequeueState, held []heldTask) error {
	keys := make([]string, 0, len(held)+3)
	keys = append(keys, st.keys[2], st.keys[3], st.keys[0])
	args := make([]any, 0, 2*len(held))
	for _, t := range held {
		keys = append(keys, st.taskPrefix+t.id)
		args = append(args, t.id, t.lease)
	}
	return requeueHeldScript.Run(ctx, d.UniversalClient, keys, args...).Err()
}

// requeueOrKeep puts held tasks back at the front of their queue; when
// Redis fails, it keeps them, first in st and no longer handed out (they
// are stale), for the next release to try again: a Redis restart or a
// failover does not leave them to wait out their lease.
func (d *dequeuer) requeueOrKeep(ctx context.Context, st *dequeueState, held []heldTask) error {
	err := d.requeue(ctx, st, held)
	if err != nil {
		d.mu.Lock()
		st.held = append(held[:len(held):len(held)], st.held...)
		d.mu.Unlock()
	}
	return err
}

// release puts back every task taken ahead older than age (all of them
// with 0), queue by queue; those Redis fails to take back are kept for the
// next release.
func (d *dequeuer) release(ctx context.Context, age time.Duration) (int, error) {
	now := d.now()
	d.mu.Lock()
	type batch struct {
		st   *dequeueState
		held []heldTask
	}
	var back []batch
	for _, st := range d.queues {
		if old := st.takeOlder(now, age); len(old) > 0 {
			back = append(back, batch{st, old})
		}
	}
	d.mu.Unlock()
	n := 0
	var errs []error
	for _, b := range back {
		if err := d.requeueOrKeep(ctx, b.st, b.held); err != nil {
			errs = append(errs, err)
			continue
		}
		n += len(b.held)
	}
	return n, errors.Join(errs...)
}

// heldCount is how many tasks the dequeuer holds.
func (d *dequeuer) heldCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, st := range d.queues {
		n += len(st.held)
	}
	return n
}

// dequeuedQueue is the queue whose tasks asynq's dequeue script takes, when
// keys are that script's: asynq:{Q}:pending, asynq:{Q}:paused,
// asynq:{Q}:active, asynq:{Q}:lease.
func dequeuedQueue(keys []string) (string, bool) {
	if len(keys) != 4 {
		return "", false
	}
	rest, ok := strings.CutPrefix(keys[0], "asynq:{")
	if !ok {
		return "", false
	}
	q, ok := strings.CutSuffix(rest, "}:pending")
	if !ok {
		return "", false
	}
	prefix := "asynq:{" + q + "}:"
	if keys[1] != prefix+"paused" || keys[2] != prefix+"active" || keys[3] != prefix+"lease" {
		return "", false
	}
	return q, true
}

// dequeueManyScript is asynq v0.26's dequeue script (rdb.dequeueCmd) taking
// up to ARGV[3] tasks: it answers id, message, id, message, ...
//
// KEYS[1] asynq:{Q}:pending, KEYS[2] asynq:{Q}:paused, KEYS[3]
// asynq:{Q}:active, KEYS[4] asynq:{Q}:lease; ARGV[1] the lease's expiry
// (Unix seconds), ARGV[2] asynq:{Q}:t: (a task's key is ARGV[2]..id, in
// the queue's hash slot, as in asynq's script), ARGV[3] the most to take.
var dequeueManyScript = redis.NewScript(`
local out = {}
if redis.call("EXISTS", KEYS[2]) == 1 then
  return out
end
for i = 1, tonumber(ARGV[3]) do
  local id = redis.call("RPOPLPUSH", KEYS[1], KEYS[3])
  if not id then
    break
  end
  local key = ARGV[2] .. id
  redis.call("HSET", key, "state", "active")
  redis.call("HDEL", key, "pending_since")
  redis.call("ZADD", KEYS[4], ARGV[1], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call("HGET", key, "msg")
end
return out`)

// requeueHeldScript is asynq v0.26's requeue script (rdb.requeueCmd) for
// tasks taken ahead, given in the order they were taken: each goes back to
// the front of its queue (the end RPOPLPUSH takes from), the first taken
// first in line. A task no longer active with the lease it was taken with
// is left alone: its lease expired and asynq's recoverer took it, or an
// earlier run of this script put it back (its reply lost) and another
// dequeue took it since, with a lease of its own.
//
// KEYS[1] asynq:{Q}:active, KEYS[2] asynq:{Q}:lease, KEYS[3]
// asynq:{Q}:pending, KEYS[3 + i] the key (asynq:{Q}:t:<id>) of the i-th
// task; ARGV[2i - 1] its ID, ARGV[2i] the lease's expiry it was taken with.
var requeueHeldScript = redis.NewScript(`
for i = #ARGV / 2, 1, -1 do
  local id = ARGV[2 * i - 1]
  if tonumber(redis.call("ZSCORE", KEYS[2], id)) == tonumber(ARGV[2 * i]) and redis.call("LREM", KEYS[1], 0, id) > 0 then
    redis.call("ZREM", KEYS[2], id)
    redis.call("RPUSH", KEYS[3], id)
    redis.call("HSET", KEYS[3 + i], "state", "pending")
  end
end
return redis.status_reply("OK")`)
