package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
)

// events collects what a Limiter tells OnEvent.
type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) { e.mu.Lock(); e.all = append(e.all, ev); e.mu.Unlock() }

func (e *events) of(kind EventKind) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.all {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// quick are flow options for tests: the real clock, reports every 20ms, a
// probe every 300ms, and an outage after 3 failures.
func quick(ev *events) Options {
	return Options{ReportInterval: 20 * time.Millisecond, ProbeInterval: 300 * time.Millisecond, OutageMinFailures: 3, OnEvent: ev.add}
}

// failUntilOpen reports failures of p1 on l until the circuit opens. Each
// failure's verdict says outage from the third on: the failures dominate,
// and the circuit opens once the watch has settled.
func failUntilOpen(t *testing.T, l *Limiter) Verdict {
	t.Helper()
	var v Verdict
	n := 0
	waitUntil(t, "the circuit to open", func() bool {
		var err error
		v, err = l.Done(context.Background(), p1, Failed, false)
		if n++; err != nil || v.Outage != (n >= 3) {
			t.Fatalf("failure %d: %+v, %v", n, v, err)
		}
		// Once the failures dominate, the failing worker holds its calls
		// back, before the circuit settles open.
		if held := l.Check(p1, false); v.Outage && held.Hold != HoldOutage {
			t.Fatalf("failure %d dominates, yet the worker's calls go ahead: %+v", n, held)
		}
		time.Sleep(10 * time.Millisecond) // failures come one after the other
		return isOpen(l, p1)
	})
	return v
}

// isOpen reports whether l knows the circuit of project is open.
func isOpen(l *Limiter, project string) bool {
	for _, st := range l.Local() {
		if st.Project == project {
			return st.Open
		}
	}
	return false
}

// TestTwoWorkersShareACircuit: the failures of one worker open the
// circuit of the project for both; the other stops calling, but for the
// one probe of an interval; the probe's success closes it for both.
func TestTwoWorkersShareACircuit(t *testing.T) {
	t.Parallel()
	for _, be := range redistest.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			t.Parallel()
			client := be.Start(t)
			var ea, eb events
			a, b := New(client(t), quick(&ea)), New(client(t), quick(&eb))
			run(t, a)
			run(t, b)

			v := failUntilOpen(t, a)
			if v.Later <= 0 || v.Later > 300*time.Millisecond {
				t.Errorf("verdict %+v: want the task back within the probe interval", v)
			}
			if opened := ea.of(CircuitOpened); len(opened) != 1 || opened[0].Failures < 3 || opened[0].Project != p1 {
				t.Errorf("opened events %+v", opened)
			}
			waitUntil(t, "b to hear of it", func() bool { return isOpen(b, p1) })
			permit, err := b.Wait(context.Background(), p1)
			if err != nil || permit.Hold != HoldOutage || permit.Later <= 0 || permit.Probe {
				t.Fatalf("b.Wait during the outage = %+v, %v; want held back", permit, err)
			}
			wait(t, b, p2) // another project goes on

			// Once the interval is over, exactly one of the two probes.
			var probes []*Limiter
			waitUntil(t, "a probe", func() bool {
				for _, l := range []*Limiter{a, b} {
					p, err := l.Wait(context.Background(), p1)
					if err != nil {
						t.Fatal(err)
					}
					if p.Probe {
						probes = append(probes, l)
					}
				}
				time.Sleep(20 * time.Millisecond)
				return len(probes) > 0
			})
			if len(probes) != 1 {
				t.Fatalf("%d probes in one interval, want 1", len(probes))
			}
			// A failed probe keeps it open.
			if v, err := probes[0].Done(context.Background(), p1, Failed, true); err != nil || !v.Outage {
				t.Fatalf("a failed probe: %+v, %v; want still open", v, err)
			}
			waitUntil(t, "the next probe", func() bool {
				p, err := probes[0].Wait(context.Background(), p1)
				if err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
				return p.Probe
			})
			if _, err := probes[0].Done(context.Background(), p1, Answered, true); err != nil {
				t.Fatal(err)
			}
			for _, l := range []*Limiter{a, b} {
				waitUntil(t, "the close to reach both", func() bool { return l.Check(p1, false) == (Permit{}) })
				wait(t, l, p1)
			}
			if closed := append(ea.of(CircuitClosed), eb.of(CircuitClosed)...); len(closed) != 1 || closed[0].Open <= 0 {
				t.Errorf("closed events %+v, want one", closed)
			}
		})
	}
}

// TestOneFailingUserDoesNotOpenTheCircuit: failures among the successes of
// the fleet, even all on one worker, do not open it while they are the
// smaller part of the calls.
func TestOneFailingUserDoesNotOpenTheCircuit(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var ev events
	a, b := New(srv.Client(t), quick(&ev)), New(srv.Client(t), quick(&ev))
	run(t, a)
	run(t, b)
	ctx := context.Background()
	for range 40 { // a's calls succeed
		if _, err := a.Done(ctx, p1, Answered, false); err != nil {
			t.Fatal(err)
		}
	}
	// b's calls for one user fail, again and again, while the fleet
	// watches the project and a reports its successes.
	for i := range 15 {
		v, err := b.Done(ctx, p1, Failed, false)
		if err != nil || v.Outage {
			t.Fatalf("failure %d: %+v, %v; want no outage", i+1, v, err)
		}
		if _, err := a.Done(ctx, p1, Answered, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(ev.of(CircuitOpened)) != 0 {
		t.Error("the circuit opened")
	}
	if st, err := Status(ctx, srv.Client(t), ""); err != nil || len(st) != 1 || !st[0].Watched || st[0].Open {
		t.Errorf("Status = %+v, %v; want p1 watched, not open", st, err)
	}
}

// TestAdaptiveRateIsLearnedLoweredAndRemembered: the first 429 makes the
// fleet learn a rate from what it got through; a later 429 lowers it; a
// worker started later reads it.
func TestAdaptiveRateIsLearnedLoweredAndRemembered(t *testing.T) {
	t.Parallel()
	for _, be := range redistest.Backends() {
		if be.Name == "embedded" {
			continue
		}
		t.Run(be.Name, func(t *testing.T) {
			t.Parallel()
			client := be.Start(t)
			var ev events
			a, b := New(client(t), quick(&ev)), New(client(t), quick(&ev))
			run(t, a)
			run(t, b)
			ctx := context.Background()
			for range 30 { // 90 calls got through in the last second, 60 of them b's
				for _, l := range []*Limiter{a, b, b} {
					if _, err := l.Done(ctx, p1, Answered, false); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, _, err := a.CoolDown(ctx, p1, 50*time.Millisecond); err != nil { // a's 429
				t.Fatal(err)
			}
			rateOf := func(l *Limiter) float64 {
				for _, st := range l.Local() {
					if st.Project == p1 {
						return st.Rate
					}
				}
				return 0
			}
			// The worker that set it tells of it after it took the rate in.
			waitUntil(t, "the rate to be learned", func() bool {
				return rateOf(a) > 0 && rateOf(b) > 0 && len(ev.of(RateChanged)) > 0
			})
			// Each worker counts the successes of its last second and the slot of
			// 100ms under way, per second of that: 90 calls over 1 to 1.1s.
			if r := rateOf(b); r < 72 || r > 82 {
				t.Errorf("learned rate %.1f, want 0.9 × the fleet's 90 calls in the last second", r)
			}
			learned := ev.of(RateChanged)
			if len(learned) != 1 || learned[0].Was != 0 {
				t.Errorf("events %+v, want the one that learned it", learned)
			}
			// A 429 a second later: the lower of the rate and what got through in
			// the last second (a's 50; b's older), times 0.9.
			time.Sleep(rateGap)
			for range 50 {
				if _, err := a.Done(ctx, p1, Answered, false); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := a.report(ctx, a.project(p1)); err != nil {
				t.Fatal(err)
			}
			if _, _, err := b.CoolDown(ctx, p1, 50*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the rate to be lowered", func() bool { return rateOf(a) < 60 })
			if r := rateOf(a); r < 40 || r > 48 { // b's report, up to 1.5s old, may still count a few
				t.Errorf("lowered rate %.1f, want 0.9 × the 50 calls that got through", r)
			}
			// A 429 when far fewer calls got through than the rate allows (a burst
			// after a pause) lowers the rate itself, not to what got through.
			time.Sleep(2 * rateGap) // a's calls are more than a second old
			was := rateOf(a)
			if _, _, err := b.CoolDown(ctx, p1, 50*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the rate to be lowered again", func() bool { return rateOf(a) < was })
			if r := rateOf(a); r < 0.89*was || r > 0.91*was {
				t.Errorf("lowered again to %.1f from %.1f, want 0.9 × the rate", r, was)
			}
			late := New(client(t), quick(&ev))
			run(t, late)
			if r := rateOf(late); r != rateOf(a) {
				t.Errorf("a worker started later has rate %.1f, want %.1f", r, rateOf(a))
			}
			// A fixed rate wins over the adaptive one, and a cap bounds it.
			fixed := New(client(t), Options{ProjectRates: map[string]int{p1: 3}})
			fixed.project(p1) // known to it, as by a call: b's 50ms pause may be over by now
			run(t, fixed)
			if r := rateOf(fixed); r != 3 {
				t.Errorf("a project with a fixed rate: %.1f", r)
			}
		})
	}
}
