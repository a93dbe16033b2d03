package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
)

// TestWholePipelineOnRedisCluster runs the commands a user runs, against a
// real 3-master Redis Cluster: a batch and a single enqueue, a worker
// process, outcomes, dead letters and their replay, the batch's status, and
// the batch run again. The records end up on every master.
func TestWholePipelineOnRedisCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.StartCluster(t, 3)
	rdb := c.Client(t)
	api := fake.New()
	gone := func(u string) bool { return strings.HasPrefix(u, "gone") }
	api.SetRules(func(u string) (fake.Behavior, bool) {
		return fake.Behavior{Status: 404, Code: "010-012"}, gone(u)
	})
	httpSrv := httptest.NewServer(api)
	defer httpSrv.Close()

	const n = 600
	var csv strings.Builder
	csv.WriteString("project_id,username\n")
	for i := range n {
		u := fmt.Sprintf("user%d@example.com", i)
		if i%10 == 0 {
			u = fmt.Sprintf("gone%d@example.com", i)
		}
		fmt.Fprintf(&csv, "%s,%s\n", testProject, u)
	}
	file := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(file, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	batch := []string{"enqueue", "--redis-url", c.URL, "--file", file, "--batch-id", "cb", "--json", "--no-progress"}
	var sum enqueue.Summary
	if r := runCLI(t, nil, batch...); r.code != 0 || json.Unmarshal([]byte(r.stdout), &sum) != nil || sum.Enqueued != n {
		t.Fatalf("batch: %+v; want %d enqueued", r, n)
	}
	if r := runCLI(t, nil, "enqueue", "--redis-url", c.URL, "--project-id", testProject, "--username", "single@example.com"); r.code != 0 {
		t.Fatalf("enqueue: %+v", r)
	}

	var logs bytes.Buffer
	startWorker(t, c.URL, httpSrv.URL+"/api", &logs)
	store := outcome.NewStore(rdb, outcome.Options{})
	waitFor := func(sent, dead int64, what string) {
		t.Helper()
		waitUntil(t, 2*time.Minute, func() bool {
			st, err := store.Stats(ctx)
			return err == nil && st.Sent == sent && st.DeadLetter == dead
		}, what)
	}
	waitFor(n-n/10+1, n/10, "the batch and the single enqueue finished")
	for i := range c.Addrs {
		if keys := c.Node(t, i).Keys(ctx, "resendq:{o*}:outcome:*").Val(); len(keys) < n/10 {
			t.Errorf("master %d holds %d of %d records; want them spread over every master", i, len(keys), n+1)
		}
	}

	if r := runCLI(t, nil, "outcomes", "list", "--redis-url", c.URL, "--username", "user7@example.com"); r.code != 0 || !strings.Contains(r.stdout, "sent") {
		t.Errorf("outcomes list --username: %+v", r)
	}
	var dl outcome.DeadLetterStats
	if r := runCLI(t, nil, "dlq", "stats", "--redis-url", c.URL, "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &dl) != nil || dl.ByCode["010-012"].Open != n/10 {
		t.Fatalf("dlq stats: %+v", r)
	}

	// The cause is fixed: the replay sends each dead letter once more.
	api.SetRules(nil)
	var rep enqueue.ReplaySummary
	if r := runCLI(t, nil, "dlq", "replay", "--redis-url", c.URL, "--code", "010-012", "--yes", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil || rep.Replayed != n/10 {
		t.Fatalf("dlq replay: %+v", r)
	}
	waitFor(n+1, n/10, "the replays sent")
	for i := 0; i < n; i += 10 {
		if got := api.Count(fmt.Sprintf("gone%d@example.com", i)); got != 2 {
			t.Errorf("gone%d was called %d times; want 2 (the dead letter and its replay)", i, got)
		}
	}
	if r := runCLI(t, nil, "batch", "status", "--redis-url", c.URL, "cb"); r.code != 0 || !strings.Contains(r.stdout, "cb") {
		t.Errorf("batch status: %+v", r)
	}
	if r := runCLI(t, nil, batch...); r.code != 0 || json.Unmarshal([]byte(r.stdout), &sum) != nil || sum.Enqueued != 0 || sum.AlreadyQueued != n {
		t.Errorf("the batch again: %+v; want all %d already there", r, n)
	}
	// The replayed dead letters purged, a user forgotten: on every shard.
	var purged enqueue.PurgeSummary
	if r := runCLI(t, nil, "dlq", "purge", "--redis-url", c.URL, "--code", "010-012", "--yes", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &purged) != nil || purged.Purged != n/10 {
		t.Errorf("dlq purge: %+v; want %d records purged", r, n/10)
	}
	if r := runCLI(t, nil, "outcomes", "forget", "--redis-url", c.URL, "--username", "user7@example.com", "--yes"); r.code != 0 || !strings.Contains(r.stdout, "1 records") {
		t.Errorf("outcomes forget: %+v", r)
	}
	if st, err := store.Stats(ctx); err != nil || st.DeadLetter != 0 || st.Sent != n {
		t.Errorf("after the purge and the forget: %+v, %v; want %d sent, no dead letter", st, err, n)
	}
	if t.Failed() {
		t.Logf("worker log:\n%s", logs.String())
	}
}
