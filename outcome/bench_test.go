package outcome

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkFinish measures one record write (one EVALSHA) against a local
// redis-server, from one goroutine.
func BenchmarkFinish(b *testing.B) {
	s := setup(b)
	rec := dead("", "4f1c2a36-6a1e-4b8e-9d2f-1b6e0c1d2e3f", "user@example.com", ReasonRejected, "003-002")
	rec.BatchID = "batch-1"
	i := 0
	for b.Loop() {
		i++
		rec.TaskID = fmt.Sprint("task-", i)
		if _, err := s.store.Finish(s.ctx, rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFinishParallel measures record writes from GOMAXPROCS goroutines
// sharing one client, as a worker process does.
func BenchmarkFinishParallel(b *testing.B) {
	s := setup(b)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		rec := sent("", "4f1c2a36-6a1e-4b8e-9d2f-1b6e0c1d2e3f", "user@example.com")
		for pb.Next() {
			rec.TaskID = fmt.Sprint("task-", n.Add(1))
			if _, err := s.store.Finish(s.ctx, rec); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRateLimited measures recording one 429 (one EVALSHA).
func BenchmarkRateLimited(b *testing.B) {
	s := setup(b)
	i := 0
	for b.Loop() {
		i++
		if _, err := s.store.RateLimited(s.ctx, fmt.Sprint("task-", i%1000)); err != nil {
			b.Fatal(err)
		}
	}
}
