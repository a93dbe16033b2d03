package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/redistest"
)

var backends = []struct {
	name  string
	start func(testing.TB) *redistest.Server
}{
	{"redis", redistest.Start},
	{"embedded", redistest.StartEmbedded},
}

// clock is the fake clock of the tests: clockwork's, started at the real
// time, that also hands every wait asked of After to the test.
type clock struct {
	*clockwork.FakeClock
	waits chan time.Duration // every wait asked of After
}

func newClock() *clock {
	return &clock{FakeClock: clockwork.NewFakeClock(), waits: make(chan time.Duration, 100)}
}

func (c *clock) After(d time.Duration) <-chan time.Time {
	ch := c.FakeClock.After(d)
	c.waits <- d
	return ch
}

// nextWait returns the next wait asked of After, and ends it by advancing
// the clock by it.
func (c *clock) nextWait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.waits:
		c.Advance(d)
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no wait within 10s")
		return 0
	}
}

// within fails t unless got lies in [want-slack-1ms, want]: a time learned
// from Redis is what remained of a pause when Redis answered, in whole
// milliseconds, so it may fall short by the real time that passed
// meanwhile.
func within(t *testing.T, what string, got, want time.Time, slack time.Duration) {
	t.Helper()
	if got.After(want) || got.Before(want.Add(-slack-time.Millisecond)) {
		t.Errorf("%s: until %v, want %v (less at most %s)", what, got, want, slack)
	}
}

// counted counts the commands a client sends.
type counted struct{ n atomic.Int64 }

func (c *counted) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counted) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { c.n.Add(1); return next(ctx, cmd) }
}
func (c *counted) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.n.Add(int64(len(cmds))); return next(ctx, cmds) }
}

const (
	p1 = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"
	p2 = "0b8c6f1e-6b9a-4e4f-9d2c-5f3a1b2c3d4e"
)

// run starts l until the test ends.
func run(t *testing.T, l *Limiter) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := l.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

// wait calls l.Wait and fails t unless it returns at once, with no wait
// handed back.
func wait(t *testing.T, l *Limiter, project string) {
	t.Helper()
	if permit, err := l.Wait(context.Background(), project); permit != (Permit{}) || err != nil {
		t.Fatalf("Wait(%s) = %+v, %v", project, permit, err)
	}
}

// waitUntil polls cond until it holds, failing after 10s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCoolDownReachesEveryWorker(t *testing.T) {
	t.Parallel()
	for _, be := range redistest.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			t.Parallel()
			client := be.Start(t)
			c := newClock()
			opts := Options{Clock: c, MaxWait: time.Minute}
			a, b := New(client(t), opts), New(client(t), opts)
			run(t, a)
			run(t, b) // Start returns once subscribed

			started, until, err := a.CoolDown(context.Background(), p1, 7*time.Second)
			if err != nil || !started || !until.Equal(c.Now().Add(7*time.Second)) {
				t.Fatalf("CoolDown = %v, %v, %v", started, until, err)
			}
			waitUntil(t, "b to hear of it", func() bool { return b.Until(p1).Equal(until) })

			// A shorter cool-down, from either worker, changes nothing; a
			// longer one extends it.
			for _, l := range []*Limiter{a, b} {
				if started, u, err := l.CoolDown(context.Background(), p1, time.Second); started || err != nil || !u.Equal(until) {
					t.Errorf("a cool-down inside a longer one: %v, %v, %v", started, u, err)
				}
			}
			set := time.Now()
			if started, _, err := b.CoolDown(context.Background(), p1, 8*time.Second); !started || err != nil {
				t.Errorf("a longer cool-down: %v, %v", started, err)
			}
			until = c.Now().Add(8 * time.Second)
			waitUntil(t, "a to hear of the longer one", func() bool { return a.Until(p1).Equal(until) })
			// A worker that has not heard of it learns from Redis what
			// remains of it: 8s, less the real time since it was set.
			fresh := New(client(t), opts)
			if started, u, err := fresh.CoolDown(context.Background(), p1, time.Second); started || err != nil {
				t.Errorf("a shorter cool-down from a worker that had not heard: %v, %v", started, err)
			} else {
				within(t, "the worker that had not heard", u, until, time.Since(set))
				within(t, "its own view", fresh.Until(p1), until, time.Since(set))
			}
			// A worker started later has read what runs once Start returns.
			late := New(client(t), opts)
			run(t, late)
			within(t, "the late worker", late.Until(p1), until, time.Since(set))
			// A pause longer than MaxWait is handed back, not waited.
			short := New(client(t), Options{Clock: c})
			run(t, short)
			if permit, err := short.Wait(context.Background(), p1); permit.Later <= time.Second || permit.Later > 8*time.Second || permit.Hold != HoldPaused || err != nil || len(c.waits) != 0 {
				t.Errorf("Wait with the default MaxWait = %+v, %v; want about 8s handed back", permit, err)
			}
			// A pause heard of is capped at MaxCoolDown from now.
			capped := New(client(t), Options{Clock: c, MaxCoolDown: time.Second})
			run(t, capped)
			if d := capped.Paused(p1); d != time.Second {
				t.Errorf("heard pause %s, want it capped at 1s", d)
			}

			// b's next call for p1 waits out the cool-down; p2 is not paused.
			wait(t, b, p2)
			done := make(chan error, 1)
			go func() {
				permit, err := b.Wait(context.Background(), p1)
				if permit.Later != 0 {
					err = fmt.Errorf("handed back %+v", permit)
				}
				done <- err
			}()
			if d := c.nextWait(t); d != 8*time.Second {
				t.Errorf("waited %s, want 8s", d)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSkewedClocksPauseAlike: a pause lasts as long on every worker,
// whatever each one's clock says, because only its length travels.
func TestSkewedClocksPauseAlike(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ahead := clockwork.NewFakeClockAt(time.Now().Add(time.Hour))
	behind := clockwork.NewFakeClockAt(time.Now().Add(-time.Hour))
	a := New(srv.Client(t), Options{Clock: ahead})
	b := New(srv.Client(t), Options{Clock: behind})
	run(t, b)
	set := time.Now()
	if started, _, err := a.CoolDown(context.Background(), p1, 5*time.Second); !started || err != nil {
		t.Fatalf("CoolDown = %v, %v", started, err)
	}
	waitUntil(t, "b to hear of it", func() bool { return b.Paused(p1) > 0 })
	if d := b.Paused(p1); d != 5*time.Second {
		t.Errorf("the worker behind pauses %s, want 5s", d)
	}
	late := New(srv.Client(t), Options{Clock: behind})
	run(t, late)
	within(t, "a worker behind that read it from Redis", late.Until(p1), behind.Now().Add(5*time.Second), time.Since(set))
}

// TestCoolDownEndsOnRedisClock: Redis forgets a cool-down once it has run
// its length on Redis's own clock, and a new one can start.
func TestCoolDownEndsOnRedisClock(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			srv := be.start(t)
			rdb := srv.Client(t)
			l := New(rdb, Options{})
			if started, _, err := l.CoolDown(context.Background(), p1, 100*time.Millisecond); !started || err != nil {
				t.Fatalf("CoolDown = %v, %v", started, err)
			}
			if ttl, err := rdb.PTTL(context.Background(), "resendq:cooldowns").Result(); err != nil || ttl <= 0 || ttl > 100*time.Millisecond {
				t.Errorf("the hash expires in %s, %v; want 100ms at most", ttl, err)
			}
			waitUntil(t, "Redis to expire the cool-down", func() bool {
				n, err := rdb.Exists(context.Background(), "resendq:cooldowns").Result()
				return err == nil && n == 0
			})
			fresh := New(rdb, Options{})
			run(t, fresh)
			if fresh.Paused(p1) != 0 {
				t.Error("a worker started after the end still pauses")
			}
			if started, _, err := fresh.CoolDown(context.Background(), p1, time.Second); !started || err != nil {
				t.Errorf("a cool-down after the last one ended: %v, %v", started, err)
			}
		})
	}
}

func TestCoolDownIsCapped(t *testing.T) {
	t.Parallel()
	c := newClock()
	l := New(redistest.Start(t).Client(t), Options{Clock: c, MaxCoolDown: time.Minute})
	if _, until, err := l.CoolDown(context.Background(), p1, time.Hour); err != nil || !until.Equal(c.Now().Add(time.Minute)) {
		t.Errorf("until %v, %v; want a minute from now", until, err)
	}
}

func TestCoolDownsCanBeTurnedOff(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	l := New(rdb, Options{MaxCoolDown: -1})
	if started, _, err := l.CoolDown(context.Background(), p1, time.Minute); started || err != nil {
		t.Errorf("CoolDown = %v, %v; want nothing started", started, err)
	}
	wait(t, l, p1)
	if n, _ := rdb.Exists(context.Background(), "resendq:cooldowns").Result(); n != 0 {
		t.Error("a cool-down was written")
	}
}

func TestWaitCostsNothingUntilTheFirst429(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	var n counted
	rdb.AddHook(&n)
	l := New(rdb, Options{})
	for range 100 {
		wait(t, l, p1)
	}
	if n.n.Load() != 0 {
		t.Errorf("%d Redis commands for 100 calls, want none", n.n.Load())
	}
	// After a cool-down has ended (on this worker's clock), still none.
	c := newClock()
	l = New(rdb, Options{Clock: c})
	if _, _, err := l.CoolDown(context.Background(), p1, time.Second); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Second)
	before := n.n.Load()
	wait(t, l, p1)
	if n.n.Load() != before {
		t.Errorf("Wait after the cool-down: %d commands", n.n.Load()-before)
	}
}

func TestRateIsSharedByTheFleet(t *testing.T) {
	t.Parallel()
	for _, be := range redistest.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			t.Parallel()
			client := be.Start(t)
			c := newClock()
			opts := Options{Rate: 5, Clock: c}
			a, b := New(client(t), opts), New(client(t), opts)
			wait(t, a, p1) // calls are spaced evenly: the first goes at once
			if len(c.waits) != 0 {
				t.Fatalf("the first call waited %s", <-c.waits)
			}
			done := make(chan error, 1)
			go func() { _, err := b.Wait(context.Background(), p1); done <- err }()
			select {
			case d := <-c.waits:
				if d <= 0 || d > 200*time.Millisecond {
					t.Errorf("the second call, on the other worker, waits %s, want up to 200ms (5/s)", d)
				}
				// Other projects have rates of their own.
				wait(t, a, p2)
				c.Advance(d)
			case <-time.After(10 * time.Second):
				t.Fatal("the second call did not wait")
			}
			for {
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
					return
				case d := <-c.waits: // redis_rate runs on Redis' clock: the wait may repeat
					c.Advance(d)
				}
			}
		})
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	t.Parallel()
	c := newClock()
	l := New(redistest.Start(t).Client(t), Options{Clock: c, MaxWait: time.Hour})
	if _, _, err := l.CoolDown(context.Background(), p1, time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := l.Wait(ctx, p1); done <- err }()
	<-c.waits
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want context.Canceled", err)
	}
}

func TestRedisDownLetsCallsGo(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var failures atomic.Int64
	l := New(rdb, Options{Rate: 5, OnError: func(error) { failures.Add(1) }})
	srv.Stop()
	if permit, err := l.Wait(context.Background(), p1); permit != (Permit{}) || err != nil || failures.Load() != 1 {
		t.Errorf("Wait = %+v, %v with %d failures reported, want at once, nil and 1", permit, err, failures.Load())
	}
	if err := l.Start(context.Background()); err == nil {
		t.Error("Start without Redis: no error")
	}
	if _, _, err := l.CoolDown(context.Background(), p1, time.Second); err == nil {
		t.Error("CoolDown without Redis: no error")
	}
}
