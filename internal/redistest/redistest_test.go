package redistest

import (
	"context"
	"runtime"
	"testing"
)

func TestStart(t *testing.T) {
	t.Parallel()
	s := Start(t)
	if s.URL != "redis://"+s.Addr+"/0" {
		t.Fatalf("URL = %q, want redis://%s/0", s.URL, s.Addr)
	}
	ctx := context.Background()
	rdb := s.Client(t)
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want v", got, err)
	}
}

func TestServersAreIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := Start(t), Start(t)
	if a.Addr == b.Addr {
		t.Fatalf("two servers share %s", a.Addr)
	}
	if err := a.Client(t).Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if n, err := b.Client(t).Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS on the other server = %d, %v; want 0", n, err)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	s := Start(t)
	if err := s.Client(t).Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	s.Stop()
	s.Stop() // idempotent
	if err := ping(s.Addr); err == nil {
		t.Fatal("PING after Stop succeeded; want an error")
	}
}

func TestStartEmbedded(t *testing.T) {
	t.Parallel()
	s := StartEmbedded(t)
	ctx := context.Background()
	rdb := s.Client(t)
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	s.Stop()
	s.Stop()
	if err := ping(s.Addr); err == nil {
		t.Fatal("PING after Stop succeeded; want an error")
	}
}

func TestStartWithBadBinaryFails(t *testing.T) {
	// Not parallel: it sets an environment variable.
	t.Setenv(EnvServer, "/nonexistent/redis-server")
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(ft)
	}()
	<-done
	if !ft.failed {
		t.Fatal("Start with a missing binary did not fail the test")
	}
}

// fatalRecorder records Fatalf instead of failing the real test.
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = true
	runtime.Goexit()
}

func TestStartClusterSpreadsSlotsOverThreeMasters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := StartCluster(t, 3)
	rdb := c.Client(t)
	// Keys of different hash tags land on different masters.
	for _, k := range []string{"{a}", "{b}", "{c}", "{d}", "{e}", "{f}"} {
		if err := rdb.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	holding := 0
	for i := range c.Addrs {
		if n, err := c.Node(t, i).DBSize(ctx).Result(); err != nil {
			t.Fatalf("DBSIZE node %d: %v", i, err)
		} else if n > 0 {
			holding++
		}
	}
	if holding < 2 {
		t.Fatalf("6 keys of different tags sit on %d of 3 masters; want at least 2", holding)
	}
	if c.URL == "" || len(c.Addrs) != 3 {
		t.Fatalf("URL %q, Addrs %v", c.URL, c.Addrs)
	}
}
