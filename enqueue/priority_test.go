package enqueue_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/worker"
)

// apiWatch observes the calls a fake Login API receives.
type apiWatch struct {
	api  *fake.API
	bulk atomic.Int64 // calls for usernames starting with "user"

	mu      sync.Mutex
	waiters map[string]chan time.Time // username → when it was called
	atBulk  map[int64]chan struct{}   // closed when bulk reaches the count
}

func newAPIWatch() *apiWatch {
	w := &apiWatch{api: fake.New(), waiters: map[string]chan time.Time{}, atBulk: map[int64]chan struct{}{}}
	w.api.SetRules(func(username string) (fake.Behavior, bool) {
		if strings.HasPrefix(username, "user") {
			n := w.bulk.Add(1)
			w.mu.Lock()
			if ch := w.atBulk[n]; ch != nil {
				close(ch)
			}
			w.mu.Unlock()
			return fake.Behavior{}, false
		}
		w.mu.Lock()
		ch := w.waiters[username]
		w.mu.Unlock()
		if ch != nil {
			ch <- time.Now()
		}
		return fake.Behavior{}, false
	})
	return w
}

// expect returns a channel that receives the time of username's call.
func (w *apiWatch) expect(username string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	w.mu.Lock()
	w.waiters[username] = ch
	w.mu.Unlock()
	return ch
}

// bulkReaches returns a channel closed once n bulk calls were received.
func (w *apiWatch) bulkReaches(n int64) <-chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bulk.Load() >= n {
		close(ch)
	} else {
		w.atBulk[n] = ch
	}
	return ch
}

// startWorker runs a real worker process (worker.New) on s's Redis against
// w's API with the default queue weights, and stops it when t ends.
func startWorker(t *testing.T, s batchSetup, w *apiWatch) {
	t.Helper()
	hs := httptest.NewServer(w.api)
	t.Cleanup(hs.Close)
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	wk, err := worker.New(s.rdb, worker.Options{APIBase: hs.URL, Log: quiet, PauseMax: worker.DefaultPauseMax})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- wk.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

// TestSignupsGoAheadOfABulkBacklog: signups enqueued while a real worker
// with the default weights (signup=8, bulk=1) works off a bulk backlog are
// all sent while most of the backlog still waits, and the backlog is not
// starved meanwhile. How long a signup waits is a benchmark figure (`make
// bench`, docs/BENCHMARKS.md), not asserted here.
func TestSignupsGoAheadOfABulkBacklog(t *testing.T) {
	t.Parallel()
	s := setupBatch(t)
	ctx := context.Background()
	const backlog, signups = 20_000, 20
	sum, err := s.e.EnqueueBatch(ctx, csvSource(t, usersCSV(backlog)), enqueue.BatchOptions{BatchID: "backlog"})
	if err != nil || sum.Enqueued != backlog {
		t.Fatalf("backlog: %+v, %v", sum, err)
	}
	w := newAPIWatch()
	startWorker(t, s, w)
	<-w.bulkReaches(500) // the worker is busy with the backlog

	bulkBefore := w.bulk.Load()
	for i := range signups {
		username := fmt.Sprintf("signup-%d@example.com", i)
		called := w.expect(username)
		res, err := s.e.Enqueue(ctx, tasks.Resend{ProjectID: testProject, Username: username})
		if err != nil || res.Queue != tasks.QueueSignup {
			t.Fatalf("enqueue a signup: %+v, %v", res, err)
		}
		select {
		case <-called:
		case <-time.After(30 * time.Second):
			t.Fatalf("signup %d was not sent", i)
		}
	}
	bulkDuring := w.bulk.Load() - bulkBefore
	if left := s.queued(t); left < backlog/2 {
		t.Errorf("only %d bulk tasks were left when the signups were all sent: they did not go ahead", left)
	}
	if bulkDuring == 0 {
		t.Error("no bulk task was sent while the signups were: bulk is starved")
	}
}

// TestBatchRerunWhileWorkerDrains reruns a batch again and again while a
// real worker works it off: no rerun may enqueue anything, and every user
// gets exactly one call.
func TestBatchRerunWhileWorkerDrains(t *testing.T) {
	t.Parallel()
	s := setupBatch(t)
	ctx := context.Background()
	const n = 2000
	input := usersCSV(n)
	if sum, err := s.e.EnqueueBatch(ctx, csvSource(t, input), enqueue.BatchOptions{BatchID: "drain"}); err != nil || sum.Enqueued != n {
		t.Fatalf("first run: %+v, %v", sum, err)
	}
	w := newAPIWatch()
	startWorker(t, s, w)
	drained := w.bulkReaches(n)
	for reruns := 0; ; reruns++ {
		sum, err := s.e.EnqueueBatch(ctx, csvSource(t, input), enqueue.BatchOptions{BatchID: "drain"})
		if err != nil || sum.Enqueued != 0 || sum.AlreadyQueued != n {
			t.Fatalf("rerun %d while the worker drains: %+v, %v; want nothing enqueued", reruns, sum, err)
		}
		select {
		case <-drained:
			t.Logf("%d reruns while the worker drained the batch", reruns+1)
		default:
			continue
		}
		break
	}
	// Once more after every call was made, whatever the state of the last tasks.
	if sum, err := s.e.EnqueueBatch(ctx, csvSource(t, input), enqueue.BatchOptions{BatchID: "drain"}); err != nil || sum.Enqueued != 0 {
		t.Fatalf("rerun after the drain: %+v, %v", sum, err)
	}
	for i := range n {
		if c := w.api.Count(fmt.Sprintf("user%d@example.com", i)); c != 1 {
			t.Errorf("user%d got %d calls, want 1", i, c)
		}
	}
}
