package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// onceEnqueue enqueues r under key as the HTTP API does.
func onceEnqueue(t *testing.T, e *Enqueuer, key string, r tasks.Resend) (Result, bool, error) {
	t.Helper()
	fp, _ := json.Marshal(r)
	ans, replayed, err := e.Once(context.Background(), key, fp, func(ctx context.Context, id func(int) string) ([]byte, error) {
		res, err := e.EnqueueAs(ctx, r, id(0))
		if err != nil {
			return nil, err
		}
		return json.Marshal(res)
	})
	if err != nil {
		return Result{}, false, err
	}
	var res Result
	if err := json.Unmarshal(ans, &res); err != nil {
		t.Fatal(err)
	}
	return res, replayed, nil
}

// TestOnceAfterAFailureHalfway: a request that enqueued its task and then
// failed (its answer never stored) is repeated: the repeat finds the task,
// while it waits and after it is done, and enqueues no second one.
func TestOnceAfterAFailureHalfway(t *testing.T) {
	t.Parallel()
	for name, window := range map[string]time.Duration{"dedup window": 0, "no dedup window": -1} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testOnceAfterAFailureHalfway(t, window)
		})
	}
}

func testOnceAfterAFailureHalfway(t *testing.T, dedup time.Duration) {
	b := setup(t, Options{DedupWindow: dedup})
	ctx := context.Background()
	r := tasks.Resend{ProjectID: project, Username: "jane@example.com"}
	fp, _ := json.Marshal(r)
	// The first try: the key is taken, the task enqueued, then it fails.
	boom := errors.New("the connection dropped")
	_, _, err := b.enq.Once(ctx, "key-1", fp, func(ctx context.Context, id func(int) string) ([]byte, error) {
		if _, err := b.enq.EnqueueAs(ctx, r, id(0)); err != nil {
			t.Fatal(err)
		}
		return nil, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("first try: %v", err)
	}
	id := idemTaskIDs("key-1", fingerprintOf(fp))(0)
	res, replayed, err := onceEnqueue(t, b.enq, "key-1", r)
	if err != nil || res.TaskID != id || !res.Duplicate || replayed {
		t.Errorf("the repeat while the task waits: %+v, replayed %v, %v; want a duplicate of %s", res, replayed, err, id)
	}
	// Stored now: a repeat gets the answer back.
	res, replayed, err = onceEnqueue(t, b.enq, "key-1", r)
	if err != nil || res.TaskID != id || !replayed {
		t.Errorf("the repeat of a finished request: %+v, replayed %v, %v", res, replayed, err)
	}

	// Another key: enqueued, processed (its task gone, its outcome
	// recorded), and the answer was never stored.
	r2 := tasks.Resend{ProjectID: project, Username: "john@example.com"}
	fp2, _ := json.Marshal(r2)
	id2 := idemTaskIDs("key-2", fingerprintOf(fp2))(0)
	if _, _, err := b.enq.Once(ctx, "key-2", fp2, func(ctx context.Context, id func(int) string) ([]byte, error) {
		_, err := b.enq.EnqueueAs(ctx, r2, id(0))
		return nil, errors.Join(err, boom)
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if err := b.ins.DeleteTask(tasks.QueueSignup, id2); err != nil {
		t.Fatal(err)
	}
	rec := outcome.Record{TaskID: id2, ProjectID: project, Username: r2.Username, Queue: tasks.QueueSignup, Status: outcome.StatusSent, Attempts: 1, HTTPStatus: 204, EnqueuedAt: time.Now()}
	if _, err := b.enq.outcomes.Finish(ctx, rec); err != nil {
		t.Fatal(err)
	}
	res, _, err = onceEnqueue(t, b.enq, "key-2", r2)
	if err != nil || res.TaskID != id2 || !res.Duplicate {
		t.Errorf("the repeat of a request whose task is done: %+v, %v", res, err)
	}
	if info, err := b.ins.GetQueueInfo(tasks.QueueSignup); err != nil || info.Size != 1 {
		t.Errorf("queue: %+v, %v; want jane's task only", info, err)
	}
}

func TestIdempotencyKeyIsChecked(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"":                        "is empty",
		strings.Repeat("k", 256):  "at most 255",
		"two words":               "printable ASCII",
		"caf\u00e9":               "printable ASCII",
		"tab\there":               "printable ASCII",
		"0b5e4a1c-9d3e-4d6e-a0ce": "",
	} {
		err := CheckIdempotencyKey(key)
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("CheckIdempotencyKey(%q) = %v, want %q", key, err, want)
		}
	}
}

// TestEnqueueManyAsEnqueueWould: valid resends are enqueued, invalid ones
// reported, repeats of a user and users within the dedup window are
// duplicates naming the holder.
func TestEnqueueManyAsEnqueueWould(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	earlier, err := b.enq.Enqueue(ctx, tasks.Resend{ProjectID: project, Username: "old@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	rs := []tasks.Resend{
		{ProjectID: project, Username: "a@example.com"},
		{ProjectID: "x", Username: "b@example.com"},
		{ProjectID: project, Username: "OLD@example.com"},
		{ProjectID: project, Username: "A@example.com"},
		{ProjectID: project, Username: "c@example.com"},
	}
	out, err := b.enq.EnqueueMany(ctx, rs, nil)
	if err != nil || len(out) != len(rs) {
		t.Fatalf("%+v, %v", out, err)
	}
	var ve *tasks.ValidationError
	switch {
	case out[0].Err != nil || out[0].Duplicate || out[4].Err != nil || out[4].Duplicate:
		t.Errorf("new users: %+v %+v", out[0], out[4])
	case !errors.As(out[1].Err, &ve) || ve.Field != "project_id":
		t.Errorf("invalid: %+v", out[1])
	case !out[2].Duplicate || out[2].TaskID != earlier.TaskID:
		t.Errorf("within the window: %+v, want a duplicate of %s", out[2], earlier.TaskID)
	case !out[3].Duplicate || out[3].TaskID != out[0].TaskID:
		t.Errorf("a repeat: %+v, want a duplicate of %s", out[3], out[0].TaskID)
	}
	if info, err := b.ins.GetQueueInfo(tasks.QueueSignup); err != nil || info.Size != 3 {
		t.Errorf("queue: %+v, %v; want 3 tasks", info, err)
	}
	if _, err := b.enq.EnqueueMany(ctx, make([]tasks.Resend, MaxMany+1), nil); err == nil {
		t.Error("more than MaxMany: no error")
	}
}

// TestAKeyUsedAgainAfterItsWindow: once Redis has let the key go, the
// same key for another request enqueues that request's task.
func TestAKeyUsedAgainAfterItsWindow(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{IdempotencyWindow: 100 * time.Millisecond})
	first, _, err := onceEnqueue(t, b.enq, "reused", tasks.Resend{ProjectID: project, Username: "first@example.com"})
	if err != nil || first.Duplicate {
		t.Fatalf("first: %+v, %v", first, err)
	}
	rdb := b.srv.Client(t)
	for rdb.Exists(context.Background(), b.enq.idemKey("reused")).Val() == 1 { // Redis expires it
		time.Sleep(10 * time.Millisecond)
	}
	later, _, err := onceEnqueue(t, b.enq, "reused", tasks.Resend{ProjectID: project, Username: "later@example.com"})
	if err != nil || later.Duplicate || later.TaskID == first.TaskID {
		t.Errorf("the key for another request after its window: %+v, %v; want a new task", later, err)
	}
	if info, err := b.ins.GetQueueInfo(tasks.QueueSignup); err != nil || info.Size != 2 {
		t.Errorf("queue: %+v, %v; want 2 tasks", info, err)
	}
}

// TestABatchThatFailedHalfwayIsCompleted: a batch whose first items were
// enqueued before it failed, sent again under its key, enqueues the rest
// only, and names the first items' tasks as duplicates.
func TestABatchThatFailedHalfwayIsCompleted(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	var rs []tasks.Resend
	for _, u := range []string{"a", "b", "c", "d"} {
		rs = append(rs, tasks.Resend{ProjectID: project, Username: u + "@example.com"})
	}
	fp, _ := json.Marshal(rs)
	var firstIDs []string
	_, _, err := b.enq.Once(ctx, "batch-key", fp, func(ctx context.Context, id func(int) string) ([]byte, error) {
		out, err := b.enq.EnqueueMany(ctx, rs[:2], id)
		for _, o := range out {
			firstIDs = append(firstIDs, o.TaskID)
		}
		return nil, errors.Join(err, errors.New("lost the connection"))
	})
	if err == nil || len(firstIDs) != 2 {
		t.Fatalf("first try: %v, %v", firstIDs, err)
	}
	var out []ItemResult
	if _, _, err := b.enq.Once(ctx, "batch-key", fp, func(ctx context.Context, id func(int) string) ([]byte, error) {
		out, err = b.enq.EnqueueMany(ctx, rs, id)
		return []byte("{}"), err
	}); err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		switch {
		case o.Err != nil:
			t.Errorf("item %d: %v", i, o.Err)
		case i < 2 && (!o.Duplicate || o.TaskID != firstIDs[i]):
			t.Errorf("item %d, enqueued before: %+v, want a duplicate of %s", i, o, firstIDs[i])
		case i >= 2 && o.Duplicate:
			t.Errorf("item %d, never enqueued: %+v", i, o)
		}
	}
	if info, err := b.ins.GetQueueInfo(tasks.QueueSignup); err != nil || info.Size != 4 {
		t.Errorf("queue: %+v, %v; want 4 tasks", info, err)
	}
}

// TestGrouperSettlesEveryCaller: concurrent single enqueues through a
// Grouper get what Enqueue would give them: a task per user, the same
// task for the same user, and their own derived IDs.
func TestGrouperSettlesEveryCaller(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	g := b.enq.NewGrouper()
	const users = 40
	type answer struct {
		user int
		res  Result
		err  error
	}
	answers := make(chan answer, 3*users)
	var wg sync.WaitGroup
	for u := range users {
		for k := range 3 {
			wg.Go(func() {
				id := "" // the first two calls of a user: random IDs; the third its own
				if k == 2 {
					id = fmt.Sprintf("own-%d", u)
				}
				res, err := g.Enqueue(context.Background(), tasks.Resend{ProjectID: project, Username: fmt.Sprintf("u%d@example.com", u)}, id)
				answers <- answer{u, res, err}
			})
		}
	}
	wg.Wait()
	close(answers)
	ids := map[int]map[string]bool{}
	for a := range answers {
		if a.err != nil {
			t.Fatalf("user %d: %v", a.user, a.err)
		}
		if ids[a.user] == nil {
			ids[a.user] = map[string]bool{}
		}
		ids[a.user][a.res.TaskID] = true
	}
	for u, set := range ids {
		if len(set) != 1 {
			t.Errorf("user %d was told of tasks %v, want one", u, set)
		}
	}
	if info, err := b.ins.GetQueueInfo(tasks.QueueSignup); err != nil || info.Size != users {
		t.Errorf("queue: %+v, %v; want %d tasks", info, err, users)
	}
	if _, err := g.Enqueue(context.Background(), tasks.Resend{ProjectID: "x", Username: "u"}, ""); err == nil {
		t.Error("an invalid resend: no error")
	}
}
