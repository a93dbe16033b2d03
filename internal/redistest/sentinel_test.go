package redistest

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

func TestSentinelFailsOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := StartSentinel(t)
	opt, err := asynq.ParseRedisURI(s.URL)
	if err != nil {
		t.Fatalf("ParseRedisURI(%q): %v", s.URL, err)
	}
	fo, ok := opt.(asynq.RedisFailoverClientOpt)
	if !ok || fo.MasterName != MasterName || len(fo.SentinelAddrs) != 1 || fo.SentinelAddrs[0] != s.Addr {
		t.Fatalf("ParseRedisURI(%q) = %#v, want the Sentinel at %s, master %s", s.URL, opt, s.Addr, MasterName)
	}
	rdb := opt.MakeRedisClient().(redis.UniversalClient)
	defer rdb.Close()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through the Sentinel: %v", err)
	}
	if n, err := s.Master.Client(t).Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v; want the replica's acknowledgement", n, err)
	}
	if addr, err := s.CurrentMaster(ctx); err != nil || addr != s.Master.Addr {
		t.Fatalf("the Sentinel's master is %q, %v; want %s", addr, err, s.Master.Addr)
	}

	s.Master.Stop()
	start := time.Now()
	s.WaitFailover(t, 30*time.Second)
	t.Logf("failover done %s after the kill", time.Since(start).Round(10*time.Millisecond))
	if got, err := s.Replica.Client(t).Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("GET on the promoted replica = %q, %v; want v", got, err)
	}
}

func TestDurableKeepsAcknowledgedWritesAcrossAKill(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := StartDurable(t)
	rdb := d.Client(t)
	for i := range 100 {
		if err := rdb.Incr(ctx, "n").Err(); err != nil {
			t.Fatalf("INCR %d: %v", i, err)
		}
	}
	d.Kill()
	d.Kill() // idempotent
	if err := ping(d.Addr); err == nil {
		t.Fatal("PING after Kill succeeded; want an error")
	}
	d.Restart(t)
	if got, err := rdb.Get(ctx, "n").Int(); err != nil || got != 100 {
		t.Errorf("GET after the restart = %d, %v; want 100", got, err)
	}
}

func TestStartSentinelWithoutSentinelBinaryFails(t *testing.T) {
	// Not parallel: it sets an environment variable.
	t.Setenv(EnvSentinel, "/nonexistent/redis-sentinel")
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		StartSentinel(ft)
	}()
	<-done
	if !ft.failed {
		t.Fatal("StartSentinel with a missing redis-sentinel did not fail the test")
	}
}
