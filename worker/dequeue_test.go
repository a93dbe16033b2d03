package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/tasks"
)

// scriptCounter counts the script runs a client sends (not a first try
// of a script Redis did not have yet).
type scriptCounter struct {
	mu sync.Mutex
	n  int
}

func (c *scriptCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if n := cmd.Name(); (n == "evalsha" || n == "eval") && !redis.HasErrorPrefix(err, "NOSCRIPT") {
			c.mu.Lock()
			c.n++
			c.mu.Unlock()
		}
		return err
	}
}
func (c *scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (c *scriptCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// dequeueFixture is a queue of tasks in a real Redis and a dequeuer over it,
// asked for tasks the way asynq v0.26's RDB.Dequeue asks.
type dequeueFixture struct {
	rdb       redis.UniversalClient
	newClient func(testing.TB) redis.UniversalClient // another client of the same Redis
	d         *dequeuer
	scripts   *scriptCounter
	queue     string
	ids       []string // in the order they were enqueued
	now       time.Time
}

// newDequeueFixture enqueues n tasks on the Redis start sets up.
func newDequeueFixture(t *testing.T, start func(testing.TB) func(testing.TB) redis.UniversalClient, n int) *dequeueFixture {
	t.Helper()
	newClient := start(t)
	f := &dequeueFixture{rdb: newClient(t), newClient: newClient, scripts: &scriptCounter{}, queue: "bulk", now: time.Now()}
	client := asynq.NewClientFromRedisClient(f.rdb)
	for i := range n {
		id := fmt.Sprintf("task-%02d", i)
		if _, err := client.Enqueue(asynq.NewTask(tasks.TypeResend, []byte(id)), asynq.Queue(f.queue), asynq.TaskID(id)); err != nil {
			t.Fatal(err)
		}
		f.ids = append(f.ids, id)
	}
	f.rdb.AddHook(f.scripts)
	f.d = newDequeuer(f.rdb, 10*time.Millisecond, 50*time.Millisecond, 8)
	f.d.now = func() time.Time { return f.now }
	return f
}

// take is asynq's dequeue of the fixture's queue: the task's ID, or "" when
// the dequeuer answers nil.
func (f *dequeueFixture) take(t *testing.T) string {
	t.Helper()
	q := f.queue
	keys := []string{"asynq:{" + q + "}:pending", "asynq:{" + q + "}:paused", "asynq:{" + q + "}:active", "asynq:{" + q + "}:lease"}
	res, err := f.d.EvalSha(context.Background(), "asynq's sha", keys, f.now.Add(30*time.Second).Unix(), "asynq:{"+q+"}:t:").Result()
	if err == redis.Nil {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	msg, ok := res.(string)
	if !ok {
		t.Fatalf("dequeue answered %T, want the task's message", res)
	}
	for _, id := range f.ids {
		if stored, _ := f.rdb.HGet(context.Background(), "asynq:{"+q+"}:t:"+id, "msg").Result(); stored == msg {
			return id
		}
	}
	t.Fatalf("dequeue answered a message of no task")
	return ""
}

// states counts the fixture's tasks by their asynq state, and checks that
// the active ones, and only they, hold a lease.
func (f *dequeueFixture) states(t *testing.T) map[string]int {
	t.Helper()
	ctx := context.Background()
	got := map[string]int{}
	for _, id := range f.ids {
		state, err := f.rdb.HGet(ctx, "asynq:{"+f.queue+"}:t:"+id, "state").Result()
		if err != nil {
			t.Fatal(err)
		}
		got[state]++
		_, err = f.rdb.ZScore(ctx, "asynq:{"+f.queue+"}:lease", id).Result()
		if leased := err == nil; leased != (state == "active") {
			t.Errorf("%s is %s, leased: %v", id, state, leased)
		}
	}
	pending, _ := f.rdb.LLen(ctx, "asynq:{"+f.queue+"}:pending").Result()
	active, _ := f.rdb.LLen(ctx, "asynq:{"+f.queue+"}:active").Result()
	if int(pending) != got["pending"] || int(active) != got["active"] {
		t.Errorf("lists: %d pending, %d active; task states %v", pending, active, got)
	}
	return got
}

func TestDequeuerTakesABatchPerRoundTripInQueueOrder(t *testing.T) {
	t.Parallel()
	for _, be := range redistest.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			t.Parallel()
			f := newDequeueFixture(t, be.Start, 20)
			for i, id := range f.ids {
				if got := f.take(t); got != id {
					t.Fatalf("dequeue %d took %q, want %q (the queue's order)", i, got, id)
				}
				// A round trip takes 8: the 1st, 9th and 17th dequeue ask Redis.
				if want := i/8 + 1; f.scripts.count() != want {
					t.Fatalf("after %d dequeues %d script runs, want %d", i+1, f.scripts.count(), want)
				}
			}
			if got := f.states(t); got["active"] != 20 {
				t.Errorf("states %v, want all 20 active (asynq marks them done)", got)
			}
		})
	}
}

func TestDequeuerSkipsAnEmptyQueueForAMoment(t *testing.T) {
	t.Parallel()
	for _, be := range redistest.Backends()[:2] {
		t.Run(be.Name, func(t *testing.T) {
			t.Parallel()
			f := newDequeueFixture(t, be.Start, 0)
			client := asynq.NewClientFromRedisClient(f.newClient(t)) // not counted
			add := func(id string) {
				t.Helper()
				if _, err := client.Enqueue(asynq.NewTask(tasks.TypeResend, []byte(id)), asynq.Queue(f.queue), asynq.TaskID(id)); err != nil {
					t.Fatal(err)
				}
				f.ids = append(f.ids, id)
			}
			// Idle (no task yet): an empty queue is skipped for the idle recheck time, 50ms.
			if got := f.take(t); got != "" {
				t.Fatalf("an empty queue gave %q", got)
			}
			if got := f.take(t); got != "" || f.scripts.count() != 1 {
				t.Fatalf("asked again at once: %q after %d script runs, want nothing after 1", got, f.scripts.count())
			}
			add("first")
			f.now = f.now.Add(49 * time.Millisecond)
			if got := f.take(t); got != "" {
				t.Fatalf("idle, within the recheck time: %q, want nothing yet", got)
			}
			f.now = f.now.Add(time.Millisecond)
			if got := f.take(t); got != "first" {
				t.Fatalf("idle, after the recheck time: %q, want the new task", got)
			}
			// Busy (a task a moment ago): skipped for the busy recheck time, 10ms.
			if got := f.take(t); got != "" {
				t.Fatalf("an empty queue gave %q", got)
			}
			add("late")
			f.now = f.now.Add(9 * time.Millisecond)
			if got := f.take(t); got != "" {
				t.Fatalf("busy, within the recheck time: %q, want nothing yet", got)
			}
			f.now = f.now.Add(time.Millisecond)
			if got := f.take(t); got != "late" {
				t.Fatalf("busy, after the recheck time: %q, want the new task", got)
			}
			if f.scripts.count() != 4 {
				t.Errorf("%d script runs, want 4 (two misses, two tasks)", f.scripts.count())
			}
		})
	}
}

func TestDequeuerTakesNothingFromAPausedQueue(t *testing.T) {
	t.Parallel()
	f := newDequeueFixture(t, redistest.Single(redistest.Start), 3)
	if err := asynq.NewInspectorFromRedisClient(f.rdb).PauseQueue(f.queue); err != nil {
		t.Fatal(err)
	}
	if got := f.take(t); got != "" {
		t.Fatalf("a paused queue gave %q", got)
	}
	if got := f.states(t); got["pending"] != 3 {
		t.Errorf("states %v, want all 3 still pending", got)
	}
}

func TestDequeuerPutsHeldTasksBackInOrder(t *testing.T) {
	t.Parallel()
	for _, be := range redistest.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			t.Parallel()
			f := newDequeueFixture(t, be.Start, 12)
			if got := f.take(t); got != f.ids[0] {
				t.Fatalf("took %q, want %q", got, f.ids[0])
			}
			if n := f.d.heldCount(); n != 7 {
				t.Fatalf("holding %d, want 7", n)
			}
			// Not yet stale: nothing goes back.
			f.now = f.now.Add(holdMax - time.Millisecond)
			if n, err := f.d.release(context.Background(), holdMax); err != nil || n != 0 {
				t.Fatalf("release of stale ones: %d, %v; want none yet", n, err)
			}
			f.now = f.now.Add(time.Millisecond)
			if n, err := f.d.release(context.Background(), holdMax); err != nil || n != 7 {
				t.Fatalf("release of stale ones: %d, %v; want the 7 held", n, err)
			}
			if got := f.states(t); got["active"] != 1 || got["pending"] != 11 {
				t.Fatalf("states %v, want the one handed out active and 11 pending", got)
			}
			// They are first in line again, in their order.
			for _, id := range f.ids[1:] {
				if got := f.take(t); got != id {
					t.Fatalf("took %q, want %q", got, id)
				}
			}
		})
	}
}

// TestHeldTasksGoBackOnceRedisReturns: tasks taken ahead that cannot go
// back to their queue while Redis is down are kept, not handed out, and go
// back on the first release after Redis returns, rather than waiting out
// their lease.
func TestHeldTasksGoBackOnceRedisReturns(t *testing.T) {
	t.Parallel()
	srv := redistest.StartDurable(t)
	f := newDequeueFixture(t, func(testing.TB) func(testing.TB) redis.UniversalClient {
		return func(t testing.TB) redis.UniversalClient { return srv.Client(t) }
	}, 4)
	if got := f.take(t); got != f.ids[0] {
		t.Fatalf("took %q", got)
	}
	srv.Kill()
	f.now = f.now.Add(holdMax)
	if n, err := f.d.release(context.Background(), holdMax); err == nil || n != 0 {
		t.Fatalf("release with Redis down: %d, %v; want an error", n, err)
	}
	if n := f.d.heldCount(); n != 3 {
		t.Fatalf("holding %d after the failed release, want the 3 kept", n)
	}
	srv.Restart(t)
	if n, err := f.d.release(context.Background(), holdMax); err != nil || n != 3 {
		t.Fatalf("release once Redis is back: %d, %v; want the 3 kept", n, err)
	}
	if got := f.states(t); got["active"] != 1 || got["pending"] != 3 {
		t.Errorf("states %v, want the one handed out active and 3 pending", got)
	}
}

// TestARepeatedRequeueLeavesATaskTakenAgain: a requeue whose reply was
// lost (it ran) and that runs again, after another worker took the task
// anew, leaves that worker's task alone: it would be sent twice otherwise.
func TestARepeatedRequeueLeavesATaskTakenAgain(t *testing.T) {
	t.Parallel()
	f := newDequeueFixture(t, redistest.Single(redistest.Start), 2)
	if got := f.take(t); got != f.ids[0] {
		t.Fatalf("took %q", got)
	}
	ctx := context.Background()
	st := f.d.queues[f.queue]
	held := append([]heldTask(nil), st.held...)
	if err := f.d.requeue(ctx, st, held); err != nil {
		t.Fatal(err)
	}
	// Another worker takes it, a second later, with a lease of its own.
	other := newDequeuer(f.newClient(t), time.Millisecond, time.Millisecond, 1)
	keys := []string{"asynq:{bulk}:pending", "asynq:{bulk}:paused", "asynq:{bulk}:active", "asynq:{bulk}:lease"}
	if _, err := other.EvalSha(ctx, "asynq's sha", keys, f.now.Add(31*time.Second).Unix(), "asynq:{bulk}:t:").Result(); err != nil {
		t.Fatal(err)
	}
	if err := f.d.requeue(ctx, st, held); err != nil {
		t.Fatal(err)
	}
	if got := f.states(t); got["active"] != 2 {
		t.Fatalf("states %v; want both tasks active (one here, one taken again)", got)
	}
}

func TestDequeuerHandsOutNoStaleTask(t *testing.T) {
	t.Parallel()
	f := newDequeueFixture(t, redistest.Single(redistest.Start), 4)
	if got := f.take(t); got != f.ids[0] {
		t.Fatalf("took %q", got)
	}
	// The three held ones waited too long for asynq to ask: they go back
	// and are taken anew, with a new lease.
	f.now = f.now.Add(holdMax)
	for _, id := range f.ids[1:] {
		if got := f.take(t); got != id {
			t.Fatalf("took %q, want %q", got, id)
		}
	}
	if f.scripts.count() != 3 { // take, put back, take again
		t.Errorf("%d script runs, want 3", f.scripts.count())
	}
	lease, err := f.rdb.ZScore(context.Background(), "asynq:{bulk}:lease", f.ids[3]).Result()
	if err != nil || int64(lease) != f.now.Add(30*time.Second).Unix() {
		t.Errorf("lease of a task taken anew: %v, %v; want the new dequeue's", lease, err)
	}
}

func TestDequeuerKeepsTheQueueWeights(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	client := asynq.NewClientFromRedisClient(rdb)
	for i := range 100 {
		for _, q := range []string{tasks.QueueSignup, tasks.QueueBulk} {
			if _, err := client.Enqueue(asynq.NewTask("weights", nil), asynq.Queue(q), asynq.TaskID(fmt.Sprintf("%s-%d", q, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mu sync.Mutex
	var order []string
	done := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc("weights", func(ctx context.Context, task *asynq.Task) error {
		q, _ := asynq.GetQueueName(ctx)
		mu.Lock()
		defer mu.Unlock()
		if order = append(order, q); len(order) == 45 {
			close(done)
		}
		return nil
	})
	srv := asynq.NewServerFromRedisClient(newDequeuer(rdb, emptyQueueRecheck, DefaultPollInterval/2, dequeueBatch), asynq.Config{
		Concurrency: 1, Queues: DefaultQueues(), LogLevel: asynq.FatalLevel,
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	<-done
	srv.Shutdown()
	signups := 0
	for _, q := range order[:45] {
		if q == tasks.QueueSignup {
			signups++
		}
	}
	// 8 in 9 expected (40); 30 is five standard deviations below.
	if signups < 30 {
		t.Errorf("%d of the first 45 tasks were signups, want about 40 (weights 8:1): %v", signups, order[:45])
	}
}

// TestShutdownPutsTasksTakenAheadBack: tasks the worker took from Redis
// ahead of its slots go back to the queue when it stops, with the ones
// whose calls were cut off, so that the next worker takes every one.
func TestShutdownPutsTasksTakenAheadBack(t *testing.T) {
	t.Parallel()
	p := newSlowPipeline(t, 2)
	const n = 30
	for i := range n {
		p.enqueue(t, fmt.Sprintf("user%02d@example.com", i))
	}
	if err := p.server.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return p.api.Total() == 2 && p.server.dequeue.heldCount() > 0 }, "both calls in flight and tasks taken ahead")
	p.server.Shutdown()
	info, err := p.ins.GetQueueInfo(tasks.QueueSignup)
	// The calls cut off go back pending, the task ready for a slot a second
	// later (as a retry that costs no attempt), the ones taken ahead pending.
	if err != nil || info.Pending+info.Retry != n || info.Active != 0 {
		t.Fatalf("after shutdown: %d pending, %d retry, %d active (%v); want all %d back", info.Pending, info.Retry, info.Active, err, n)
	}
	p.api.SetDefault(fake.Behavior{})
	runWorker(t, p.newWorker(t))
	waitFor(t, func() bool { st, _ := p.store.Stats(context.Background()); return st.Sent == n }, "all sent by the next worker")
}
