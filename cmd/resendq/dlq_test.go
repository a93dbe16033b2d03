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

func TestDLQReplayOnceAndClearsArchive(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	ins := asynq.NewInspectorFromRedisClient(rdb)
	store := outcome.NewStore(rdb, outcome.Options{})

	// A task that asynq archived, and its dead-letter record.
	task, _ := tasks.NewTask(tasks.Resend{ProjectID: testProject, Username: "john@example.com", LoginURL: "https://example.com/cb"})
	info, err := asynq.NewClientFromRedisClient(rdb).Enqueue(task, tasks.Options(tasks.QueueSignup, "dead-1")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := ins.ArchiveTask(tasks.QueueSignup, info.ID); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, rec := range []outcome.Record{
		{TaskID: "dead-1", ProjectID: testProject, Username: "john@example.com", LoginURL: "https://example.com/cb", Queue: tasks.QueueSignup,
			Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, HTTPStatus: 400, ErrorCode: "003-022", FinishedAt: now},
		{TaskID: "dead-2", ProjectID: "not-a-uuid", Username: "x@example.com", Queue: tasks.QueueSignup,
			Status: outcome.StatusDeadLetter, Reason: outcome.ReasonInvalid, FinishedAt: now},
		{TaskID: "other", ProjectID: testProject, Username: "jane@example.com", Queue: tasks.QueueSignup,
			Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, HTTPStatus: 404, ErrorCode: "003-002", FinishedAt: now},
	} {
		if _, err := store.Finish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}

	if r := runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL); r.code != 2 || !strings.Contains(r.stderr, "needs a filter") {
		t.Errorf("replay without a filter: %+v", r)
	}
	r := runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--code", "003-022", "--dry-run", "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != `{"matched":1,"replayed":1,"already_replayed":0,"still_invalid":0,"dry_run":true}` {
		t.Fatalf("dry run: %+v", r)
	}
	if q, _ := ins.GetQueueInfo(tasks.QueueSignup); q.Archived != 1 {
		t.Fatalf("dry run changed the archive: %+v", q)
	}

	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--code", "003-022", "--json")
	var sum enqueue.ReplaySummary
	if err := json.Unmarshal([]byte(r.stdout), &sum); r.code != 0 || err != nil || sum.Replayed != 1 {
		t.Fatalf("replay: %+v (%v)", r, err)
	}
	bulk, err := ins.ListPendingTasks(tasks.QueueBulk)
	if err != nil || len(bulk) != 1 {
		t.Fatalf("bulk queue after replay: %v, %v", bulk, err)
	}
	replayed, err := tasks.Decode(bulk[0].Payload)
	if err != nil || replayed.Username != "john@example.com" || replayed.LoginURL != "https://example.com/cb" {
		t.Errorf("replayed task = %+v, %v", replayed, err)
	}
	if q, _ := ins.GetQueueInfo(tasks.QueueSignup); q.Archived != 0 {
		t.Errorf("the replayed dead letter is still in asynq's archive: %+v", q)
	}

	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--code", "003-022")
	if r.code != 0 || !strings.Contains(r.stdout, "already replayed 1") {
		t.Errorf("second replay: %+v", r)
	}
	if n, _ := ins.ListPendingTasks(tasks.QueueBulk); len(n) != 1 {
		t.Errorf("second replay enqueued again: %d pending", len(n))
	}

	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--reason", "rejected", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "2 dead letters matched: would replay (dry run) 1, already replayed 1, still invalid 0") {
		t.Errorf("dry run after a replay: %+v", r)
	}
	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--reason", "invalid", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "would replay (dry run) 0, already replayed 0, still invalid 1") {
		t.Errorf("dry run of an invalid dead letter: %+v", r)
	}
	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--reason", "invalid")
	if r.code != 0 || !strings.Contains(r.stdout, "still invalid 1") {
		t.Errorf("invalid replay: %+v", r)
	}
	r = runCLI(t, nil, "dlq", "list", "--redis-url", srv.URL, "--code", "003-002")
	if r.code != 0 || !strings.Contains(r.stdout, "jane@example.com") || strings.Contains(r.stdout, "john@") {
		t.Errorf("dlq list: %+v", r)
	}
}
