package ratelimit

import (
	"context"
	"errors"
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

// run starts l.Run until the test ends.
func run(t *testing.T, l *Limiter) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
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
			opts := Options{Now: c.Now, After: c.After}
			a, b := New(srv.Client(t), opts), New(srv.Client(t), opts)
			run(t, a)
			run(t, b)
			waitUntil(t, "both to subscribe", func() bool {
				n, _ := srv.Client(t).PubSubNumSub(context.Background(), "resendq:cooldowns").Result()
				return n["resendq:cooldowns"] == 2
			})

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

			// b's next call for p1 waits out the cool-down; p2 is not paused.
			if err := b.Wait(context.Background(), p2); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- b.Wait(context.Background(), p1) }()
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

			// A worker started later reads what runs.
			late := New(srv.Client(t), opts)
			run(t, late)
			waitUntil(t, "the late worker to read it", func() bool { return late.Until(p1).Equal(c.Now().Add(2 * time.Second)) })
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

func TestWaitCostsNothingUntilTheFirst429(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	var n counted
	rdb.AddHook(&n)
	l := New(rdb, Options{})
	for range 100 {
		if err := l.Wait(context.Background(), p1); err != nil {
			t.Fatal(err)
		}
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
	if err := l.Wait(context.Background(), p1); err != nil || n.n.Load() != before {
		t.Errorf("Wait after the cool-down: %v, %d commands", err, n.n.Load()-before)
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
				if err := l.Wait(context.Background(), p1); err != nil {
					t.Fatal(err)
				}
			}
			if len(c.waits) != 0 {
				t.Fatalf("waited within the burst: %s", <-c.waits)
			}
			done := make(chan error, 1)
			go func() { done <- b.Wait(context.Background(), p1) }()
			select {
			case d := <-c.waits:
				if d <= 0 || d > 200*time.Millisecond {
					t.Errorf("the sixth call waits %s, want up to 200ms (5/s)", d)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the sixth call did not wait")
			}
			// Other projects have rates of their own.
			if err := a.Wait(context.Background(), p2); err != nil {
				t.Fatal(err)
			}
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
	l := New(redistest.Start(t).Client(t), Options{Now: c.Now, After: c.After})
	if _, _, err := l.CoolDown(context.Background(), p1, time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx, p1) }()
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
	if err := l.Wait(context.Background(), p1); err != nil || failures.Load() != 1 {
		t.Errorf("Wait = %v with %d failures reported, want nil and 1", err, failures.Load())
	}
	if _, _, err := l.CoolDown(context.Background(), p1, time.Second); err == nil {
		t.Error("CoolDown without Redis: no error")
	}
}
