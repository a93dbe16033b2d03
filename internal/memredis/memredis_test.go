package memredis

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestKeysExpireOnTheRealClock: a key set with a TTL is gone once that much
// real time has passed, as on a real Redis (miniredis alone keeps it until
// told to move its clock).
func TestKeysExpireOnTheRealClock(t *testing.T) {
	s, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "short", "x", 100*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "long", "x", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	set := time.Now()
	for rdb.Exists(ctx, "short").Val() == 1 {
		if time.Since(set) > 10*time.Second {
			t.Fatal("a key with a 100ms TTL still exists after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rdb.Exists(ctx, "long").Val() != 1 {
		t.Error("a key with an hour's TTL expired")
	}
	if s.URL() != "redis://"+s.Addr()+"/0" {
		t.Errorf("URL = %q", s.URL())
	}
}
