package web_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/web"
)

// TestTooFewReplicasIs503: an Enqueuer that waits for one replica answers
// 202 while the replica is up; with the replica down, every enqueue
// endpoint answers 503 with Retry-After, saying how many replicas
// acknowledged, and a repeat under the same Idempotency-Key enqueues
// nothing twice.
func TestTooFewReplicasIs503(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) {
		o.Enqueuer = enqueue.New(o.Redis, enqueue.Options{WaitReplicas: 1, WaitTimeout: time.Second})
	})
	replica := redistest.StartReplica(t, b.redis)
	a := b.call(t, "POST", "/api/v1/resends", testToken, nil, resendBody("up@example.com"), true)
	if a.status != http.StatusAccepted {
		t.Fatalf("with the replica up: %d %s, want 202", a.status, a.body)
	}
	replica.Stop()
	key := map[string]string{"Idempotency-Key": "k1"}
	for _, c := range []struct {
		path, body string
		header     map[string]string
	}{
		{"/api/v1/resends", resendBody("down@example.com"), nil},
		{"/api/v1/resends", resendBody("keyed@example.com"), key},
		{"/api/v1/resends:batch", `{"items":[` + resendBody("batch@example.com") + `]}`, nil},
	} {
		a := b.call(t, "POST", c.path, testToken, c.header, c.body, true)
		code, _ := a.apiError(t)
		if a.status != http.StatusServiceUnavailable || code != "unavailable" || a.header.Get("Retry-After") == "" ||
			!strings.Contains(a.body, "only 0 of the 1 replicas asked for acknowledged it within 1s") {
			t.Errorf("POST %s with the replica down: %d %s, want 503 naming the replicas", c.path, a.status, a.body)
		}
	}
	if n := b.queued(t); n != 4 {
		t.Errorf("%d tasks queued, want 4: each enqueue is on the master", n)
	}
	a = b.call(t, "POST", "/api/v1/resends", testToken, key, resendBody("keyed@example.com"), true)
	if a.status != http.StatusServiceUnavailable {
		t.Errorf("the repeat under the same key: %d %s, want 503 again", a.status, a.body)
	}
	if n := b.queued(t); n != 4 {
		t.Errorf("the repeat enqueued again: %d tasks queued, want 4", n)
	}
}
