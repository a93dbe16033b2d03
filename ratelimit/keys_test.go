package ratelimit

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/internal/rkey"
)

// TestKeysOnASingleRedisKeepTheirNames: a fleet upgrading on one Redis
// reads the keys the previous version wrote.
func TestKeysOnASingleRedisKeepTheirNames(t *testing.T) {
	t.Parallel()
	k := keysFor("", false)
	for got, want := range map[string]string{
		k.cooldown: "resendq:cooldowns", k.circuits: "resendq:flow:circuits", k.watch: "resendq:flow:watch",
		k.closes: "resendq:flow:closes", k.rates: "resendq:flow:rates", k.channel: "resendq:flow",
		k.gcra + p1: "resendq:rate:" + p1, k.counts(p1): "resendq:flow:counts:{" + p1 + "}",
		k.probe(p1): "resendq:flow:probe:{" + p1 + "}",
	} {
		if got != want {
			t.Errorf("key %q, want %q", got, want)
		}
	}
}

// TestKeysOnAClusterShareOneSlot: on a cluster every key a script of the
// limiters touches lies in the slot of {flow}; the keys written by a
// pause, failures, an open circuit and a probe say so.
func TestKeysOnAClusterShareOneSlot(t *testing.T) {
	t.Parallel()
	k := keysFor("other:", true)
	slot := rkey.Slot("{flow}")
	for _, key := range []string{k.cooldown, k.circuits, k.watch, k.closes, k.rates, k.counts(p1), k.probe(p2)} {
		if !strings.HasPrefix(key, "other:{flow}:") || rkey.Slot(key) != slot {
			t.Errorf("key %q: slot %d, want other:{flow}:... in slot %d", key, rkey.Slot(key), slot)
		}
	}

	c := redistest.StartCluster(t, 3)
	rdb := c.Client(t)
	var ev events
	l := New(rdb, quick(&ev))
	run(t, l)
	ctx := context.Background()
	if _, _, err := l.CoolDown(ctx, p2, time.Minute); err != nil {
		t.Fatal(err)
	}
	failUntilOpen(t, l)
	if st, err := Status(ctx, rdb, ""); err != nil || len(st) != 2 || st[0].Paused <= 0 || !st[1].Open { // by project ID: p2, p1
		t.Fatalf("Status on the cluster = %+v, %v; want p2 paused, p1 open", st, err)
	}
	var mu sync.Mutex
	var keys []string
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		ks, err := node.Keys(ctx, "*").Result()
		mu.Lock()
		keys = append(keys, ks...)
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, key := range keys {
		if rkey.Slot(key) != slot {
			t.Errorf("key %q outside the slot of {flow}", key)
		}
		found[key] = true
	}
	for _, key := range []string{"resendq:{flow}:cooldowns", "resendq:{flow}:circuits", "resendq:{flow}:counts:" + p1, "resendq:{flow}:probe:" + p1} {
		if !found[key] {
			t.Errorf("no key %q among %q", key, keys)
		}
	}
}
