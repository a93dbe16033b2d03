package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

func TestOutcomesForgetDeletesAUsersRecordsTasksAndClaims(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	store := outcome.NewStore(rdb, outcome.Options{})
	// john: a dead letter, replayed (the replay waits in the bulk queue), a
	// sent record, and a resend waiting in the queue; jane: a sent record,
	// kept.
	deadLetters(t, rdb, time.Now().Add(-time.Hour), deadLetter("john-dead", "john@example.com", "010-012"))
	if r := runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--task-id", "john-dead", "--yes"); r.code != 0 || !strings.Contains(r.stdout, "replayed 1") {
		t.Fatalf("replay: %+v", r)
	}
	dead, _, _ := store.Get(ctx, "john-dead")
	for _, rec := range []outcome.Record{
		{TaskID: "john-sent", ProjectID: testProject, Username: "john@example.com", Queue: tasks.QueueSignup, Status: outcome.StatusSent, HTTPStatus: 204},
		{TaskID: "jane-sent", ProjectID: testProject, Username: "jane@example.com", Queue: tasks.QueueSignup, Status: outcome.StatusSent, HTTPStatus: 204},
	} {
		if _, err := store.Finish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	waiting, err := enqueue.New(rdb, enqueue.Options{}).Enqueue(ctx, tasks.Resend{ProjectID: testProject, Username: "John@Example.com"})
	if err != nil {
		t.Fatal(err)
	}

	r := runCLI(t, nil, "outcomes", "forget", "--redis-url", srv.URL, "--username", "john@example.com")
	if r.code != 2 || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("forget without --yes and without a terminal: %+v", r)
	}
	if st, _ := store.Stats(ctx); st.Sent != 2 || st.DeadLetter != 1 {
		t.Fatalf("a refused forget deleted records: %+v", st)
	}
	r = runCLI(t, nil, "outcomes", "forget", "--redis-url", srv.URL, "--username", "john@example.com", "--yes", "--json")
	var sum enqueue.ForgetSummary
	if err := json.Unmarshal([]byte(r.stdout), &sum); r.code != 0 || err != nil {
		t.Fatalf("forget: %+v (%v)", r, err)
	}
	// 2 records; the queued replay and the waiting resend; the dedup claim and the replay marker.
	if sum != (enqueue.ForgetSummary{Records: 2, Tasks: 2, Claims: 2}) {
		t.Errorf("forget summary %+v", sum)
	}
	if strings.Contains(r.stderr, "john@example.com") || !strings.Contains(r.stderr, `audit="outcomes forget"`) {
		t.Errorf("the audit line: %s", r.stderr)
	}
	if _, ok, _ := store.Latest(ctx, "", "john@example.com"); ok {
		t.Error("john still has a record")
	}
	if _, ok, _ := store.Latest(ctx, "", "jane@example.com"); !ok {
		t.Error("jane's record went too")
	}
	ins := asynq.NewInspectorFromRedisClient(rdb)
	if _, err := ins.GetTaskInfo(tasks.QueueSignup, waiting.TaskID); err == nil {
		t.Error("john's waiting resend is still queued")
	}
	if _, err := ins.GetTaskInfo(tasks.QueueBulk, dead.ReplayedAs); err == nil {
		t.Error("john's queued replay is still queued")
	}
	if q, _ := ins.GetQueueInfo(tasks.QueueSignup); q.Archived != 0 {
		t.Errorf("john's dead letter is still archived: %+v", q)
	}
	keys, _ := rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		if v, _ := rdb.Dump(ctx, k).Result(); strings.Contains(strings.ToLower(v), "john@") {
			t.Errorf("key %s still holds john's address", k)
		}
	}
	if r := runCLI(t, nil, "outcomes", "forget", "--redis-url", srv.URL, "--yes"); r.code != 2 {
		t.Errorf("forget without --username: %+v", r)
	}
}
