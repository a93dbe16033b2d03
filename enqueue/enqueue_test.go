package enqueue

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

const project = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"

type bundle struct {
	enq *Enqueuer
	ins *asynq.Inspector
	srv *redistest.Server
}

func setup(t *testing.T, opts Options) *bundle {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	return &bundle{enq: New(rdb, opts), ins: asynq.NewInspectorFromRedisClient(rdb), srv: srv}
}

func TestEnqueueWritesTaskToSignupQueue(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	b := setup(t, Options{Clock: clock})
	res, err := b.enq.Enqueue(context.Background(), tasks.Resend{ProjectID: project, Username: " john@example.com ", LoginURL: "https://example.com/cb"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || res.Queue != tasks.QueueSignup || res.TaskID == "" {
		t.Fatalf("result = %+v", res)
	}
	info, err := b.ins.GetTaskInfo(tasks.QueueSignup, res.TaskID)
	if err != nil {
		t.Fatalf("task not in asynq: %v", err)
	}
	r, err := tasks.Decode(info.Payload)
	if err != nil || r.Username != "john@example.com" || r.LoginURL != "https://example.com/cb" || !r.EnqueuedAt.Equal(clock.Now()) {
		t.Errorf("payload = %+v, %v", r, err)
	}
	if info.Type != tasks.TypeResend || info.MaxRetry != tasks.MaxRetry || info.State != asynq.TaskStatePending {
		t.Errorf("task info = %+v", info)
	}
}

func TestEnqueueRejectsInvalidWithoutTouchingRedis(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	_, err := b.enq.Enqueue(context.Background(), tasks.Resend{ProjectID: "nope", Username: "j@example.com"})
	var ve *tasks.ValidationError
	if !errors.As(err, &ve) || ve.Field != "project_id" {
		t.Fatalf("err = %v, want a project_id validation error", err)
	}
	keys, err := b.srv.Client(t).Keys(context.Background(), "*").Result()
	if err != nil || len(keys) != 0 {
		t.Errorf("keys after a rejected enqueue: %v, %v", keys, err)
	}
}

func TestDedupWindowReturnsExistingTask(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{DedupWindow: 300 * time.Millisecond})
	ctx := context.Background()
	r := tasks.Resend{ProjectID: project, Username: "john@example.com"}
	first, err := b.enq.Enqueue(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.enq.Enqueue(ctx, r)
	if err != nil || !again.Duplicate || again.TaskID != first.TaskID {
		t.Fatalf("second enqueue = %+v, %v; want the first task %s", again, err, first.TaskID)
	}
	other, err := b.enq.Enqueue(ctx, tasks.Resend{ProjectID: project, Username: "jane@example.com"})
	if err != nil || other.Duplicate {
		t.Fatalf("another user was deduplicated: %+v, %v", other, err)
	}
	if n := pending(t, b); n != 2 {
		t.Fatalf("%d tasks pending, want 2", n)
	}
	// After the window (Redis expires the claim) a new resend is accepted.
	waitExpired(t, b, r)
	later, err := b.enq.Enqueue(ctx, r)
	if err != nil || later.Duplicate || later.TaskID == first.TaskID {
		t.Fatalf("after the window: %+v, %v; want a new task", later, err)
	}
}

func TestDedupDisabled(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{DedupWindow: -1})
	r := tasks.Resend{ProjectID: project, Username: "john@example.com"}
	for i := 0; i < 2; i++ {
		if res, err := b.enq.Enqueue(context.Background(), r); err != nil || res.Duplicate {
			t.Fatalf("enqueue %d: %+v, %v", i, res, err)
		}
	}
	if n := pending(t, b); n != 2 {
		t.Errorf("%d pending, want 2", n)
	}
}

func TestFailedEnqueueReleasesDedupClaim(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	r := tasks.Resend{ProjectID: project, Username: "john@example.com"}
	// A task ID clash makes asynq refuse the enqueue after the claim was taken.
	b.enq.newID = func() string { return "fixed-id" }
	if _, err := b.enq.Enqueue(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := b.enq.Enqueue(ctx, tasks.Resend{ProjectID: project, Username: "jane@example.com"}); err == nil {
		t.Fatal("enqueue with a clashing task ID succeeded")
	}
	b.enq.newID = func() string { return "fresh-id" }
	res, err := b.enq.Enqueue(ctx, tasks.Resend{ProjectID: project, Username: "jane@example.com"})
	if err != nil || res.Duplicate || res.TaskID != "fresh-id" {
		t.Fatalf("retry after a failed enqueue = %+v, %v; the claim should have been released", res, err)
	}
}

func pending(t *testing.T, b *bundle) int {
	t.Helper()
	info, err := b.ins.GetQueueInfo(tasks.QueueSignup)
	if err != nil {
		t.Fatal(err)
	}
	return info.Pending
}

func waitExpired(t *testing.T, b *bundle, r tasks.Resend) {
	t.Helper()
	rdb := b.srv.Client(t)
	deadline := time.Now().Add(5 * time.Second)
	for rdb.Exists(context.Background(), b.enq.dedupKey(r)).Val() == 1 {
		if time.Now().After(deadline) {
			t.Fatal("dedup claim never expired")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConcurrentDoubleClickMakesOneTask(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	r := tasks.Resend{ProjectID: project, Username: "john@example.com"}
	const n = 20
	ids := make(chan string, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			res, err := b.enq.Enqueue(context.Background(), r)
			ids <- res.TaskID
			errs <- err
		}()
	}
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		seen[<-ids] = true
	}
	if len(seen) != 1 || pending(t, b) != 1 {
		t.Fatalf("%d distinct task IDs handed out, %d tasks pending; want one task for everyone", len(seen), pending(t, b))
	}
	for id := range seen {
		if _, err := b.ins.GetTaskInfo(tasks.QueueSignup, id); err != nil {
			t.Errorf("callers were told of task %s, which does not exist: %v", id, err)
		}
	}
}

func TestDedupIgnoresEmailCase(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	first, err := b.enq.Enqueue(ctx, tasks.Resend{ProjectID: project, Username: "John@Example.com"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.enq.Enqueue(ctx, tasks.Resend{ProjectID: project, Username: "john@example.com"})
	if err != nil || !again.Duplicate || again.TaskID != first.TaskID {
		t.Errorf("same address in another case: %+v, %v", again, err)
	}
}

func TestDeadLetteredResendDoesNotBlockANewOne(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	r := tasks.Resend{ProjectID: project, Username: "john@example.com"}
	first, err := b.enq.Enqueue(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	// The worker dead-letters it (say, 010-011: login_url required).
	store := outcome.NewStore(b.srv.Client(t), outcome.Options{})
	if _, err := store.Finish(ctx, outcome.Record{TaskID: first.TaskID, ProjectID: project, Username: r.Username, Queue: tasks.QueueSignup,
		Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, ErrorCode: "010-011", FinishedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r.LoginURL = "https://example.com/cb"
	fixed, err := b.enq.Enqueue(ctx, r)
	if err != nil || fixed.Duplicate || fixed.TaskID == first.TaskID {
		t.Fatalf("resend after a dead letter = %+v, %v; want a new task", fixed, err)
	}
	again, err := b.enq.Enqueue(ctx, r)
	if err != nil || !again.Duplicate || again.TaskID != fixed.TaskID {
		t.Errorf("a repeat of the new resend = %+v, %v; want the new task as a duplicate", again, err)
	}
}

func TestPendingClaimIsAwaited(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	b := setup(t, Options{Clock: clock})
	ctx := context.Background()
	r := tasks.Resend{ProjectID: project, Username: "john@example.com"}
	rdb := b.srv.Client(t)
	key := b.enq.dedupKey(r)
	// Another caller's enqueue is under way, and then fails.
	if err := rdb.Set(ctx, key, pendingMark+"other", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res Result
		err error
	}
	done := make(chan result, 1)
	go func() { res, err := b.enq.Enqueue(ctx, r); done <- result{res, err} }()
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // it waits
		t.Fatal(err)
	}
	releaseScript.Run(ctx, rdb, []string{key}, "other")
	clock.Advance(pendingPoll)
	got := <-done
	if got.err != nil || got.res.Duplicate || got.res.TaskID == "other" {
		t.Fatalf("after the other enqueue failed: %+v, %v; want a task of our own", got.res, got.err)
	}
	if held := rdb.Get(ctx, key).Val(); held != got.res.TaskID {
		t.Errorf("claim holds %q, want the enqueued task %s", held, got.res.TaskID)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= DefaultDedupWindow-time.Minute || ttl > DefaultDedupWindow {
		t.Errorf("the confirmed claim lives %s, want the dedup window", ttl)
	}

	// A claim that stays pending is waited for pendingWait, then reported.
	other := tasks.Resend{ProjectID: project, Username: "jane@example.com"}
	if err := rdb.Set(ctx, b.enq.dedupKey(other), pendingMark+"stuck", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	go func() { res, err := b.enq.Enqueue(ctx, other); done <- result{res, err} }()
	for waited := time.Duration(0); waited < pendingWait; waited += pendingPoll {
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clock.Advance(pendingPoll)
	}
	if got := <-done; got.err == nil || !strings.Contains(got.err.Error(), "has not finished") {
		t.Errorf("a claim pending for %s: %+v, %v; want an error to try again", pendingWait, got.res, got.err)
	}
}

// TestPendingClaimIsShortLived: a claim is pending only while its enqueue is
// under way; should that enqueue stop there (a crash), the claim expires
// after pendingTTL, not after the whole window.
func TestPendingClaimIsShortLived(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	rdb := b.srv.Client(t)
	if err := claimScript.Run(ctx, rdb, []string{"k"}, "t1", min(DefaultDedupWindow, pendingTTL).Milliseconds(), "").Err(); err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, "k").Val(); ttl <= 0 || ttl > pendingTTL {
		t.Errorf("a pending claim lives %s, want at most %s", ttl, pendingTTL)
	}
}

// TestAClaimThatExpiredDuringASlowEnqueue: when an enqueue outlives its
// pending claim and another enqueue of the user takes the key meanwhile,
// the user keeps one task: the slow one is deleted and reported as a
// duplicate of the other. A claim that merely expired is confirmed.
func TestAClaimThatExpiredDuringASlowEnqueue(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{})
	ctx := context.Background()
	rdb := b.srv.Client(t)
	r := tasks.Resend{ProjectID: project, Username: "john@example.com"}
	task, err := tasks.NewTask(r)
	if err != nil {
		t.Fatal(err)
	}
	key := b.enq.dedupKey(r)
	slow := Result{TaskID: "slow", Queue: tasks.QueueSignup}
	if err := b.enq.enqueueChecked(ctx, task, slow); err != nil {
		t.Fatal(err)
	}
	// Its claim expired, and another enqueue holds the key now.
	if err := rdb.Set(ctx, key, "pending:other", pendingTTL).Err(); err != nil {
		t.Fatal(err)
	}
	res := b.enq.confirmEnqueued(ctx, key, time.Hour, slow)
	if !res.Duplicate || res.TaskID != "other" || len(res.Warnings) != 0 {
		t.Errorf("result %+v, want a duplicate of the other task", res)
	}
	if _, err := b.ins.GetTaskInfo(tasks.QueueSignup, "slow"); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("the slow task: %v, want it deleted", err)
	}
	if got := rdb.Get(ctx, key).Val(); got != "pending:other" {
		t.Errorf("the claim holds %q, want the other task's", got)
	}

	// Nobody took the expired claim: the slow task holds the window.
	if err := rdb.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	slow.TaskID = "slow2"
	if err := b.enq.enqueueChecked(ctx, task, slow); err != nil {
		t.Fatal(err)
	}
	if res := b.enq.confirmEnqueued(ctx, key, time.Hour, slow); res.Duplicate || res.TaskID != "slow2" || len(res.Warnings) != 0 {
		t.Errorf("result %+v, want the slow task itself", res)
	}
	if got, ttl := rdb.Get(ctx, key).Val(), rdb.PTTL(ctx, key).Val(); got != "slow2" || ttl <= pendingTTL {
		t.Errorf("the claim holds %q for %s, want the slow task for the window", got, ttl)
	}
}
