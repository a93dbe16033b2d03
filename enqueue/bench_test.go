package enqueue_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/tasks"
)

// BenchmarkEnqueue compares, on one Redis in one run, a plain loop over
// asynq's Client.Enqueue from one goroutine with EnqueueBatch reading the
// same number of rows from CSV. Both report tasks/s; run with a fixed count
// so that both enqueue the same number of tasks:
//
//	go test -run '^$' -bench BenchmarkEnqueue -benchtime 200000x -count 5 ./enqueue/
func BenchmarkEnqueue(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	ctx := context.Background()
	const project = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"

	b.Run("plain-loop", func(b *testing.B) {
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		client := asynq.NewClientFromRedisClient(rdb)
		b.ResetTimer()
		for i := range b.N {
			r := tasks.Resend{ProjectID: project, Username: fmt.Sprintf("user%d@example.com", i), BatchID: "bench", EnqueuedAt: time.Now().UTC()}
			task, err := tasks.NewTask(r)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := client.EnqueueContext(ctx, task, tasks.Options(tasks.QueueBulk, enqueue.BatchTaskID("bench", r))...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})

	b.Run("batch", func(b *testing.B) {
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		var csv bytes.Buffer
		csv.WriteString("project_id,username\n")
		for i := range b.N {
			fmt.Fprintf(&csv, "%s,user%d@example.com\n", project, i)
		}
		src, err := enqueue.NewCSVReader(&csv, tasks.Resend{})
		if err != nil {
			b.Fatal(err)
		}
		e := enqueue.New(rdb, enqueue.Options{})
		b.ResetTimer()
		sum, err := e.EnqueueBatch(ctx, src, enqueue.BatchOptions{BatchID: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		if sum.Enqueued != int64(b.N) {
			b.Fatalf("enqueued %d of %d", sum.Enqueued, b.N)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
}
