package enqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/tasks"
)

// MaxMany is the most resends EnqueueMany takes in one call.
const MaxMany = 1000

// ItemResult is what became of one resend of EnqueueMany: a Result, or Err.
type ItemResult struct {
	Result
	// Err is a *tasks.ValidationError when the resend is invalid (nothing
	// was enqueued for it), else the failure that left it unknown whether
	// it was enqueued: enqueueing it again under the same task ID is safe.
	Err error
}

// EnqueueMany validates every resend of rs and enqueues the valid ones on
// the Enqueuer's queue, as Enqueue would one by one (the dedup window
// applies, also between resends of rs), in two Redis round trips per 128 resends
// (on Redis Cluster, each resend on its own, all at once).
// Task IDs come from taskID, which may be nil (random IDs): with IDs of
// Once, a task ID that exists, or whose outcome is recorded, is a
// duplicate naming it. The results are in the order of rs. It returns an
// error, besides the results, only when rs is longer than MaxMany (and no
// results), or, with Options.WaitReplicas, a *ReplicasError when too few
// replicas acknowledged the enqueued resends.
func (e *Enqueuer) EnqueueMany(ctx context.Context, rs []tasks.Resend, taskID func(i int) string) ([]ItemResult, error) {
	if len(rs) > MaxMany {
		return nil, fmt.Errorf("enqueue: %d resends in one call; at most %d", len(rs), MaxMany)
	}
	if taskID == nil {
		taskID = func(int) string { return e.newID() }
	}
	out := make([]ItemResult, len(rs))
	now := e.opts.Clock.Now().UTC()
	seen := make(map[string]int, len(rs)) // the first valid resend of each user
	dupOf := make(map[int]int)            // a repeat of a user: the index of the first
	var jobs []manyJob
	for i, r := range rs {
		r = r.Normalize()
		if err := r.Validate(); err != nil {
			out[i].Err = err
			continue
		}
		r.EnqueuedAt = now
		out[i].Result = Result{TaskID: taskID(i), Queue: e.opts.Queue, Warnings: r.Warnings()}
		claim := e.dedupKey(r)
		if first, ok := seen[claim]; ok && e.opts.DedupWindow > 0 {
			// Within the window, a repeat of a user in rs is a duplicate
			// of the first; its own task ID is never used.
			dupOf[i] = first
			continue
		}
		seen[claim] = i
		jobs = append(jobs, manyJob{i: i, r: r, claim: claim})
	}
	for start := 0; start < len(jobs); start += batchChunk {
		e.enqueueChunk(ctx, jobs[start:min(start+batchChunk, len(jobs))], out)
	}
	for i, first := range dupOf {
		f := out[first]
		out[i].Result = Result{TaskID: f.TaskID, Queue: f.Queue, Duplicate: true, Warnings: out[i].Warnings}
		out[i].Err = f.Err
	}
	if len(jobs) == 0 {
		return out, nil
	}
	return out, e.waitReplicas(ctx)
}

// manyJob is one valid resend of EnqueueMany on its way to Redis.
type manyJob struct {
	i     int // its index in the call
	r     tasks.Resend
	claim string // the user's dedup claim key
}

// enqueueChunk enqueues jobs in one call of batchEnqueueScript, and those
// it cannot settle (asynq's call not captured, another enqueue of the user
// under way) one by one, all at once, and fills their results in out. On
// Redis Cluster all go one by one (see batchRun.process).
func (e *Enqueuer) enqueueChunk(ctx context.Context, jobs []manyJob, out []ItemResult) {
	var rows []scriptRow
	var scripted, single []manyJob
	for _, j := range jobs {
		id := out[j.i].TaskID
		task, err := tasks.NewTask(j.r)
		if err != nil {
			out[j.i].Err = err
			continue
		}
		call, err := capture(e.capturer, task, e.opts.Queue, id)
		if err != nil || !call.isAsynqEnqueue() || e.cluster {
			single = append(single, j)
			continue
		}
		rows = append(rows, scriptRow{call: call, id: id, claim: j.claim})
		scripted = append(scripted, j)
	}
	if len(rows) > 0 {
		replies, err := e.runBatchScript(ctx, rows)
		var already []manyJob
		for k, j := range scripted {
			switch {
			case err != nil:
				out[j.i].Err = fmt.Errorf("enqueue: %w", err)
			case replies[k] == replyEnqueued:
			case replies[k] == replyPending:
				single = append(single, j)
			default:
				already = append(already, j)
			}
		}
		e.holders(ctx, already, out)
	}
	var wg sync.WaitGroup
	for _, j := range single {
		wg.Go(func() {
			res, err := e.enqueueOwnID(ctx, j.r, out[j.i].TaskID)
			out[j.i].Result, out[j.i].Err = res, err
			if err != nil {
				out[j.i].Result = Result{TaskID: out[j.i].TaskID, Queue: e.opts.Queue}
			}
		})
	}
	wg.Wait()
}

// holders fills the results of jobs the batch script found already
// settled: the task exists or is done (a duplicate naming it), or another
// resend of the user holds the dedup window (a duplicate naming that one).
func (e *Enqueuer) holders(ctx context.Context, jobs []manyJob, out []ItemResult) {
	if len(jobs) == 0 {
		return
	}
	pipe := e.rdb.Pipeline()
	gets := make([]interface{ Val() string }, len(jobs))
	for k, j := range jobs {
		gets[k] = pipe.Get(ctx, j.claim)
	}
	_, err := pipe.Exec(ctx)
	for k, j := range jobs {
		res := &out[j.i]
		res.Duplicate = true
		// The holder of the user's window, unless its enqueue is under way
		// (the script found this task, or its outcome, then).
		if held := gets[k].Val(); held != "" && held != res.TaskID && !strings.HasPrefix(held, pendingMark) {
			res.TaskID = held
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			// The task or its user's holder exists; only which one is unknown.
			res.Warnings = append(res.Warnings, "the task that holds this user's dedup window could not be read; task_id may name another task of this user")
		}
	}
}
