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
