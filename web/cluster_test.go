package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/metrics"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/web"
)

// TestOnACluster: on a 3-master Redis Cluster, asynqmon's API lists the
// queues and shows the cluster, the metrics read every queue, the flow API
// reads the fleet's flow control, and /readyz turns 503 when a master is
// gone.
func TestOnACluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	rdb := c.Client(t)
	client := asynq.NewClientFromRedisClient(rdb)
	for i, q := range []string{tasks.QueueSignup, tasks.QueueSignup, tasks.QueueBulk} {
		if _, err := client.Enqueue(asynq.NewTask(tasks.TypeResend, []byte(`{}`)), asynq.Queue(q), asynq.TaskID(string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := ratelimit.New(rdb, ratelimit.Options{}).CoolDown(context.Background(), projectID, time.Minute); err != nil {
		t.Fatal(err)
	}
	reg := metrics.NewRegistry()
	reg.MustRegister(metrics.NewQueueCollector(rdb, nil))
	h, err := web.New(web.Options{Redis: rdb, Outcomes: outcome.NewStore(rdb, outcome.Options{}), Metrics: reg, Token: testToken, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{http: httptest.NewServer(h)}
	t.Cleanup(b.http.Close)

	status, body := b.get(t, "/monitoring/api/queues", bearer())
	var queues struct {
		Queues []struct {
			Queue string `json:"queue"`
			Size  int    `json:"size"`
		} `json:"queues"`
	}
	if err := json.Unmarshal([]byte(body), &queues); status != http.StatusOK || err != nil {
		t.Fatalf("asynqmon's queues: %d %q (%v)", status, body, err)
	}
	sizes := map[string]int{}
	for _, q := range queues.Queues {
		sizes[q.Queue] = q.Size
	}
	if sizes[tasks.QueueSignup] != 2 || sizes[tasks.QueueBulk] != 1 {
		t.Errorf("asynqmon's queue sizes %v, want signup 2, bulk 1", sizes)
	}
	status, body = b.get(t, "/monitoring/api/redis_info", bearer())
	if status != http.StatusOK || !strings.Contains(body, `"cluster":true`) || !strings.Contains(body, `"queue_locations"`) {
		t.Errorf("asynqmon's Redis info: %d %.300q, want the cluster's", status, body)
	}
	status, body = b.get(t, "/monitoring/api/queues/signup/pending_tasks", bearer())
	if status != http.StatusOK || !strings.Contains(body, `"pending":2`) || !strings.Contains(body, `"id":"a"`) {
		t.Errorf("asynqmon's pending signups: %d %.300q", status, body)
	}

	status, body = b.get(t, "/metrics", bearer())
	if missing := missingLines(body, `asynq_queue_size{queue="signup"} 2`, `asynq_queue_size{queue="bulk"} 1`, "resendq_redis_up 1"); status != http.StatusOK || len(missing) > 0 {
		t.Errorf("/metrics: %d, missing %q", status, missing)
	}
	status, body = b.get(t, "/api/v1/flow", bearer())
	if status != http.StatusOK || !strings.Contains(body, `"project_id":"`+projectID+`"`) {
		t.Errorf("/api/v1/flow: %d %q, want the paused project", status, body)
	}

	if status, body := b.get(t, "/readyz", ""); status != http.StatusOK {
		t.Fatalf("/readyz: %d %q, want 200", status, body)
	}
	c.Stop(2)
	status, body = b.get(t, "/readyz", "")
	if status != http.StatusServiceUnavailable || strings.Contains(body, c.Addrs[2]) {
		t.Errorf("/readyz with a master gone: %d %q, want 503 without its address", status, body)
	}
}
