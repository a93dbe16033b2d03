package enqueue_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// TestOnRedisCluster enqueues singles, many and a batch on a real 3-master
// Redis Cluster, runs the batch again (nothing new), replays dead letters
// and forgets a user: every step that spans slots on a single node's fast
// path takes its per-slot steps here.
func TestOnRedisCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.StartCluster(t, 3)
	rdb := c.Client(t)
	e := enqueue.New(rdb, enqueue.Options{})

	// Singles: the second of a user within the window is a duplicate.
	r := tasks.Resend{ProjectID: testProject, Username: "single@example.com"}
	first, err := e.Enqueue(ctx, r)
	if err != nil || first.Duplicate {
		t.Fatalf("Enqueue = %+v, %v", first, err)
	}
	again, err := e.Enqueue(ctx, tasks.Resend{ProjectID: testProject, Username: "SINGLE@example.com"})
	if err != nil || !again.Duplicate || again.TaskID != first.TaskID {
		t.Fatalf("second Enqueue = %+v, %v; want a duplicate of %s", again, err, first.TaskID)
	}
	as, err := e.EnqueueAs(ctx, tasks.Resend{ProjectID: testProject, Username: "as@example.com"}, "own-id")
	if err != nil || as.Duplicate {
		t.Fatalf("EnqueueAs = %+v, %v", as, err)
	}
	if as, err = e.EnqueueAs(ctx, tasks.Resend{ProjectID: testProject, Username: "as@example.com"}, "own-id"); err != nil || !as.Duplicate {
		t.Fatalf("EnqueueAs again = %+v, %v; want a duplicate", as, err)
	}

	// Many: 300 resends of 200 users.
	var rs []tasks.Resend
	for i := range 300 {
		rs = append(rs, tasks.Resend{ProjectID: testProject, Username: fmt.Sprintf("many%d@example.com", i%200)})
	}
	items, err := e.EnqueueMany(ctx, rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	dups := 0
	for i, it := range items {
		if it.Err != nil {
			t.Fatalf("EnqueueMany item %d: %v", i, it.Err)
		}
		if it.Duplicate {
			dups++
		}
	}
	if dups != 100 {
		t.Fatalf("EnqueueMany: %d duplicates, want 100", dups)
	}

	// A batch, then the same batch again. Before it, user5's resend ended as
	// a dead letter (its claim may be taken over) and user6's waits (its
	// claim holds).
	store := outcome.NewStore(rdb, outcome.Options{})
	ins := asynq.NewInspectorFromRedisClient(rdb)
	for _, u := range []string{"user5@example.com", "user6@example.com"} {
		res, err := e.Enqueue(ctx, tasks.Resend{ProjectID: testProject, Username: u})
		if err != nil {
			t.Fatal(err)
		}
		if u == "user5@example.com" {
			if err := ins.DeleteTask(tasks.QueueSignup, res.TaskID); err != nil {
				t.Fatal(err)
			}
			if _, err := store.Finish(ctx, outcome.Record{TaskID: res.TaskID, ProjectID: testProject, Username: u, Queue: tasks.QueueSignup,
				Status: outcome.StatusDeadLetter, Reason: outcome.ReasonExhausted}); err != nil {
				t.Fatal(err)
			}
		}
	}
	const n = 2000
	sum, err := e.EnqueueBatch(ctx, csvSource(t, usersCSV(n)), enqueue.BatchOptions{BatchID: "cb"})
	if err != nil || sum.Enqueued != n-1 || sum.AlreadyQueued != 1 {
		t.Fatalf("batch: %+v, %v; want %d enqueued, user6 already", sum, err, n-1)
	}
	sum, err = e.EnqueueBatch(ctx, csvSource(t, usersCSV(n)), enqueue.BatchOptions{BatchID: "cb"})
	if err != nil || sum.Enqueued != 0 || sum.AlreadyQueued != n {
		t.Fatalf("batch again: %+v, %v; want all %d already queued", sum, err, n)
	}
	if info, err := ins.GetQueueInfo(tasks.QueueBulk); err != nil || info.Size != n-1 {
		t.Fatalf("bulk queue: %+v, %v; want %d tasks", info, err, n-1)
	}

	// 50 of the batch end as dead letters (as a worker would record them,
	// after taking them off the queue); a replay by code sends them again,
	// once.
	for i := 10; i < 60; i++ {
		res := tasks.Resend{ProjectID: testProject, Username: fmt.Sprintf("user%d@example.com", i), BatchID: "cb"}
		id := enqueue.BatchTaskID("cb", res)
		if err := ins.DeleteTask(tasks.QueueBulk, id); err != nil {
			t.Fatalf("take task %s off the queue: %v", id, err)
		}
		if _, err := store.Finish(ctx, outcome.Record{TaskID: id, ProjectID: testProject, Username: res.Username, BatchID: "cb",
			Queue: tasks.QueueBulk, Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, ErrorCode: "010-012", HTTPStatus: 404}); err != nil {
			t.Fatal(err)
		}
	}
	sel := enqueue.Selection{Filter: outcome.Filter{Code: "010-012"}}
	rep, err := e.ReplayDeadLetters(ctx, enqueue.ReplayOptions{Selection: sel})
	if err != nil || rep.Matched != 50 || rep.Replayed != 50 {
		t.Fatalf("replay: %+v, %v; want 50 replayed", rep, err)
	}
	if rep, err = e.ReplayDeadLetters(ctx, enqueue.ReplayOptions{Selection: sel}); err != nil || rep.Replayed != 0 || rep.AlreadyReplayed != 50 {
		t.Fatalf("replay again: %+v, %v; want all 50 already replayed", rep, err)
	}
	if info, err := ins.GetQueueInfo(tasks.QueueBulk); err != nil || info.Size != n-1 {
		t.Fatalf("bulk queue after the replay: %d tasks, %v; want %d", info.Size, err, n-1)
	}

	// Forget a replayed user: the record, the queued replay, the claims.
	fs, err := e.Forget(ctx, testProject, "user13@example.com")
	if err != nil || fs.Records != 1 || fs.Tasks < 1 || fs.Claims < 1 {
		t.Fatalf("Forget = %+v, %v; want its record, its queued replay and its claims deleted", fs, err)
	}
}
