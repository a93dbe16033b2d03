package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// clock is a settable time source, and a fake time.After whose waits the
// test ends by hand.
type clock struct {
	mu     sync.Mutex
	t      time.Time
	waits  chan time.Duration    // every wait asked for
	wakeup chan chan<- time.Time // the channel of each wait, in order
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), waits: make(chan time.Duration, 100), wakeup: make(chan chan<- time.Time, 100)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *clock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.waits <- d
	c.wakeup <- ch
	return ch
}

// nextWait returns the next wait asked for, and ends it after advancing
// the clock by it.
func (c *clock) nextWait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.waits:
		ch := <-c.wakeup
		c.Advance(d)
		ch <- c.Now()
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no wait within 10s")
		return 0
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
	if later, err := l.Wait(context.Background(), project); later != 0 || err != nil {
		t.Fatalf("Wait(%s) = %s, %v", project, later, err)
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
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			srv := be.start(t)
			c := newClock()
			opts := Options{Now: c.Now, After: c.After, MaxWait: time.Minute}
			a, b := New(srv.Client(t), opts), New(srv.Client(t), opts)
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
			if started, _, err := b.CoolDown(context.Background(), p1, 8*time.Second); !started || err != nil {
				t.Errorf("a longer cool-down: %v, %v", started, err)
			}
			until = c.Now().Add(8 * time.Second)
			waitUntil(t, "a to hear of the longer one", func() bool { return a.Until(p1).Equal(until) })
			// A worker that has not heard of it learns it from Redis.
			fresh := New(srv.Client(t), opts)
			if started, u, err := fresh.CoolDown(context.Background(), p1, time.Second); started || err != nil || !u.Equal(until) || !fresh.Until(p1).Equal(until) {
				t.Errorf("a shorter cool-down from a worker that had not heard: %v, %v, %v", started, u, err)
			}

			// b's next call for p1 waits out the cool-down; p2 is not paused.
			wait(t, b, p2)
			done := make(chan error, 1)
			go func() {
				later, err := b.Wait(context.Background(), p1)
				if later != 0 {
					err = fmt.Errorf("handed back %s", later)
				}
				done <- err
			}()
			if d := c.nextWait(t); d != 8*time.Second {
				t.Errorf("waited %s, want 8s", d)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}

			// Once it has ended, a new one starts.
			if started, _, _ := a.CoolDown(context.Background(), p1, 2*time.Second); !started {
				t.Error("a cool-down after the last one ended was not started")
			}

			// A worker started later has read what runs once Start returns.
			late := New(srv.Client(t), opts)
			run(t, late)
			if got := late.Until(p1); !got.Equal(c.Now().Add(2 * time.Second)) {
				t.Errorf("late worker: pause until %v", got)
			}
			// A pause longer than MaxWait is handed back, not waited.
			short := New(srv.Client(t), Options{Now: c.Now, After: c.After})
			run(t, short)
			if later, err := short.Wait(context.Background(), p1); later != 2*time.Second || err != nil || len(c.waits) != 0 {
				t.Errorf("Wait with the default MaxWait = %s, %v; want 2s handed back", later, err)
			}
			// A pause heard of is capped at MaxCoolDown from now.
			capped := New(srv.Client(t), Options{Now: c.Now, After: c.After, MaxCoolDown: time.Second})
			run(t, capped)
			if d := capped.Paused(p1); d != time.Second {
				t.Errorf("heard pause %s, want it capped at 1s", d)
			}
		})
	}
}

func TestCoolDownIsCapped(t *testing.T) {
	t.Parallel()
	c := newClock()
	l := New(redistest.Start(t).Client(t), Options{Now: c.Now, After: c.After, MaxCoolDown: time.Minute})
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
	// After a cool-down has ended, still none.
	c := newClock()
	l = New(rdb, Options{Now: c.Now, After: c.After})
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
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			srv := be.start(t)
			c := newClock()
			opts := Options{Rate: 5, Now: c.Now, After: c.After}
			a, b := New(srv.Client(t), opts), New(srv.Client(t), opts)
			for i := range 5 { // the burst: one second's worth, across both
				l := a
				if i%2 == 1 {
					l = b
				}
				wait(t, l, p1)
			}
			if len(c.waits) != 0 {
				t.Fatalf("waited within the burst: %s", <-c.waits)
			}
			done := make(chan error, 1)
			go func() { _, err := b.Wait(context.Background(), p1); done <- err }()
			select {
			case d := <-c.waits:
				if d <= 0 || d > 200*time.Millisecond {
					t.Errorf("the sixth call waits %s, want up to 200ms (5/s)", d)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the sixth call did not wait")
			}
			// Other projects have rates of their own.
			wait(t, a, p2)
			(<-c.wakeup) <- c.Now() // redis_rate runs on Redis' clock: the wait may repeat
			for {
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
					return
				case <-c.waits:
					(<-c.wakeup) <- c.Now()
				}
			}
		})
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	t.Parallel()
	c := newClock()
	l := New(redistest.Start(t).Client(t), Options{Now: c.Now, After: c.After, MaxWait: time.Hour})
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
	if later, err := l.Wait(context.Background(), p1); later != 0 || err != nil || failures.Load() != 1 {
		t.Errorf("Wait = %s, %v with %d failures reported, want at once, nil and 1", later, err, failures.Load())
	}
	if err := l.Start(context.Background()); err == nil {
		t.Error("Start without Redis: no error")
	}
	if _, _, err := l.CoolDown(context.Background(), p1, time.Second); err == nil {
		t.Error("CoolDown without Redis: no error")
	}
}
