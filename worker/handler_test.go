package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/resendq/resendq/loginapi"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
	"github.com/resendq/resendq/tasks"
)

const testProject = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"

// fakeAPI answers with a function field.
type fakeAPI struct {
	answer func(req loginapi.Request) (int, error)
	calls  int
}

func (f *fakeAPI) ResendConfirmation(_ context.Context, req loginapi.Request) (int, error) {
	f.calls++
	return f.answer(req)
}

// memOutcomes keeps outcome records and rate state in memory.
type memOutcomes struct {
	mu          sync.Mutex
	clock       clockwork.Clock
	rate        map[string]outcome.RateState
	held        map[string]time.Duration // a task's time held for outages
	history     map[string][]outcome.Attempt
	finished    []outcome.Record
	finishErr   error
	finishCalls int
}

func newMemOutcomes(clock clockwork.Clock) *memOutcomes {
	return &memOutcomes{clock: clock, rate: map[string]outcome.RateState{}, held: map[string]time.Duration{}, history: map[string][]outcome.Attempt{}}
}

func (m *memOutcomes) AddAttempt(_ context.Context, taskID string, a outcome.Attempt) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.history[taskID] = append(m.history[taskID], a)
	return nil
}

// attempts returns the history of taskID.
func (m *memOutcomes) attempts(taskID string) []outcome.Attempt {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.history[taskID]
}

func (m *memOutcomes) Held(_ context.Context, taskID string, d time.Duration) (time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held[taskID] += d
	return m.held[taskID], nil
}

func (m *memOutcomes) RateLimited(_ context.Context, taskID string) (outcome.RateState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.rate[taskID]
	st.Calls++
	m.rate[taskID] = st
	return st, nil
}

func (m *memOutcomes) RateWait(_ context.Context, taskID string, d time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.rate[taskID]
	st.Waited += d
	m.rate[taskID] = st
	return nil
}

// calls returns how many times Finish was called.
func (m *memOutcomes) calls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.finishCalls
}

func (m *memOutcomes) Finish(_ context.Context, rec outcome.Record) (outcome.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.finishCalls++
	if m.finishErr != nil {
		return rec, m.finishErr
	}
	calls := m.rate[rec.TaskID].Calls
	delete(m.rate, rec.TaskID)
	delete(m.held, rec.TaskID)
	if old, ok := m.get(rec.TaskID); ok && old.Status == outcome.StatusSent && rec.Status != outcome.StatusSent {
		return old, nil // a sent record stays, as in outcome.Store
	}
	rec.Attempts += calls
	m.finished = append(m.finished, rec)
	return rec, nil
}

func (m *memOutcomes) Get(_ context.Context, taskID string) (outcome.Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.get(taskID)
	return rec, ok, nil
}

func (m *memOutcomes) Exist(_ context.Context, taskIDs []string) ([]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]bool, len(taskIDs))
	for i, id := range taskIDs {
		_, out[i] = m.get(id)
	}
	return out, nil
}

// get returns the newest record of taskID; m.mu is held.
func (m *memOutcomes) get(taskID string) (outcome.Record, bool) {
	for i := len(m.finished) - 1; i >= 0; i-- {
		if m.finished[i].TaskID == taskID {
			return m.finished[i], true
		}
	}
	return outcome.Record{}, false
}

type bundle struct {
	h     *Handler
	api   *fakeAPI
	out   *memOutcomes
	logs  *test.Hook
	clock *clockwork.FakeClock
}

func setup(t *testing.T, answer func(loginapi.Request) (int, error)) *bundle {
	t.Helper()
	// On a whole second, as a retry's due time is (see roundUpDue).
	b := &bundle{clock: clockwork.NewFakeClockAt(time.Now().Truncate(time.Second))}
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	b.api = &fakeAPI{answer: answer}
	b.out = newMemOutcomes(b.clock)
	b.logs = hook
	b.h = &Handler{
		API: b.api, Outcomes: b.out, Log: log, Clock: b.clock,
		Backoff:     Backoff{Initial: time.Second, Max: time.Minute, Jitter: -1},
		MaxAttempts: 8, RateLimitMaxWait: time.Hour,
	}
	return b
}

func payload(t *testing.T, username string) []byte {
	t.Helper()
	task, err := tasks.NewTask(tasks.Resend{ProjectID: testProject, Username: username, EnqueuedAt: time.Unix(1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return task.Payload()
}

func answer(status int, code, desc string, retryAfter time.Duration) func(loginapi.Request) (int, error) {
	return func(loginapi.Request) (int, error) {
		if status < 300 {
			return status, nil
		}
		return status, &loginapi.Error{StatusCode: status, Code: code, Description: desc, RetryAfter: retryAfter}
	}
}

func first(a attempt) attempt {
	a.taskID, a.queue, a.maxRetry = "task-1", tasks.QueueSignup, tasks.MaxRetry
	return a
}

func TestClassifyTable(t *testing.T) {
	t.Parallel()
	apiErr := func(s int) error { return &loginapi.Error{StatusCode: s} }
	cases := []struct {
		status int
		err    error
		want   Action
		cause  outcome.Cause
	}{
		{204, nil, Send, ""}, {200, nil, Send, ""},
		{400, apiErr(400), Reject, ""}, {404, apiErr(404), Reject, ""}, {409, apiErr(409), Reject, ""},
		{422, apiErr(422), Reject, ""}, {403, apiErr(403), Reject, ""}, {410, apiErr(410), Reject, ""},
		{429, apiErr(429), WaitRateLimit, outcome.CauseRateLimited},
		{408, apiErr(408), Retry, outcome.CauseTimeout}, {500, apiErr(500), Retry, outcome.CauseServerError},
		{502, apiErr(502), Retry, outcome.CauseServerError}, {503, apiErr(503), Retry, outcome.CauseServerError},
		{504, apiErr(504), Retry, outcome.CauseServerError},
		{0, context.DeadlineExceeded, Retry, outcome.CauseTimeout},
		{0, errors.New("dial tcp: connection refused"), Retry, outcome.CauseConnection},
		{302, apiErr(302), Retry, outcome.CauseServerError},
	}
	for _, c := range cases {
		if got, cause := Classify(c.status, c.err); got != c.want || cause != c.cause {
			t.Errorf("Classify(%d, %v) = %v, %q; want %v, %q", c.status, c.err, got, cause, c.want, c.cause)
		}
	}
}

func TestSentRecordsOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(http.StatusNoContent, "", "", 0))
	if err := b.h.process(context.Background(), first(attempt{}), payload(t, "john@example.com")); err != nil {
		t.Fatalf("process: %v", err)
	}
	if len(b.out.finished) != 1 {
		t.Fatalf("finished %d records, want 1", len(b.out.finished))
	}
	rec := b.out.finished[0]
	if rec.Status != outcome.StatusSent || rec.Reason != "" || rec.HTTPStatus != 204 || rec.Attempts != 1 ||
		rec.TaskID != "task-1" || rec.Username != "john@example.com" || !rec.FinishedAt.Equal(b.clock.Now()) || rec.Queue != "signup" {
		t.Errorf("record = %+v", rec)
	}
	entry := b.logs.LastEntry()
	if entry.Message != "confirmation email sent" || entry.Data["username"] != "jo***@example.com" {
		t.Errorf("log = %q %v", entry.Message, entry.Data)
	}
}

func TestRejectDeadLettersWithCode(t *testing.T) {
	t.Parallel()
	for _, status := range []int{400, 404, 409, 422} {
		b := setup(t, answer(status, "003-002", "User not found.", 0))
		err := b.h.process(context.Background(), first(attempt{}), payload(t, "john@example.com"))
		if !errors.Is(err, asynq.SkipRetry) {
			t.Fatalf("%d: error %v does not skip retries", status, err)
		}
		if want := fmt.Sprintf("login api %d 003-002: User not found.", status); err.Error() != want {
			t.Errorf("%d: archive text %q, want %q", status, err.Error(), want)
		}
		rec := b.out.finished[0]
		if rec.Status != outcome.StatusDeadLetter || rec.Reason != outcome.ReasonRejected || rec.ErrorCode != "003-002" ||
			rec.HTTPStatus != status || rec.ErrorDescription != "User not found." {
			t.Errorf("%d: record = %+v", status, rec)
		}
		if b.logs.LastEntry().Level != logrus.WarnLevel {
			t.Errorf("%d: dead letter logged at %v", status, b.logs.LastEntry().Level)
		}
	}
}

func TestRateLimitedWaitsRetryAfterWithoutFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(429, "0", "Too many requests", 30*time.Second))
	err := b.h.process(context.Background(), first(attempt{}), payload(t, "john@example.com"))
	var re *retryError
	if !errors.As(err, &re) || re.failure || re.delay != 30*time.Second {
		t.Fatalf("error = %#v, want a non-failure retry after 30s", err)
	}
	if IsFailure(err) {
		t.Error("IsFailure(429) = true")
	}
	if len(b.out.finished) != 0 {
		t.Errorf("a retry recorded a final outcome: %+v", b.out.finished)
	}
}

func TestRateLimitedBackoffWhenRetryAfterIsShorter(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(429, "0", "", 0))
	var delays []time.Duration
	for i := 0; i < 3; i++ {
		var re *retryError
		if err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com")); !errors.As(err, &re) {
			t.Fatalf("call %d: %v", i, err)
		}
		delays = append(delays, re.delay)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	if fmt.Sprint(delays) != fmt.Sprint(want) {
		t.Errorf("delays %v, want %v (growing although 429s leave the retry count alone)", delays, want)
	}
}

func TestRateLimitCapDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(429, "0", "Too many requests", 10*time.Minute))
	ctx := context.Background()
	for i := 0; i < 6; i++ { // 0, 10, ..., 50 minutes waited: each next wait fits the 1h cap
		if err := b.h.process(ctx, first(attempt{}), payload(t, "j@example.com")); errors.Is(err, asynq.SkipRetry) {
			t.Fatalf("dead-lettered after %d calls", i+1)
		}
		b.clock.Advance(10 * time.Minute)
	}
	err := b.h.process(ctx, first(attempt{}), payload(t, "j@example.com"))
	if !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("after an hour of 429s: %v, want a dead letter", err)
	}
	rec := b.out.finished[0]
	if rec.Reason != outcome.ReasonRateLimited || rec.HTTPStatus != 429 || rec.Attempts != 7 {
		t.Errorf("record = %+v, want rate_limited after 7 calls", rec)
	}
}

func TestTransientRetriesThenExhausts(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(503, "", "Service Unavailable", 0))
	ctx := context.Background()
	for retried := 0; retried < 7; retried++ {
		err := b.h.process(ctx, first(attempt{retried: retried}), payload(t, "j@example.com"))
		var re *retryError
		if !errors.As(err, &re) || !re.failure {
			t.Fatalf("retry %d: %v, want a failure retry", retried, err)
		}
		if want := min(time.Second<<retried, time.Minute); re.delay != want {
			t.Errorf("retry %d: delay %v, want %v", retried, re.delay, want)
		}
	}
	err := b.h.process(ctx, first(attempt{retried: 7}), payload(t, "j@example.com"))
	if !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("8th failure: %v, want dead letter", err)
	}
	rec := b.out.finished[0]
	if rec.Reason != outcome.ReasonExhausted || rec.Attempts != 8 || rec.HTTPStatus != 503 {
		t.Errorf("record = %+v", rec)
	}
	if want := "gave up after 8 failed attempts: login api 503: Service Unavailable"; err.Error() != want {
		t.Errorf("archive text %q, want %q", err.Error(), want)
	}
}

func TestAttemptLimitLeavesRoomForRateLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(503, "", "", 0))
	// A task enqueued with MaxRetry 3 by another producer: exhausted after 3
	// failures, so asynq never archives it on its own at a 429.
	err := b.h.process(context.Background(), attempt{taskID: "t", maxRetry: 3, retried: 2}, payload(t, "j@example.com"))
	if !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("err = %v, want exhausted at MaxRetry", err)
	}
}

func TestA429WithNoRetryLeftIsADeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(429, "", "", 0))
	// A task at its MaxRetry: asynq would archive it whatever the error,
	// so the 429 ends it here, recorded.
	err := b.h.process(context.Background(), attempt{taskID: "t", maxRetry: 3, retried: 3}, payload(t, "j@example.com"))
	if !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "no retry left (MaxRetry 3)") {
		t.Fatalf("err = %v, want a dead letter", err)
	}
	if len(b.out.finished) != 1 || b.out.finished[0].Reason != outcome.ReasonRateLimited {
		t.Errorf("records %+v, want one, rate_limited", b.out.finished)
	}
}

func TestConnectionErrorsAndTimeoutsRetry(t *testing.T) {
	t.Parallel()
	for _, callErr := range []error{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), context.DeadlineExceeded} {
		b := setup(t, func(loginapi.Request) (int, error) { return 0, callErr })
		err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com"))
		var re *retryError
		if !errors.As(err, &re) || !re.failure {
			t.Errorf("%v: got %v, want a failure retry", callErr, err)
		}
	}
}

func TestInvalidPayloadDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(204, "", "", 0))
	for _, p := range []string{`{`, `{"project_id":"nope","username":"j@example.com"}`, `{"project_id":"` + testProject + `"}`} {
		err := b.h.process(context.Background(), first(attempt{}), []byte(p))
		if !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("%s: %v, want dead letter", p, err)
		}
	}
	if b.api.calls != 0 {
		t.Errorf("the API was called %d times for invalid tasks", b.api.calls)
	}
	for _, rec := range b.out.finished {
		if rec.Reason != outcome.ReasonInvalid || rec.Attempts != 0 || rec.ErrorDescription == "" {
			t.Errorf("record = %+v", rec)
		}
	}
}

func TestCancelledContextLeavesTaskToAsynq(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	b := setup(t, func(loginapi.Request) (int, error) { cancel(); return 0, context.Canceled })
	err := b.h.process(ctx, first(attempt{}), payload(t, "j@example.com"))
	if !errors.Is(err, context.Canceled) || len(b.out.finished) != 0 {
		t.Errorf("err = %v, finished = %v; want the context error and no outcome", err, b.out.finished)
	}
}

func TestOutcomeWriteFailureStillEndsTask(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(204, "", "", 0))
	b.out.finishErr = errors.New("redis: connection refused")
	done := make(chan error, 1)
	go func() { done <- b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com")) }()
	// The write is tried again 100ms, 200ms, 400ms, 800ms, then every second
	// apart on the clock, for a minute (a Redis restart or a failover).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waited time.Duration
	var err error
	for finished := false; !finished; {
		blocked := make(chan struct{})
		go func() {
			if b.clock.BlockUntilContext(ctx, 1) == nil {
				close(blocked)
			}
		}()
		select {
		case err = <-done:
			finished = true
		case <-blocked:
			d := 100 * time.Millisecond
			for i := 1; i < b.out.calls() && d < time.Second; i++ {
				d *= 2
			}
			d = min(d, time.Second)
			b.clock.Advance(d)
			waited += d
		}
	}
	if err != nil {
		t.Fatalf("err = %v: a sent email must not be retried", err)
	}
	if waited < 59*time.Second || waited > outcomeWriteWindow {
		t.Errorf("the write was tried for %s on the clock, want about %s", waited, outcomeWriteWindow)
	}
	if n := b.out.calls(); n < 50 {
		t.Errorf("the write was tried %d times in a minute, want a try a second", n)
	}
	if e := b.logs.LastEntry(); e.Level != logrus.ErrorLevel {
		t.Errorf("lost outcome logged at %v, want error", e.Level)
	}
}

func TestHandleErrorRecordsForeignFinalFailures(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(204, "", "", 0))
	held := &retryError{err: errOutage, reason: outcome.ReasonOutage}
	b.h.recordArchived(context.Background(), attempt{taskID: "t", maxRetry: 5, retried: 2}, payload(t, "j@example.com"), held)
	if len(b.out.finished) != 0 {
		t.Fatal("recorded an outcome for the handler's own retry")
	}
	panicErr := errors.New("panic [handler.go:42]: boom")
	b.h.recordArchived(context.Background(), attempt{taskID: "t", maxRetry: 5, retried: 4}, payload(t, "j@example.com"), panicErr)
	if len(b.out.finished) != 0 {
		t.Fatal("recorded an outcome for a failure asynq still retries")
	}
	b.h.recordArchived(context.Background(), attempt{taskID: "t", maxRetry: 5, retried: 5}, payload(t, "j@example.com"), &deadLetterError{msg: "x"})
	if len(b.out.finished) != 0 {
		t.Fatal("recorded a dead letter the handler recorded")
	}
	b.h.recordArchived(context.Background(), attempt{taskID: "t", maxRetry: 5, retried: 5}, payload(t, "j@example.com"), panicErr)
	if len(b.out.finished) != 1 {
		t.Fatal("no outcome for a task asynq archives on its own")
	}
	if rec := b.out.finished[0]; rec.Reason != outcome.ReasonExhausted || rec.Username != "j@example.com" || rec.ErrorDescription != panicErr.Error() {
		t.Errorf("record = %+v", rec)
	}
	// A task enqueued elsewhere with MaxRetry 0, held back by an outage:
	// asynq archives it at once, and its record says why.
	b.h.recordArchived(context.Background(), attempt{taskID: "t0", maxRetry: 0, retried: 0}, payload(t, "j@example.com"), held)
	if len(b.out.finished) != 2 {
		t.Fatal("no outcome for a held-back task with no retry left")
	}
	if rec := b.out.finished[1]; rec.Reason != outcome.ReasonOutage || !strings.Contains(rec.ErrorDescription, "no retry left (MaxRetry 0)") {
		t.Errorf("record = %+v", rec)
	}
}

func TestRetryDelayRoundsDueTimeUp(t *testing.T) {
	t.Parallel()
	// 300ms past a whole second, as asynq's clock may be when it asks.
	clock := clockwork.NewFakeClockAt(time.Now().Truncate(time.Second).Add(300 * time.Millisecond))
	f := RetryDelayFunc(clock, Backoff{Initial: time.Second, Jitter: -1})
	if d := f(0, &retryError{err: errors.New("x"), delay: time.Second}, nil); d != 1700*time.Millisecond {
		t.Errorf("delay %v, want 1.7s so that the due second is not early", d)
	}
	if d := f(2, errors.New("panic"), nil); d != 4700*time.Millisecond {
		t.Errorf("fallback delay %v, want the 4s backoff rounded up to 4.7s", d)
	}
	if d := roundUpDue(time.Unix(10, 0), 2*time.Second); d != 2*time.Second {
		t.Errorf("whole-second due moved: %v", d)
	}
}

// TestARetryDueInOneSecondRunsWithinTwoAndAHalf: a retry's due time is
// rounded up to the next whole second (at most 1s more, see
// TestRetryDelayRoundsDueTimeUp), and one asynq server of the worker moves
// due retries to their queue every 500ms: 1s + 1s + 0.5s at most. The
// others do it every minute, so an idle worker costs Redis no more.
func TestARetryDueInOneSecondRunsWithinTwoAndAHalf(t *testing.T) {
	t.Parallel()
	for _, concurrency := range []int{1, 20, 50, 400} {
		configs := asynqConfigs(&Handler{}, Config{}, concurrency, asynq.WarnLevel)
		if len(configs) != ProcessorsFor(concurrency) {
			t.Fatalf("concurrency %d: %d asynq servers, want %d", concurrency, len(configs), ProcessorsFor(concurrency))
		}
		fast := 0
		for _, c := range configs {
			switch c.DelayedTaskCheckInterval {
			case DefaultForwardInterval:
				fast++
			case idleForwardInterval:
			default:
				t.Errorf("concurrency %d: a server forwards every %s", concurrency, c.DelayedTaskCheckInterval)
			}
		}
		if fast != 1 || DefaultForwardInterval > 500*time.Millisecond {
			t.Errorf("concurrency %d: %d servers forward every %s, want one, every 500ms at most", concurrency, fast, DefaultForwardInterval)
		}
	}
}

func TestBackoffJitterStaysInBounds(t *testing.T) {
	t.Parallel()
	b := Backoff{Initial: time.Second, Max: 10 * time.Second}
	for i := 0; i < 200; i++ {
		if d := b.Delay(0); d < 500*time.Millisecond || d > 1500*time.Millisecond {
			t.Fatalf("Delay(0) = %v outside 1s±50%%", d)
		}
		if d := b.Delay(30); d > 10*time.Second || d < 5*time.Second {
			t.Fatalf("Delay(30) = %v, want within [max/2, max]", d)
		}
	}
}

func TestParseQueues(t *testing.T) {
	t.Parallel()
	q, err := ParseQueues("signup=8, bulk=1")
	if err != nil || q["signup"] != 8 || q["bulk"] != 1 || len(q) != 2 {
		t.Errorf("ParseQueues = %v, %v", q, err)
	}
	if FormatQueues(q) != "signup=8,bulk=1" {
		t.Errorf("FormatQueues = %q", FormatQueues(q))
	}
	for _, bad := range []string{"", "signup", "signup=0", "=3", "signup=x"} {
		if _, err := ParseQueues(bad); err == nil {
			t.Errorf("ParseQueues(%q) accepted", bad)
		}
	}
}

func TestPanicIsATransientFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, func(loginapi.Request) (int, error) { panic("boom") })
	task := asynq.NewTask(tasks.TypeResend, payload(t, "j@example.com"))
	err := b.h.ProcessTask(context.Background(), task)
	var re *retryError
	if !errors.As(err, &re) || !re.failure || !strings.Contains(err.Error(), "panic: boom") {
		t.Fatalf("err = %v, want a failure retry naming the panic", err)
	}
	b.h.MaxAttempts = 1
	if err := b.h.ProcessTask(context.Background(), task); !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("at the attempt cap: %v, want a dead letter", err)
	}
	if rec := b.out.finished[0]; rec.Reason != outcome.ReasonExhausted || rec.Username != "j@example.com" {
		t.Errorf("record = %+v", rec)
	}
}

// TestRerunAfterSentSendsNoSecondEmail: asynq runs a task again when its
// worker died between the outcome record and asynq's done; that run is a
// retry, finds the sent record and ends without a call.
func TestRerunAfterSentSendsNoSecondEmail(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(204, "", "", 0))
	if err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com")); err != nil {
		t.Fatal(err)
	}
	rerun := first(attempt{retried: 1})
	if err := b.h.process(context.Background(), rerun, payload(t, "j@example.com")); err != nil {
		t.Fatalf("re-run: %v, want the task done", err)
	}
	if b.api.calls != 1 || len(b.out.finished) != 1 {
		t.Errorf("%d calls, %d records; want the first run's only", b.api.calls, len(b.out.finished))
	}
	if e := b.logs.LastEntry(); !strings.Contains(e.Message, "earlier run") || strings.Contains(e.Message, "j@example.com") || e.Data["status"] != outcome.StatusSent {
		t.Errorf("log %q %v", e.Message, e.Data)
	}
	// A first run, or a retry of a task with no sent record, calls.
	other := first(attempt{retried: 3})
	other.taskID = "task-2"
	if err := b.h.process(context.Background(), other, payload(t, "k@example.com")); err != nil || b.api.calls != 2 {
		t.Errorf("retry without a record: %v, %d calls", err, b.api.calls)
	}
}

// TestSentRecordOutlivesAnotherRunsAnswer: when two runs of a task overlap
// (a lease lost while the first still ran), a later 422 does not turn the
// sent record into a dead letter, and the task ends rather than being
// archived.
func TestSentRecordOutlivesAnotherRunsAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(204, "", "", 0))
	if err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com")); err != nil {
		t.Fatal(err)
	}
	b.api.answer = answer(422, "003-061", "Object not found.", 0)
	if err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com")); err != nil {
		t.Fatalf("err = %v, want the task done: its email went out", err)
	}
	if rec, _, _ := b.out.Get(context.Background(), "task-1"); rec.Status != outcome.StatusSent || len(b.out.finished) != 1 {
		t.Errorf("record %+v (%d written), want the sent one", rec, len(b.out.finished))
	}
	e := b.logs.LastEntry()
	if !strings.Contains(e.Message, "not recorded") || e.Data["code"] != "003-061" || e.Data["recorded"] != "sent" {
		t.Errorf("log %q %v", e.Message, e.Data)
	}
}

// fakeLimiter records what the handler asks of a RateLimiter.
type fakeLimiter struct {
	mu        sync.Mutex
	waits     []string
	coolDowns []time.Duration
	results   []ratelimit.Result
	waitErr   error
	permit    ratelimit.Permit     // what Wait answers
	checked   ratelimit.Permit     // what Check answers
	verdict   ratelimit.Verdict    // what Done answers for a failure
	hold      time.Duration        // how long Wait takes, on clock
	clock     *clockwork.FakeClock // the handler's
}

func (f *fakeLimiter) Wait(_ context.Context, project string) (ratelimit.Permit, error) {
	if f.hold > 0 {
		f.clock.Advance(f.hold)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits = append(f.waits, project)
	return f.permit, f.waitErr
}

func (f *fakeLimiter) Check(string, bool) ratelimit.Permit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checked
}

func (f *fakeLimiter) Done(_ context.Context, _ string, r ratelimit.Result, _ bool) (ratelimit.Verdict, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results = append(f.results, r)
	if r == ratelimit.Failed {
		return f.verdict, nil
	}
	return ratelimit.Verdict{}, nil
}

// pauseObserver records what the handler tells an Observer of rate limits.
type pauseObserver struct {
	nopObserver
	mu      sync.Mutex
	pauses  int
	waited  []time.Duration
	retries []string
}

func (o *pauseObserver) RateLimitPause() { o.mu.Lock(); o.pauses++; o.mu.Unlock() }
func (o *pauseObserver) Retry(cause outcome.Cause) {
	o.mu.Lock()
	o.retries = append(o.retries, string(cause))
	o.mu.Unlock()
}
func (o *pauseObserver) RateLimitWait(d time.Duration) {
	o.mu.Lock()
	o.waited = append(o.waited, d)
	o.mu.Unlock()
}

func (f *fakeLimiter) CoolDown(_ context.Context, project string, d time.Duration) (bool, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.coolDowns = append(f.coolDowns, d)
	return true, time.Now().Add(d), nil
}

func TestEveryCallWaitsForTheLimiterAnd429sCoolDown(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(429, "", "", 7*time.Second))
	lim := &fakeLimiter{hold: 5 * time.Millisecond, clock: b.clock}
	b.h.Limiter = lim
	obs := &pauseObserver{}
	b.h.Observer = obs
	err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com"))
	var re *retryError
	if !errors.As(err, &re) || re.delay != 7*time.Second {
		t.Fatalf("err = %v, want a retry in 7s", err)
	}
	if len(lim.waits) != 1 || lim.waits[0] != testProject || len(lim.coolDowns) != 1 || lim.coolDowns[0] != 7*time.Second {
		t.Errorf("waits %v, cool-downs %v", lim.waits, lim.coolDowns)
	}
	if e := b.logs.LastEntry(); e == nil || e.Level != logrus.DebugLevel {
		t.Errorf("last log %v", e)
	}
	var paused bool
	for _, e := range b.logs.AllEntries() {
		paused = paused || e.Level == logrus.WarnLevel && strings.Contains(e.Message, "paused on every worker") && e.Data["project_id"] == testProject
	}
	if !paused || obs.pauses != 1 || len(obs.waited) != 1 || obs.waited[0] != 5*time.Millisecond {
		t.Errorf("the cool-down was not logged (%v) or observed: %d pauses, waits %v", paused, obs.pauses, obs.waited)
	}
	// Without Retry-After, the pause is the task's backoff: 2s at its second 429.
	b.api.answer = answer(429, "", "", 0)
	_ = b.h.process(context.Background(), first(attempt{retried: 1}), payload(t, "j@example.com"))
	if len(lim.coolDowns) != 2 || lim.coolDowns[1] != 2*time.Second {
		t.Errorf("cool-downs %v, want the 2s backoff", lim.coolDowns)
	}
}

func TestCallWaitingOnTheLimiterEndsWithTheTask(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(204, "", "", 0))
	b.h.Limiter = &fakeLimiter{waitErr: context.Canceled}
	b.h.calls = make(chan struct{}, 1)
	if err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com")); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want the context's", err)
	}
	if b.api.calls != 0 || len(b.out.finished) != 0 || len(b.h.calls) != 0 {
		t.Errorf("%d calls, %d records, %d call slots held", b.api.calls, len(b.out.finished), len(b.h.calls))
	}
}

func TestLongPauseHandsTheTaskBackWithoutACall(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(204, "", "", 0))
	b.h.Limiter = &fakeLimiter{permit: ratelimit.Permit{Later: 30 * time.Second, Hold: ratelimit.HoldPaused}}
	obs := &pauseObserver{}
	b.h.Observer = obs
	b.h.calls = make(chan struct{}, 1)
	err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com"))
	var re *retryError
	if !errors.As(err, &re) || re.delay != 30*time.Second || IsFailure(err) {
		t.Fatalf("err = %v, want a retry in 30s that is not a failure", err)
	}
	if b.api.calls != 0 || len(b.out.finished) != 0 || len(b.h.calls) != 0 || fmt.Sprint(obs.retries) != "[paused]" {
		t.Errorf("%d calls, %d records, %d slots held, retries %v", b.api.calls, len(b.out.finished), len(b.h.calls), obs.retries)
	}
}

func TestStoppingWorkerMakesNoNewCalls(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(204, "", "", 0))
	b.h.calls = make(chan struct{}, 1)
	b.h.stop = make(chan struct{})
	close(b.h.stop)
	err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com"))
	var re *retryError
	if !errors.As(err, &re) || re.delay != time.Second || IsFailure(err) || b.api.calls != 0 || len(b.h.calls) != 0 {
		t.Errorf("err = %v, %d calls, %d slots held; want the task handed back for 1s, no call", err, b.api.calls, len(b.h.calls))
	}
}

func TestPanickingCallGivesItsSlotBack(t *testing.T) {
	t.Parallel()
	b := setup(t, func(loginapi.Request) (int, error) { panic("boom") })
	b.h.calls = make(chan struct{}, 1)
	task := asynq.NewTask(tasks.TypeResend, payload(t, "j@example.com"))
	for range 3 { // with one slot, a leaked one would block the second
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := b.h.ProcessTask(ctx, task)
		cancel()
		if !IsFailure(err) || strings.Contains(err.Error(), "deadline") {
			t.Fatalf("err = %v, want a transient failure from the panic", err)
		}
	}
	if len(b.h.calls) != 0 {
		t.Errorf("%d call slots held after the panics", len(b.h.calls))
	}
}

func TestPauseThatStartedDuringTheSlotWaitHandsTheTaskBack(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(204, "", "", 0))
	b.h.Limiter = &fakeLimiter{checked: ratelimit.Permit{Later: 3 * time.Second, Hold: ratelimit.HoldPaused}} // Wait let it through; then a 429 elsewhere
	b.h.calls = make(chan struct{}, 1)
	err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com"))
	var re *retryError
	if !errors.As(err, &re) || re.delay != 3*time.Second || IsFailure(err) || b.api.calls != 0 || len(b.h.calls) != 0 {
		t.Errorf("err = %v, %d calls, %d slots held; want the task handed back for 3s", err, b.api.calls, len(b.h.calls))
	}
}

func TestStoppingFreesTasksWaitingForASlot(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(204, "", "", 0))
	b.h.calls = make(chan struct{}, 1)
	b.h.calls <- struct{}{} // a call in flight holds the only slot
	b.h.stop = make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com")) }()
	close(b.h.stop)
	err := <-done
	var re *retryError
	if !errors.As(err, &re) || re.delay != time.Second || b.api.calls != 0 {
		t.Errorf("err = %v, %d calls; want the waiting task handed back at once", err, b.api.calls)
	}
}
