package rkey

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/redistest"
)

func TestSlotAgreesWithRedisCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	rdb := c.Client(t)
	ctx := context.Background()
	for _, k := range []string{"", "a", "resendq:outcome:x", "asynq:{bulk}:pending", "x{}y", "{user1000}.following", "foo{{bar}}zap", "a{b}{c}"} {
		want, err := rdb.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
		}
		if got := Slot(k); int64(got) != want {
			t.Errorf("Slot(%q) = %d, Redis says %d", k, got, want)
		}
	}
}

type wrapped struct{ redis.UniversalClient }

func (w wrapped) Unwrap() redis.UniversalClient { return w.UniversalClient }

func TestIsCluster(t *testing.T) {
	t.Parallel()
	single := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { single.Close(); cluster.Close() })
	for _, c := range []struct {
		rdb  redis.UniversalClient
		want bool
	}{{single, false}, {cluster, true}, {wrapped{cluster}, true}, {wrapped{single}, false}} {
		if got := IsCluster(c.rdb); got != c.want {
			t.Errorf("IsCluster(%T) = %v, want %v", c.rdb, got, c.want)
		}
	}
	if got := Tag("a{b}"); got != "{a(b)}" {
		t.Errorf("Tag = %q", got)
	}
}
