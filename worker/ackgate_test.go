package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// heldWrites is a worker's outcome store whose group writes wait until
// let is closed.
type heldWrites struct {
	*outcome.Store
	let     chan struct{}
	mu      sync.Mutex
	started int // FinishAll calls begun
}

func (s *heldWrites) FinishAll(ctx context.Context, recs []outcome.Record) ([]outcome.Record, error) {
	s.mu.Lock()
	s.started++
	s.mu.Unlock()
	<-s.let
	return s.Store.FinishAll(ctx, recs)
}

// holdWrites makes the writes of p's worker wait until the returned func
// is called.
func holdWrites(p *pipeline) (*heldWrites, func()) {
	w := &heldWrites{Store: p.store, let: make(chan struct{})}
	p.handler.Outcomes = w
	var once sync.Once
	return w, func() { once.Do(func() { close(w.let) }) }
}

// TestASentTaskLeavesItsQueueOnlyOnceItsRecordIsWritten: a handler whose
// email went out gives its asynq slot to the next task without waiting for
// its outcome record, but asynq's ack of the task (off the active list,
// counted processed) waits for the record. At a concurrency of 1 the worker
// has two asynq slots and holds one ack at most (HeldAcks(1)): three tasks
// are called while the records wait, the first one's ack held, the other
// two waiting for their records in their slots. Each is still active in
// Redis, with its lease, as a task in flight is: a worker that died then
// would leave it to asynq's recoverer. Once the writes go, the three are
// recorded and done. On the real Redis, its scripts are flushed meanwhile
// (a restart): the held ack still runs.
func TestASentTaskLeavesItsQueueOnlyOnceItsRecordIsWritten(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			p := newPipeline(t, b.start, func(o *Options) { o.Concurrency = 1 })
			writes, let := holdWrites(p)
			defer let()
			const n = 3
			users := make([]string, n)
			for i := range users {
				users[i] = fmt.Sprintf("user%d@example.com", i)
				p.enqueue(t, users[i])
			}
			p.run(t)
			waitFor(t, func() bool { return p.api.Total() == n }, "every task called while the records wait")
			info, err := p.ins.GetQueueInfo(tasks.QueueSignup)
			if err != nil || info.Active != n || info.Pending != 0 || info.Processed != 0 {
				t.Fatalf("queue while the records wait: %+v, %v; want all %d active, none processed", info, err, n)
			}
			leased, err := p.rdb.ZCard(context.Background(), "asynq:{"+tasks.QueueSignup+"}:lease").Result()
			if err != nil || leased != n {
				t.Fatalf("%d tasks leased (%v), want %d", leased, err, n)
			}
			if st, err := p.store.Stats(context.Background()); err != nil || st.Sent != 0 {
				t.Fatalf("records before the writes: %+v, %v", st, err)
			}
			if held := p.handler.acks.heldCount(); held != 1 {
				t.Fatalf("%d acks held, want the limit of 1", held)
			}
			if b.name == "redis" {
				if err := p.rdb.ScriptFlush(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
			}
			let()
			waitFor(t, func() bool {
				info, err := p.ins.GetQueueInfo(tasks.QueueSignup)
				return err == nil && info.Size == 0 && info.Processed == n
			}, "every task done")
			for _, u := range users {
				rec, ok, err := p.store.Latest(context.Background(), testProject, u)
				if err != nil || !ok || rec.Status != outcome.StatusSent || p.api.Count(u) != 1 {
					t.Errorf("%s: %+v %v %v, %d calls", u, rec, ok, err, p.api.Count(u))
				}
			}
			writes.mu.Lock()
			defer writes.mu.Unlock()
			if writes.started == 0 || writes.started > n {
				t.Errorf("%d group writes for %d records", writes.started, n)
			}
		})
	}
}

// TestShutdownWaitsForHeldAcks: a worker shut down while sent tasks'
// records are being written returns only once they are written and the
// tasks acked, so nothing is left active for the recoverer.
func TestShutdownWaitsForHeldAcks(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, redistest.Start, func(o *Options) { o.Concurrency = 30 })
	_, let := holdWrites(p)
	const n = 3 // HeldAcks(30): every ack is held
	for i := range n {
		p.enqueue(t, fmt.Sprintf("user%d@example.com", i))
	}
	if err := p.server.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var shutdown sync.Once
	stop := func() { shutdown.Do(func() { go func() { p.server.Shutdown(); close(done) }() }) }
	t.Cleanup(func() { let(); stop(); <-done }) // before the Redis client closes
	waitFor(t, func() bool { return p.api.Total() == n && p.handler.acks.heldCount() == n }, "every task called, its ack held")
	stop()
	waitFor(t, func() bool { s, err := p.ins.Servers(); return err == nil && len(s) == 0 }, "the asynq servers to stop")
	select {
	case <-done:
		t.Fatal("Shutdown returned while the records were still being written")
	default:
	}
	let()
	<-done
	info, err := p.ins.GetQueueInfo(tasks.QueueSignup)
	if err != nil || info.Size != 0 || info.Processed != n {
		t.Errorf("queue after shutdown: %+v, %v; want empty, %d processed", info, err, n)
	}
	if st, err := p.store.Stats(context.Background()); err != nil || st.Sent != n {
		t.Errorf("records after shutdown: %+v, %v", st, err)
	}
}
