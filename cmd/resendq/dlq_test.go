package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

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
	if r.code != 0 || strings.TrimSpace(r.stdout) != `{"matched":1,"replayed":1,"already_replayed":0,"superseded":0,"still_invalid":0,"dry_run":true}` {
		t.Fatalf("dry run: %+v", r)
	}
	if q, _ := ins.GetQueueInfo(tasks.QueueSignup); q.Archived != 1 {
		t.Fatalf("dry run changed the archive: %+v", q)
	}

	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--code", "003-022", "--json")
	if r.code != 2 || !strings.Contains(r.stderr, "pass --yes") {
		t.Fatalf("replay without --yes and without a terminal: %+v", r)
	}
	if q, _ := ins.GetQueueInfo(tasks.QueueSignup); q.Archived != 1 {
		t.Fatalf("a refused replay changed the archive: %+v", q)
	}
	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--code", "003-022", "--json", "--yes")
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
	if r.code != 0 || !strings.Contains(r.stdout, "2 dead letters matched: would replay (dry run) 1, already replayed 1, superseded 0, still invalid 0") {
		t.Errorf("dry run after a replay: %+v", r)
	}
	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--reason", "invalid", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "would replay (dry run) 0, already replayed 0, superseded 0, still invalid 1") {
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

// deadLetters writes dead-letter records, each with its task in asynq's
// archive of the signup queue, finished at the given time.
func deadLetters(t *testing.T, rdb *redis.Client, at time.Time, recs ...outcome.Record) {
	t.Helper()
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(rdb)
	ins := asynq.NewInspectorFromRedisClient(rdb)
	store := outcome.NewStore(rdb, outcome.Options{})
	for _, rec := range recs {
		task, _ := tasks.NewTask(tasks.Resend{ProjectID: rec.ProjectID, Username: rec.Username})
		if _, err := client.Enqueue(task, tasks.Options(tasks.QueueSignup, rec.TaskID)...); err != nil {
			t.Fatal(err)
		}
		if err := ins.ArchiveTask(tasks.QueueSignup, rec.TaskID); err != nil {
			t.Fatal(err)
		}
		rec.Queue, rec.Status, rec.FinishedAt = tasks.QueueSignup, outcome.StatusDeadLetter, at
		if rec.Reason == "" {
			rec.Reason, rec.HTTPStatus = outcome.ReasonRejected, 404
		}
		if _, err := store.Finish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
}

func deadLetter(id, user, code string) outcome.Record {
	return outcome.Record{TaskID: id, ProjectID: testProject, Username: user, ErrorCode: code}
}

func dlqStats(t *testing.T, url string) outcome.DeadLetterStats {
	t.Helper()
	r := runCLI(t, nil, "dlq", "stats", "--redis-url", url, "--json")
	var st outcome.DeadLetterStats
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil {
		t.Fatalf("dlq stats: %+v (%v)", r, err)
	}
	return st
}

func TestDLQStatsReplayStateSupersededAndPurge(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	ins := asynq.NewInspectorFromRedisClient(rdb)
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	deadLetters(t, rdb, at,
		deadLetter("nf-a", "a@example.com", "003-002"), deadLetter("nf-b", "b@example.com", "003-002"), deadLetter("nf-c", "c@example.com", "003-002"),
		deadLetter("cb-d", "d@example.com", "010-012"), deadLetter("cb-e", "e@example.com", "010-012"),
		deadLetter("sup-f", "f@example.com", "003-061"), // sent since, below
		deadLetter("twice-g1", "g@example.com", "0"), deadLetter("twice-g2", "g@example.com", "0"),
	)
	if _, err := outcome.NewStore(rdb, outcome.Options{}).Finish(ctx, outcome.Record{
		TaskID: "sent-f", ProjectID: testProject, Username: "f@example.com", Queue: tasks.QueueSignup, Status: outcome.StatusSent, HTTPStatus: 204,
	}); err != nil {
		t.Fatal(err)
	}
	if st := dlqStats(t, srv.URL); st.Total != 8 || st.Open != 8 || st.ByCode["003-002"].Open != 3 || !st.Oldest.Equal(at) {
		t.Fatalf("stats before: %+v", st)
	}
	r := runCLI(t, nil, "dlq", "stats", "--redis-url", srv.URL)
	if r.code != 0 || !strings.Contains(r.stdout, "open 8") || !strings.Contains(r.stdout, "code 003-002") {
		t.Errorf("dlq stats: %+v", r)
	}

	// Replay by code; the replayed ones are marked and link to their replays.
	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--code", "010-012", "--yes")
	if r.code != 0 || !strings.Contains(r.stdout, "2 dead letters matched: replayed 2") {
		t.Fatalf("replay: %+v", r)
	}
	if !strings.Contains(r.stderr, `audit="dlq replay"`) || !strings.Contains(r.stderr, "code=010-012") {
		t.Errorf("no audit line: %s", r.stderr)
	}
	pending, _ := ins.ListPendingTasks(tasks.QueueBulk)
	replayOf := map[string]string{}
	for _, p := range pending {
		rs, err := tasks.Decode(p.Payload)
		if err != nil {
			t.Fatal(err)
		}
		replayOf[rs.ReplayOf] = p.ID
	}
	for _, id := range []string{"cb-d", "cb-e"} {
		rec, _, _ := outcome.NewStore(rdb, outcome.Options{}).Get(ctx, id)
		if rec.ReplayedAs == "" || replayOf[id] != rec.ReplayedAs || rec.ReplayedAt.IsZero() {
			t.Errorf("%s: replayed as %q at %v; the replay's tasks: %v", id, rec.ReplayedAs, rec.ReplayedAt, replayOf)
		}
	}
	if st := dlqStats(t, srv.URL); st.Open != 6 || st.Replayed != 2 || st.ByCode["010-012"].Open != 0 || st.ByCode["010-012"].Replayed != 2 || !st.ByCode["010-012"].Newest.Equal(at) {
		t.Fatalf("stats after the replay: %+v", st)
	}
	r = runCLI(t, nil, "dlq", "list", "--redis-url", srv.URL, "--state", "open", "--all")
	if r.code != 0 || strings.Contains(r.stdout, "d@example.com") || !strings.Contains(r.stdout, "a@example.com") {
		t.Errorf("open dead letters: %+v", r)
	}
	r = runCLI(t, nil, "dlq", "list", "--redis-url", srv.URL, "--state", "replayed")
	if r.code != 0 || !strings.Contains(r.stdout, "replayed as "+replayOf["cb-d"]) {
		t.Errorf("replayed dead letters: %+v", r)
	}

	// A user sent an email since, and a user with two dead letters: one email at most.
	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--code", "003-061", "--yes")
	if r.code != 0 || !strings.Contains(r.stdout, "replayed 0, already replayed 0, superseded 1") {
		t.Errorf("superseded by a sent email: %+v", r)
	}
	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--code", "0", "--yes")
	if r.code != 0 || !strings.Contains(r.stdout, "replayed 1, already replayed 0, superseded 1") {
		t.Errorf("two dead letters of one user: %+v", r)
	}

	// In any order of selection, the newest open dead letter of a user is the one replayed.
	deadLetters(t, rdb, at.Add(-time.Minute), deadLetter("older-h", "h@example.com", "1"))
	deadLetters(t, rdb, at, deadLetter("newer-h", "h@example.com", "1"))
	r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--task-id", "older-h,newer-h", "--yes")
	if r.code != 0 || !strings.Contains(r.stdout, "replayed 1, already replayed 0, superseded 1") {
		t.Errorf("two dead letters of one user by task ID, the older first: %+v", r)
	}
	if rec, _, _ := outcome.NewStore(rdb, outcome.Options{}).Get(ctx, "newer-h"); rec.ReplayedAs == "" {
		t.Errorf("the newer dead letter was not the one replayed: %+v", rec)
	}
	if r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--task-id", "older-h", "--yes"); !strings.Contains(r.stdout, "superseded 1") {
		t.Errorf("the older one while the newer one's replay is on its way: %+v", r)
	}

	// Task IDs select by themselves, and name what they do not find.
	if r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--task-id", "nf-a", "--code", "003-002"); r.code != 2 {
		t.Errorf("task IDs and a filter: %+v", r)
	}
	if r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--task-id", "nf-a,no-such-task", "--yes"); r.code != 2 || !strings.Contains(r.stderr, "no-such-task") {
		t.Errorf("an unknown task ID: %+v", r)
	}
	if r = runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--task-id", "sent-f", "--yes"); r.code != 2 || !strings.Contains(r.stderr, "sent-f is sent, not a dead letter") {
		t.Errorf("a sent task's ID: %+v", r)
	}

	// Purge: refused without --yes, counted with --dry-run, done with --yes.
	r = runCLI(t, nil, "dlq", "purge", "--redis-url", srv.URL, "--code", "003-002")
	if r.code != 2 || !strings.Contains(r.stdout+r.stderr, "3 dead letters matched") {
		t.Fatalf("purge without --yes: %+v", r)
	}
	if q, _ := ins.GetQueueInfo(tasks.QueueSignup); q.Archived != 6 { // 10, less the 4 replayed
		t.Fatalf("archive after a refused purge: %d", q.Archived)
	}
	r = runCLI(t, nil, "dlq", "purge", "--redis-url", srv.URL, "--reason", "rejected", "--code", "003-002", "--yes", "--json")
	var sum enqueue.PurgeSummary
	if err := json.Unmarshal([]byte(r.stdout), &sum); r.code != 0 || err != nil || sum != (enqueue.PurgeSummary{Matched: 3, Purged: 3, Archived: 3}) {
		t.Fatalf("purge: %+v (%v)", r, err)
	}
	if q, _ := ins.GetQueueInfo(tasks.QueueSignup); q.Archived != 3 {
		t.Errorf("archive after the purge: %d, want 3 (sup-f, twice-g1, older-h)", q.Archived)
	}
	if st := dlqStats(t, srv.URL); st.Total != 7 || st.ByCode["003-002"] != (outcome.OpenReplayed{}) {
		t.Errorf("stats after the purge: %+v", st)
	}
	if r = runCLI(t, nil, "dlq", "purge", "--redis-url", srv.URL, "--code", "003-002", "--yes"); r.code != 0 || !strings.Contains(r.stdout, "0 dead letters matched") {
		t.Errorf("purge again: %+v", r)
	}
}

func TestDLQReplayAfterALostReplayACrashAndWithAResendQueued(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	store := outcome.NewStore(rdb, outcome.Options{})
	ins := asynq.NewInspectorFromRedisClient(rdb)
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)

	// A replay deleted before it finished does not hold the user's next dead letter back.
	deadLetters(t, rdb, at, deadLetter("lost-a", "k@example.com", "5"))
	if r := runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--task-id", "lost-a", "--yes"); !strings.Contains(r.stdout, "replayed 1") {
		t.Fatalf("first replay: %+v", r)
	}
	a, _, _ := store.Get(ctx, "lost-a")
	if err := ins.DeleteTask(tasks.QueueBulk, a.ReplayedAs); err != nil {
		t.Fatal(err)
	}
	deadLetters(t, rdb, at.Add(time.Minute), deadLetter("next-b", "k@example.com", "5"))
	if r := runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--task-id", "next-b", "--yes"); !strings.Contains(r.stdout, "replayed 1, already replayed 0, superseded 0") {
		t.Errorf("after a lost replay: %+v", r)
	}

	// A replay that stopped after its enqueue and before its mark is marked by the next run.
	deadLetters(t, rdb, at, deadLetter("crash-c", "m@example.com", "5"))
	if err := rdb.Set(ctx, "resendq:replayed:crash-c", "the-replay", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--task-id", "crash-c", "--yes"); !strings.Contains(r.stdout, "replayed 0, already replayed 1") {
		t.Errorf("after a crash: %+v", r)
	}
	if c, _, _ := store.Get(ctx, "crash-c"); c.ReplayedAs != "the-replay" {
		t.Errorf("the dead letter is not marked: %+v", c)
	}

	// A resend of the user still queued (any spelling of the address) supersedes the replay.
	deadLetters(t, rdb, at, deadLetter("queued-d", "n@example.com", "5"))
	if _, err := enqueue.New(rdb, enqueue.Options{}).Enqueue(ctx, tasks.Resend{ProjectID: testProject, Username: "N@Example.com"}); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, nil, "dlq", "replay", "--redis-url", srv.URL, "--task-id", "queued-d", "--yes"); !strings.Contains(r.stdout, "replayed 0, already replayed 0, superseded 1") {
		t.Errorf("with a resend queued: %+v", r)
	}
}
