package ratelimit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
)

// local returns what l knows of project, under its lock.
func local(l *Limiter, project string) (watched, learning bool, rate float64) {
	p := l.project(project)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.watchUntil.After(l.opts.Clock.Now()), p.learning, p.rate
}

// TestTheWatchEndsWhileCallsSucceed: after one failure, a project with
// steady successes is watched for the window and no longer: its workers
// stop reporting every call.
func TestTheWatchEndsWhileCallsSucceed(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var ev events
	opts := quick(&ev)
	opts.OutageWindow = time.Second
	a := New(srv.Client(t), opts)
	run(t, a)
	ctx := context.Background()
	if _, err := a.Done(ctx, p1, Failed, false); err != nil {
		t.Fatal(err)
	}
	if w, _, _ := local(a, p1); !w {
		t.Fatal("a failure does not put the project under watch")
	}
	waitUntil(t, "the watch to end", func() bool {
		if _, err := a.Done(ctx, p1, Answered, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // calls keep coming, reported while watched
		w, _, _ := local(a, p1)
		return !w
	})
	if st, err := Status(ctx, srv.Client(t), ""); err != nil || len(st) != 0 {
		t.Errorf("Status = %+v, %v; want nothing left", st, err)
	}
}

// TestAQuietProjectLearnsOnALater429: a 429 when nothing got through
// teaches no rate, and does not keep the workers from learning at the next
// one.
func TestAQuietProjectLearnsOnALater429(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var ev events
	a := New(srv.Client(t), quick(&ev))
	run(t, a)
	ctx := context.Background()
	if _, _, err := a.CoolDown(ctx, p1, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the learning to end", func() bool { _, l, _ := local(a, p1); return !l })
	if _, _, r := local(a, p1); r != 0 {
		t.Fatalf("rate %.1f learned from no calls", r)
	}
	// One call a second got through: a second 429 learns from it.
	if _, err := a.Done(ctx, p1, Answered, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.CoolDown(ctx, p1, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a rate", func() bool { _, _, r := local(a, p1); return r > 0 })
	if _, l, r := local(a, p1); l || r != 0.9 {
		t.Errorf("learning %v, rate %.2f; want 0.9 × the one call", l, r)
	}
}

// Test429sAreNotThroughput: what the fleet got through, which a rate is
// learned from, leaves out the 429s; a 429 still closes an open circuit.
func Test429sAreNotThroughput(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var ev events
	a := New(srv.Client(t), quick(&ev))
	run(t, a)
	ctx := context.Background()
	for range 20 {
		for _, r := range []Result{Answered, RateLimited, RateLimited, RateLimited, RateLimited} {
			if _, err := a.Done(ctx, p2, r, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, _, err := a.CoolDown(ctx, p2, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a rate", func() bool { _, _, r := local(a, p2); return r > 0 })
	// Each worker counts the successes of its last second and the slot of
	// 100ms under way, per second of that: 20 calls over 1 to 1.1s.
	if _, _, r := local(a, p2); r < 16 || r > 18 {
		t.Errorf("learned rate %.1f, want 0.9 × the 20 calls that got through (not the 100 calls)", r)
	}

	failUntilOpen(t, a)
	if _, err := a.Done(ctx, p1, RateLimited, true); err != nil {
		t.Fatal(err)
	}
	if isOpen(a, p1) || len(ev.of(CircuitClosed)) != 1 {
		t.Errorf("a 429 of the probe: open %v, closed events %+v; want closed", isOpen(a, p1), ev.of(CircuitClosed))
	}
}

// TestAReportFromBeforeACloseDoesNotReopen: a worker that counted failures
// before the circuit closed and did not hear of the close (or reports
// just as it closes) does not open it again with them, and starts its
// count over.
func TestAReportFromBeforeACloseDoesNotReopen(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var ea, eb events
	deaf := New(srv.Client(t), quick(&ea)) // not started: hears nothing
	b := New(srv.Client(t), quick(&eb))
	run(t, b)
	ctx := context.Background()
	failUntilOpen(t, deaf)
	waitUntil(t, "b to hear of the outage", func() bool { return isOpen(b, p1) })
	if _, err := b.Done(ctx, p1, Answered, true); err != nil { // the probe succeeds
		t.Fatal(err)
	}
	if len(eb.of(CircuitClosed)) != 1 {
		t.Fatal("the probe's success did not close the circuit")
	}
	// The deaf worker's next report carries its old failures, for longer
	// than the settle time.
	for i := range 5 {
		v, err := deaf.report(ctx, deaf.project(p1))
		if err != nil || v.Outage {
			t.Fatalf("report %d after the close: %+v, %v; want no outage", i, v, err)
		}
		time.Sleep(2 * quick(&ea).ReportInterval)
	}
	if len(ea.of(CircuitOpened)) != 1 || isOpen(deaf, p1) {
		t.Errorf("opened events %d, open %v: want the one before the close", len(ea.of(CircuitOpened)), isOpen(deaf, p1))
	}
	if st, err := Status(ctx, srv.Client(t), ""); err != nil || len(st) != 0 {
		t.Errorf("Status = %+v, %v; want closed and unwatched", st, err)
	}
	p := deaf.project(p1)
	p.mu.Lock()
	tl := p.window.counts(time.Now())
	p.mu.Unlock()
	if tl.fw != 0 {
		t.Errorf("the deaf worker still counts %d failures", tl.fw)
	}
	// Its new failures count again.
	if v := failUntilOpen(t, deaf); !v.Outage {
		t.Errorf("a new outage after the close: %+v", v)
	}
}

// TestARateRedisForgotIsForgotten: a rate Redis no longer has (its memory
// period passed) is dropped by the running workers at their next read, and
// an operator's Status reads without forgetting anything.
func TestARateRedisForgotIsForgotten(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var ev events
	opts := quick(&ev)
	opts.RateMemory = time.Hour
	a := New(rdb, opts)
	run(t, a)
	ctx := context.Background()
	tm, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	// A rate that last changed 30 minutes ago, on Redis's clock, and one
	// two hours ago.
	old := func(age time.Duration) string {
		return fmt.Sprintf("12.000 %d 0 0 12.000 0", tm.Add(-age).UnixMilli())
	}
	if err := rdb.HSet(ctx, a.keys.rates, p1, old(30*time.Minute), p2, old(2*time.Hour)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, r := local(a, p1); r != 12 {
		t.Fatalf("rate of p1 %.1f, want 12", r)
	}
	if _, _, r := local(a, p2); r != 0 {
		t.Errorf("rate of p2 %.1f: older than the memory, want none", r)
	}
	// An operator's read, with the default memory of a day, leaves the
	// fleet's own memory alone; a worker's read with a shorter one does
	// not.
	if err := rdb.HSet(ctx, a.keys.rates, p2, old(2*time.Hour)).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := Status(ctx, rdb, ""); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.HLen(ctx, a.keys.rates).Result(); n != 2 {
		t.Errorf("after Status the rates hash has %d entries, want 2", n)
	}
	if err := rdb.HDel(ctx, a.keys.rates, p1).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, r := local(a, p1); r != 0 {
		t.Errorf("rate of p1 %.1f after Redis forgot it, want none", r)
	}
}
