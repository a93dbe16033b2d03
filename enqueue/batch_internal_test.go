package enqueue

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/internal/rkey"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

const internalProject = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"

// TestCaptureMatchesAsynq guards the pipelined path: the script asynq runs
// to enqueue must be the one copied in batchscript.go, with the keys and
// arguments it documents. After an asynq upgrade that changes it, batches
// fall back to enqueueing row by row, and this test says so.
func TestCaptureMatchesAsynq(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	client := asynq.NewClientFromRedisClient(capturingClient{rdb})
	task, err := tasks.NewTask(tasks.Resend{ProjectID: internalProject, Username: "ann@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	call, err := capture(client, task, tasks.QueueBulk, "b:1")
	if err != nil {
		t.Fatal(err)
	}
	if call.sha != asynqEnqueueSHA {
		t.Fatalf("asynq enqueues with script %s, not the copy in batchscript.go (%s): update asynqEnqueueSource", call.sha, asynqEnqueueSHA)
	}
	if want := []string{rkey.AsynqTask(tasks.QueueBulk, "b:1"), "asynq:{bulk}:pending"}; fmt.Sprint(call.keys) != fmt.Sprint(want) {
		t.Errorf("keys %q, want %q", call.keys, want)
	}
	if len(call.args) != 3 || call.args[1] != "b:1" {
		t.Errorf("args %v: want message, task ID, time", call.args)
	}
	// Capturing writes no task; only asynq's list of queue names.
	if keys := rdb.Keys(context.Background(), "*").Val(); fmt.Sprint(keys) != "[asynq:queues]" {
		t.Errorf("keys after a capture: %v", keys)
	}
}

// TestKeyLayouts guards the keys a batch reads to know a task is waiting
// (asynq's) or done (the outcome store's).
func TestKeyLayouts(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	task, _ := tasks.NewTask(tasks.Resend{ProjectID: internalProject, Username: "ann@example.com"})
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(task, tasks.Options(tasks.QueueBulk, "b:2")...); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, rkey.AsynqTask(tasks.QueueBulk, "b:2")).Val(); n != 1 {
		t.Errorf("%s does not exist after asynq enqueued task b:2", rkey.AsynqTask(tasks.QueueBulk, "b:2"))
	}
	e := New(rdb, Options{})
	if _, err := outcome.NewStore(rdb, outcome.Options{}).Finish(ctx, outcome.Record{TaskID: "b:3", Status: outcome.StatusSent, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, e.outcomes.RecordKey("b:3")).Val(); n != 1 {
		t.Errorf("%s does not exist after the outcome store finished task b:3", e.outcomes.RecordKey("b:3"))
	}
}

// internalCSV reads CSV rows of internalProject.
func internalCSV(t *testing.T, in string) *CSVReader {
	t.Helper()
	r, err := NewCSVReader(strings.NewReader(in), tasks.Resend{ProjectID: internalProject})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBatchOneByOne runs the path taken when asynq's enqueue call cannot be
// captured: the same counts, the same idempotency.
func TestBatchOneByOne(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	e := New(rdb, Options{})
	var in strings.Builder
	in.WriteString("username\n")
	for i := range 600 {
		fmt.Fprintf(&in, "user%d@example.com\nuser%d@example.com\n", i, i) // every user twice, in a row
	}
	src := func() RowSource { return internalCSV(t, in.String()) }
	opts := BatchOptions{BatchID: "single", oneByOne: true, Concurrency: 300}
	first, err := e.EnqueueBatch(ctx, src(), opts)
	if err != nil || first.Enqueued != 600 || first.AlreadyQueued != 600 {
		t.Fatalf("first run: %+v, %v", first, err)
	}
	// One task done: its outcome is written and asynq deleted it.
	done := BatchTaskID("single", tasks.Resend{ProjectID: internalProject, Username: "user5@example.com"})
	if _, err := outcome.NewStore(rdb, outcome.Options{}).Finish(ctx, outcome.Record{TaskID: done, Status: outcome.StatusSent, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	if err := asynq.NewInspectorFromRedisClient(rdb).DeleteTask(tasks.QueueBulk, done); err != nil {
		t.Fatal(err)
	}
	again, err := e.EnqueueBatch(ctx, src(), opts)
	if err != nil || again.Enqueued != 0 || again.AlreadyQueued != 1200 {
		t.Errorf("second run: %+v, %v; want nothing enqueued", again, err)
	}
}

// TestBatchScriptReloaded covers a Redis whose script cache was flushed
// while a batch runs.
func TestBatchScriptReloaded(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	e := New(rdb, Options{})
	var in strings.Builder
	in.WriteString("username\n")
	for i := range 3000 {
		fmt.Fprintf(&in, "user%d@example.com\n", i)
	}
	r := internalCSV(t, in.String())
	src := &flushScriptsAfter{src: r, n: 500, flush: func() { rdb.ScriptFlush(ctx) }}
	sum, err := e.EnqueueBatch(ctx, src, BatchOptions{BatchID: "reload", Concurrency: batchChunk})
	if err != nil || sum.Enqueued != 3000 {
		t.Errorf("summary %+v, %v; want all 3000 enqueued", sum, err)
	}
}

type flushScriptsAfter struct {
	src   RowSource
	n     int
	flush func()
}

func (f *flushScriptsAfter) Next() (Row, error) {
	if f.n--; f.n == 0 {
		f.flush()
	}
	return f.src.Next()
}

// TestBatchRespectsTheDedupWindow: a batch row for a user sent another
// resend within the dedup window enqueues nothing, a batch's task holds the
// window against a later single enqueue, and a dead letter's claim is taken
// over; with the script and row by row alike.
func TestBatchRespectsTheDedupWindow(t *testing.T) {
	t.Parallel()
	for _, oneByOne := range []bool{false, true} {
		t.Run(fmt.Sprint("oneByOne=", oneByOne), func(t *testing.T) {
			t.Parallel()
			rdb := redistest.Start(t).Client(t)
			ctx := context.Background()
			e := New(rdb, Options{})
			user := func(name string) tasks.Resend { return tasks.Resend{ProjectID: internalProject, Username: name} }
			single, err := e.Enqueue(ctx, user("Recent@example.com"))
			if err != nil {
				t.Fatal(err)
			}
			failed, err := e.Enqueue(ctx, user("failed@example.com"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := outcome.NewStore(rdb, outcome.Options{}).Finish(ctx, outcome.Record{TaskID: failed.TaskID, ProjectID: internalProject,
				Username: "failed@example.com", Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, HTTPStatus: 422, ErrorCode: "010-011", Attempts: 1}); err != nil {
				t.Fatal(err)
			}
			sum, err := e.EnqueueBatch(ctx, internalCSV(t, "username\nrecent@example.com\nfailed@example.com\nnew@example.com\n"), BatchOptions{BatchID: "b", oneByOne: oneByOne})
			if err != nil || sum.Enqueued != 2 || sum.AlreadyQueued != 1 {
				t.Fatalf("batch: %+v, %v; want failed@ and new@ enqueued, recent@ skipped", sum, err)
			}
			ins := asynq.NewInspectorFromRedisClient(rdb)
			if _, err := ins.GetTaskInfo(tasks.QueueBulk, BatchTaskID("b", user("recent@example.com"))); err == nil {
				t.Error("recent@ got a batch task")
			}
			// The batch's tasks hold the window: a signup enqueue gets theirs.
			for _, name := range []string{"new@example.com", "failed@example.com"} {
				res, err := e.Enqueue(ctx, user(name))
				if err != nil || !res.Duplicate || res.TaskID != BatchTaskID("b", user(name)) {
					t.Errorf("%s after the batch: %+v, %v; want the batch's task", name, res, err)
				}
			}
			if res, err := e.Enqueue(ctx, user("recent@example.com")); err != nil || res.TaskID != single.TaskID {
				t.Errorf("recent@ again: %+v, %v", res, err)
			}
			// Without a window, the batch enqueues everyone.
			if sum, err := New(rdb, Options{DedupWindow: -1}).EnqueueBatch(ctx, internalCSV(t, "username\nrecent@example.com\n"), BatchOptions{BatchID: "c", oneByOne: oneByOne}); err != nil || sum.Enqueued != 1 {
				t.Errorf("without a window: %+v, %v", sum, err)
			}
		})
	}
}

// TestBatchUserSpellingsAndPendingClaims: two spellings of one email
// address are one user, now and on a rerun; a claim left pending by a
// crashed run of the same task is taken over; one pending for another
// enqueue is waited for, row by row.
func TestBatchUserSpellingsAndPendingClaims(t *testing.T) {
	t.Parallel()
	for _, oneByOne := range []bool{false, true} {
		t.Run(fmt.Sprint("oneByOne=", oneByOne), func(t *testing.T) {
			t.Parallel()
			rdb := redistest.Start(t).Client(t)
			ctx := context.Background()
			e := New(rdb, Options{})
			csv := func(rows string) RowSource { return internalCSV(t, "username\n"+rows) }
			opts := BatchOptions{BatchID: "b", oneByOne: oneByOne}
			if sum, err := e.EnqueueBatch(ctx, csv("John@x.io\njohn@x.io\n"), opts); err != nil || sum.Enqueued != 1 || sum.AlreadyQueued != 1 {
				t.Fatalf("two spellings: %+v, %v", sum, err)
			}
			// A rerun after the window (here: without one) still finds the task.
			if sum, err := New(rdb, Options{DedupWindow: -1}).EnqueueBatch(ctx, csv("John@x.io\njohn@x.io\n"), opts); err != nil || sum.Enqueued != 0 {
				t.Errorf("rerun: %+v, %v; want nothing enqueued", sum, err)
			}

			own := BatchTaskID("b", tasks.Resend{ProjectID: internalProject, Username: "crashed@x.io"})
			ownKey := e.dedupKey(tasks.Resend{ProjectID: internalProject, Username: "crashed@x.io"})
			otherKey := e.dedupKey(tasks.Resend{ProjectID: internalProject, Username: "busy@x.io"})
			if err := rdb.Set(ctx, ownKey, pendingMark+own, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.Set(ctx, otherKey, pendingMark+"someone-else", 300*time.Millisecond).Err(); err != nil {
				t.Fatal(err)
			}
			sum, err := e.EnqueueBatch(ctx, csv("crashed@x.io\nbusy@x.io\n"), opts)
			if err != nil || sum.Enqueued != 2 {
				t.Errorf("pending claims: %+v, %v; want both enqueued (own taken over, the other's waited out)", sum, err)
			}
			if held, _ := rdb.Get(ctx, ownKey).Result(); held != own {
				t.Errorf("claim %q, want the batch's task %q", held, own)
			}
		})
	}
}

// renewals counts the renewals of a batch's lock that have come back.
type renewals struct{ n atomic.Int32 }

func (r *renewals) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *renewals) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			r.n.Add(1)
		}
		return err
	}
}
func (r *renewals) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestABatchStopsBeforeItsLockCanExpire: when Redis fails to renew a
// batch's lock, the run is stopped while the lock still holds, not once it
// may have passed to another run.
func TestABatchStopsBeforeItsLockCanExpire(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var calls renewals
	rdb.AddHook(&calls)
	clock := clockwork.NewFakeClock()
	e := New(rdb, Options{Clock: clock})
	lost := make(chan error, 1)
	unlock, err := e.lockBatch(context.Background(), "b1", func(err error) { lost <- err })
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	clock.Advance(batchLockTTL / 3) // the first renewal fails: 20s of the lock left
	for calls.n.Load() == 0 {
		runtime.Gosched()
	}
	if len(lost) != 0 {
		t.Fatalf("stopped after one failed renewal: %v", <-lost)
	}
	clock.Advance(batchLockTTL / 3) // the second fails: the next would come as the lock ends
	if err := <-lost; !strings.Contains(err.Error(), "could not be renewed") {
		t.Errorf("lost: %v", err)
	}
	// The release tries three times, 50ms and 100ms apart.
	done := make(chan error, 1)
	go func() { done <- unlock() }()
	for range 2 {
		if err := clock.BlockUntilContext(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		clock.Advance(100 * time.Millisecond)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "expires within") {
		t.Errorf("unlock with Redis gone: %v, want an error", err)
	}
}

// claimSwap is a hook that, once the batch has read the users' claims,
// hands one user's claim to another task before the batch script runs.
type claimSwap struct {
	rdb     *redis.Client
	key, to string
	done    atomic.Bool
}

func (c *claimSwap) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (c *claimSwap) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (c *claimSwap) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if len(cmds) > 0 && cmds[0].Name() == "get" && !c.done.Swap(true) {
			c.rdb.Set(ctx, c.key, c.to, time.Minute)
		}
		return err
	}
}

// TestBatchScriptSeesAClaimTakenAfterItWasRead: a user's claim read as a
// dead letter's (which a batch row may take over) before the batch script
// runs, then taken by another resend of the user, is not overwritten by the
// script: the row goes Enqueue's way and counts as already queued.
func TestBatchScriptSeesAClaimTakenAfterItWasRead(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb, watcher := srv.Client(t), srv.Client(t)
	ctx := context.Background()
	e := New(rdb, Options{})
	key := e.dedupKey(tasks.Resend{ProjectID: internalProject, Username: "late@x.io"})
	if _, err := e.outcomes.Finish(ctx, outcome.Record{TaskID: "dead-one", ProjectID: internalProject, Username: "late@x.io",
		Queue: tasks.QueueSignup, Status: outcome.StatusDeadLetter, Reason: outcome.ReasonExhausted}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, key, "dead-one", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.AddHook(&claimSwap{rdb: watcher, key: key, to: "the-other-task"})
	sum, err := e.EnqueueBatch(ctx, internalCSV(t, "username\nearly@x.io\nlate@x.io\n"), BatchOptions{BatchID: "swap"})
	if err != nil || sum.Enqueued != 1 || sum.AlreadyQueued != 1 {
		t.Fatalf("batch: %+v, %v; want early enqueued, late already queued", sum, err)
	}
	if held, _ := watcher.Get(ctx, key).Result(); held != "the-other-task" {
		t.Errorf("late's claim holds %q, want the other task's", held)
	}
	if n := watcher.LLen(ctx, "asynq:{"+tasks.QueueBulk+"}:pending").Val(); n != 1 {
		t.Errorf("%d tasks pending, want early's only", n)
	}
}
