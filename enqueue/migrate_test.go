package enqueue_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// TestMigrateOntoACluster moves a single node's records, claims, replay
// marks and waiting tasks onto a 3-master Redis Cluster, refusing while a
// worker runs on the source, and runs again without counting anything twice.
func TestMigrateOntoACluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srcRdb := redistest.Start(t).Client(t)
	dstRdb := redistest.StartCluster(t, 3).Client(t)
	src, dst := enqueue.New(srcRdb, enqueue.Options{}), enqueue.New(dstRdb, enqueue.Options{})
	srcStore, dstStore := outcome.NewStore(srcRdb, outcome.Options{}), outcome.NewStore(dstRdb, outcome.Options{})

	// The source: 200 records (every fifth a dead letter, one of them
	// replayed), a task with an attempt history, a waiting resend with its
	// dedup claim, and a batch of 50 waiting in the bulk queue.
	for i := range 200 {
		rec := outcome.Record{TaskID: fmt.Sprintf("t%03d", i), ProjectID: testProject, Username: fmt.Sprintf("u%d@example.com", i%40),
			Queue: tasks.QueueBulk, Status: outcome.StatusSent, HTTPStatus: 204, Attempts: 1}
		if i%5 == 0 {
			rec.Status, rec.Reason, rec.ErrorCode, rec.HTTPStatus = outcome.StatusDeadLetter, outcome.ReasonRejected, "010-012", 404
		}
		if i == 7 {
			if err := srcStore.AddAttempt(ctx, rec.TaskID, outcome.Attempt{Cause: outcome.CauseServerError, HTTPStatus: 503}); err != nil {
				t.Fatal(err)
			}
		}
		stored, err := srcStore.Finish(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		if i == 10 {
			if _, _, err := srcStore.MarkReplayed(ctx, stored, "r010", stored.FinishedAt); err != nil {
				t.Fatal(err)
			}
		}
	}
	waiting, err := src.Enqueue(ctx, tasks.Resend{ProjectID: testProject, Username: "waiting@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.EnqueueBatch(ctx, csvSource(t, usersCSV(50)), enqueue.BatchOptions{BatchID: "mb"}); err != nil {
		t.Fatal(err)
	}

	// A worker on the source: refused, nothing written.
	srv := asynq.NewServerFromRedisClient(srcRdb, asynq.Config{Queues: map[string]int{"unused": 1}})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(srv.Shutdown) }
	t.Cleanup(stop) // before the client closes
	srcIns := asynq.NewInspectorFromRedisClient(srcRdb)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if servers, err := srcIns.Servers(); err == nil && len(servers) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker on the source did not register within 10s")
		}
	}
	if _, err := enqueue.Migrate(ctx, src, dst, nil); !errors.Is(err, enqueue.ErrWorkersRunning) {
		t.Fatalf("Migrate with a worker on the source = %v, want ErrWorkersRunning", err)
	}
	stop()
	if st, _ := dstStore.Stats(ctx); st.Sent+st.DeadLetter != 0 {
		t.Fatalf("the refused migration wrote %+v", st)
	}

	sum, err := enqueue.Migrate(ctx, src, dst, nil)
	if err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if sum.Records != 200 || sum.Replayed != 1 || sum.Histories != 1 || sum.Tasks != 51 || sum.Keys < 51 {
		t.Fatalf("Migrate = %+v", sum)
	}
	want, _ := srcStore.Stats(ctx)
	if got, err := dstStore.Stats(ctx); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("stats on the cluster %+v, %v; want the source's %+v", got, err, want)
	}
	if tl, ok, err := dstStore.Timeline(ctx, "t007"); err != nil || !ok || tl.Record == nil || len(tl.History) != 1 {
		t.Fatalf("Timeline(t007) on the cluster = %+v, %v, %v", tl, ok, err)
	}
	page, err := dstStore.List(ctx, outcome.Filter{State: outcome.StateReplayed})
	if err != nil || len(page.Records) != 1 || page.Records[0].ReplayedAs != "r010" {
		t.Fatalf("replayed on the cluster: %+v, %v", page.Records, err)
	}
	// The waiting resend holds its user's window on the cluster too.
	again, err := dst.Enqueue(ctx, tasks.Resend{ProjectID: testProject, Username: "waiting@example.com"})
	if err != nil || !again.Duplicate || again.TaskID != waiting.TaskID {
		t.Fatalf("Enqueue on the cluster = %+v, %v; want a duplicate of %s", again, err, waiting.TaskID)
	}
	ins := asynq.NewInspectorFromRedisClient(dstRdb)
	for q, n := range map[string]int{tasks.QueueSignup: 1, tasks.QueueBulk: 50} {
		if info, err := ins.GetQueueInfo(q); err != nil || info.Pending != n {
			t.Fatalf("queue %s on the cluster: %+v, %v; want %d pending", q, info, err, n)
		}
	}

	// Again: the same state, the tasks there already.
	sum, err = enqueue.Migrate(ctx, src, dst, nil)
	if err != nil || sum.Records != 200 || sum.Tasks != 0 || sum.AlreadyThere != 51 {
		t.Fatalf("Migrate again = %+v, %v", sum, err)
	}
	if got, err := dstStore.Stats(ctx); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("stats on the cluster after a second run %+v, %v; want %+v", got, err, want)
	}
}
