package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

func TestBatchStatusAndCancel(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(file, []byte("username\na@example.com\nb@example.com\nc@example.com\nd@example.com\ne@example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, nil, "enqueue", "--redis-url", srv.URL, "--file", file, "--project-id", testProject, "--batch-id", "b1", "--json"); r.code != 0 {
		t.Fatalf("enqueue: %+v", r)
	}
	// Two of them finish, as a worker would end them: one sent, one dead letter.
	ins := asynq.NewInspectorFromRedisClient(rdb)
	store := outcome.NewStore(rdb, outcome.Options{})
	for _, f := range []struct {
		user string
		rec  outcome.Record
	}{
		{"a@example.com", outcome.Record{Status: outcome.StatusSent, HTTPStatus: 204}},
		{"b@example.com", outcome.Record{Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, HTTPStatus: 404, ErrorCode: "003-002"}},
	} {
		id := enqueue.BatchTaskID("b1", tasks.Resend{ProjectID: testProject, Username: f.user})
		rec := f.rec
		rec.TaskID, rec.ProjectID, rec.Username, rec.Queue, rec.BatchID = id, testProject, f.user, tasks.QueueBulk, "b1"
		if _, err := store.Finish(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if err := ins.DeleteTask(tasks.QueueBulk, id); err != nil {
			t.Fatal(err)
		}
	}
	status := func() enqueue.BatchStatus {
		t.Helper()
		r := runCLI(t, nil, "batch", "status", "b1", "--redis-url", srv.URL, "--json")
		var st enqueue.BatchStatus
		if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil {
			t.Fatalf("batch status: %+v (%v)", r, err)
		}
		return st
	}
	st := status()
	if st.Enqueued != 5 || st.Waiting != 3 || st.Sent != 1 || st.DeadLetter != 1 || st.ByCode["003-002"] != 1 || st.LastMinute != 2 {
		t.Fatalf("status: %+v", st)
	}
	// Two finished in the last minute: three left take about 90s at that pace.
	if st.DoneIn < 89*time.Second || st.DoneIn > 91*time.Second {
		t.Errorf("done in %s, want about 90s", st.DoneIn)
	}
	r := runCLI(t, nil, "batch", "status", "b1", "--redis-url", srv.URL)
	if r.code != 0 || !strings.Contains(r.stdout, "code 003-002") || !strings.Contains(r.stdout, "done in about 1m30s") {
		t.Errorf("batch status: %+v", r)
	}

	if r := runCLI(t, nil, "batch", "cancel", "b1", "--redis-url", srv.URL); r.code != 2 {
		t.Fatalf("cancel without --yes: %+v", r)
	}
	if q, _ := ins.GetQueueInfo(tasks.QueueBulk); q.Pending != 3 {
		t.Fatalf("a refused cancel changed the queue: %+v", q)
	}
	r = runCLI(t, nil, "batch", "cancel", "b1", "--redis-url", srv.URL, "--yes", "--json")
	var sum enqueue.CancelSummary
	if err := json.Unmarshal([]byte(r.stdout), &sum); r.code != 0 || err != nil || sum != (enqueue.CancelSummary{Cancelled: 3}) {
		t.Fatalf("cancel: %+v (%v)", r, err)
	}
	if !strings.Contains(r.stderr, `audit="batch cancel"`) {
		t.Errorf("no audit line: %s", r.stderr)
	}
	if q, _ := ins.GetQueueInfo(tasks.QueueBulk); q.Size != 0 {
		t.Errorf("queue after the cancel: %+v", q)
	}
	st = status()
	if st.Waiting != 0 || st.DeadLetter != 4 || st.ByReason["cancelled"] != 3 || st.Enqueued != 5 {
		t.Errorf("status after the cancel: %+v", st)
	}
	if rec, ok, _ := store.Latest(ctx, testProject, "e@example.com"); !ok || rec.Reason != outcome.ReasonCancelled || rec.BatchID != "b1" {
		t.Errorf("a cancelled task's record: %+v", rec)
	}
	// The cancelled ones can be sent later.
	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--batch-id", "b1", "--reason", "cancelled", "--yes")
	if r.code != 0 || !strings.Contains(r.stdout, "3 dead letters matched: replayed 3") {
		t.Errorf("replay of the cancelled: %+v", r)
	}
	if r := runCLI(t, nil, "batch", "status", "no such", "--redis-url", srv.URL); r.code != 2 {
		t.Errorf("a bad batch ID: %+v", r)
	}
}
