package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/loginapi"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
)

// TestHistoryOfATaskRetriedThreeTimes: three failed calls are in the
// task's history, each with its time, status, cause and latency on the
// handler's clock; the call that sends the email is not.
func TestHistoryOfATaskRetriedThreeTimes(t *testing.T) {
	t.Parallel()
	var b *bundle
	answers := []func(loginapi.Request) (int, error){
		answer(503, "0", "Service Unavailable", 0),
		func(loginapi.Request) (int, error) { return 0, fmt.Errorf("login api: %w", context.DeadlineExceeded) },
		answer(429, "0", "Too many requests", 0),
		answer(204, "", "", 0),
	}
	call := 0
	b = setup(t, func(r loginapi.Request) (int, error) {
		b.clock.Advance(time.Duration(call+1) * 100 * time.Millisecond) // the call's latency
		call++
		return answers[call-1](r)
	})
	var starts []time.Time
	for retried := range answers {
		starts = append(starts, b.clock.Now())
		err := b.h.process(context.Background(), first(attempt{retried: retried}), payload(t, "j@example.com"))
		if (retried < 3) != (err != nil) {
			t.Fatalf("call %d: %v", retried+1, err)
		}
		b.clock.Advance(time.Minute) // the backoff, as asynq waits it out
	}
	got := b.out.attempts("task-1")
	want := []outcome.Attempt{
		{At: starts[0], HTTPStatus: 503, ErrorCode: "0", Cause: outcome.CauseServerError, Latency: 100 * time.Millisecond, Error: "login api 503 0: Service Unavailable"},
		{At: starts[1], Cause: outcome.CauseTimeout, Latency: 200 * time.Millisecond, Error: "login api: context deadline exceeded"},
		{At: starts[2], HTTPStatus: 429, ErrorCode: "0", Cause: outcome.CauseRateLimited, Latency: 300 * time.Millisecond, Error: "login api 429 0: Too many requests"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("history\n%+v\nwant\n%+v", got, want)
	}
	if len(b.out.finished) != 1 || b.out.finished[0].Status != outcome.StatusSent {
		t.Fatalf("records %+v, want one sent", b.out.finished)
	}
}

func TestNoHistoryForFinalCalls(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		answer func(loginapi.Request) (int, error)
	}{
		{"sent", answer(204, "", "", 0)},
		{"rejected", answer(404, "003-002", "User not found.", 0)},
	} {
		b := setup(t, c.answer)
		_ = b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com"))
		if len(b.out.finished) != 1 || len(b.out.history) != 0 {
			t.Errorf("%s: %d records, history %v; want a record and no history", c.name, len(b.out.finished), b.out.history)
		}
	}
	// The last failure before the attempt cap is the record's.
	b := setup(t, answer(503, "0", "Service Unavailable", 0))
	b.h.MaxAttempts = 2
	for retried := range 2 {
		_ = b.h.process(context.Background(), first(attempt{retried: retried}), payload(t, "j@example.com"))
	}
	if got := b.out.attempts("task-1"); len(got) != 1 || b.out.finished[0].Reason != outcome.ReasonExhausted {
		t.Errorf("exhausted after 2 calls: history %+v, records %+v; want 1 attempt and the dead letter", got, b.out.finished)
	}
}

func TestHistoryMasksTheUser(t *testing.T) {
	t.Parallel()
	b := setup(t, func(loginapi.Request) (int, error) {
		return 0, errors.New("login api: no route to john@example.com's mailbox")
	})
	_ = b.h.process(context.Background(), first(attempt{}), payload(t, "john@example.com"))
	got := b.out.attempts("task-1")
	if len(got) != 1 || strings.Contains(got[0].Error, "john@") || !strings.Contains(got[0].Error, "jo***@example.com") || got[0].Cause != outcome.CauseConnection {
		t.Errorf("history %+v, want one connection failure naming the user masked", got)
	}
}

// TestHistoryOfHoldBacks: a failure held as an outage is an attempt; a
// hold-back without a call is not.
func TestHistoryOfHoldBacks(t *testing.T) {
	t.Parallel()
	b := setup(t, answer(503, "0", "Service Unavailable", 0))
	lim := &fakeLimiter{verdict: ratelimit.Verdict{Outage: true, Later: 2 * time.Second}}
	b.h.Limiter = lim
	err := b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com"))
	if !errors.Is(err, errOutage) {
		t.Fatalf("err = %v, want an outage hold", err)
	}
	lim.permit = ratelimit.Permit{Later: 30 * time.Second, Hold: ratelimit.HoldPaused}
	err = b.h.process(context.Background(), first(attempt{}), payload(t, "j@example.com"))
	if !errors.Is(err, errHeldBack) || b.api.calls != 1 {
		t.Fatalf("err = %v after %d calls, want a hold-back without a call", err, b.api.calls)
	}
	got := b.out.attempts("task-1")
	if len(got) != 1 || got[0].Cause != outcome.CauseOutage || got[0].HTTPStatus != 503 {
		t.Errorf("history %+v, want the one call, held as an outage", got)
	}
}

// TestHistoryThroughRedis: a task that fails three times before its email
// goes out has those three calls in its history in Redis; a task sent on
// its first call leaves nothing but its record.
func TestHistoryThroughRedis(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			// One user's failures are not an outage of the project.
			p := newPipeline(t, be.start, func(o *Options) { o.MaxAttempts, o.OutageMinFailures = 5, 1000 })
			p.api.Script("flaky@example.com", fake.Behavior{ServerErrors: 3})
			flaky := p.enqueue(t, "flaky@example.com")
			direct := p.enqueue(t, "direct@example.com")
			p.run(t)
			ctx := context.Background()
			if rec := p.waitOutcome(t, "flaky@example.com", 30*time.Second); rec.Status != outcome.StatusSent || rec.Attempts != 4 {
				t.Fatalf("flaky: record %+v, want sent after 4 calls", rec)
			}
			got, err := p.store.History(ctx, flaky)
			if err != nil || len(got) != 3 {
				t.Fatalf("flaky: history %+v, %v; want 3 attempts", got, err)
			}
			for i, a := range got {
				if a.HTTPStatus != 503 || a.ErrorCode != "0" || a.Cause != outcome.CauseServerError || a.Latency <= 0 || a.At.IsZero() ||
					i > 0 && a.At.Before(got[i-1].At) {
					t.Errorf("flaky: attempt %d = %+v, want a 503 after the one before", i+1, a)
				}
			}
			if rec := p.waitOutcome(t, "direct@example.com", 10*time.Second); rec.Attempts != 1 {
				t.Fatalf("direct: record %+v, want sent on the first call", rec)
			}
			// Of resendq's keys, the task has its record and nothing else.
			var keys []string
			for _, k := range p.rdb.Keys(ctx, "*"+direct+"*").Val() {
				if !strings.HasPrefix(k, "asynq:") {
					keys = append(keys, k)
				}
			}
			if len(keys) != 1 || keys[0] != p.store.RecordKey(direct) {
				t.Errorf("direct: keys %v, want only its record", keys)
			}
		})
	}
}
