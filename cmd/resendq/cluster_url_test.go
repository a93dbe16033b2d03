package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/ratelimit"
)

// TestRedisClusterURL: `--redis-url redis-cluster://...` reaches a 3-master
// cluster from one of its nodes, and status reads the fleet's flow control
// there.
func TestRedisClusterURL(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	if _, _, err := ratelimit.New(c.Client(t), ratelimit.Options{}).CoolDown(context.Background(), otherProject, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{c.URL, "redis-cluster://" + c.Addrs[1]} {
		r := runCLI(t, nil, "status", "--redis-url", url)
		if r.code != 0 || !strings.Contains(r.stdout, otherProject) {
			t.Errorf("status --redis-url %s: %+v, want the paused project", url, r)
		}
	}
	r := runCLI(t, nil, "status", "--redis-url", "redis-cluster://:s3cret@"+c.Addrs[0]+"/1")
	if r.code != 2 || !strings.Contains(r.stderr, "database 0 only") || strings.Contains(r.stderr, "s3cret") {
		t.Errorf("a cluster URL with a database: %+v, want exit 2 saying why, without the password", r)
	}
}
