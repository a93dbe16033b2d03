package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/web"
)

// deadLetters writes dead-letter records of the given codes, a user each.
func (b *bundle) deadLetters(t *testing.T, codes ...string) {
	t.Helper()
	at := time.Now().Add(-time.Minute)
	for i, code := range codes {
		id := code + "-" + string(rune('a'+i))
		rec := outcome.Record{TaskID: id, ProjectID: projectID, Username: id + "@example.com", Queue: tasks.QueueSignup,
			Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, HTTPStatus: 400, ErrorCode: code, FinishedAt: at}
		if _, err := b.store.Finish(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDeadLettersAPIReadsWithoutWriteAccessAndChangesWithIt(t *testing.T) {
	t.Parallel()
	for _, write := range []bool{false, true} {
		b := setup(t, func(o *web.Options) { o.UIWrite, o.ProducerToken = write, producerToken })
		b.deadLetters(t, "010-012", "010-012", "003-002")

		a := b.call(t, http.MethodGet, "/api/v1/dead-letters?state=open&code=010-012", testToken, nil, "", true)
		var page outcome.Page
		if err := json.Unmarshal([]byte(a.body), &page); a.status != 200 || err != nil || len(page.Records) != 2 {
			t.Fatalf("list: %d %s", a.status, a.body)
		}
		a = b.call(t, http.MethodGet, "/api/v1/dead-letters?status=sent", testToken, nil, "", false)
		if code, field := a.apiError(t); a.status != 400 || code != "invalid" || field != "status" {
			t.Errorf("list with a status: %d %s", a.status, a.body)
		}
		a = b.call(t, http.MethodGet, "/api/v1/dead-letters/stats", testToken, nil, "", true)
		var st outcome.DeadLetterStats
		if err := json.Unmarshal([]byte(a.body), &st); a.status != 200 || err != nil || st.Open != 3 || st.ByCode["010-012"].Open != 2 {
			t.Fatalf("stats: %d %s", a.status, a.body)
		}
		for _, auth := range []string{"", producerToken} {
			if a := b.call(t, http.MethodPost, "/api/v1/dead-letters/replay", auth, nil, `{"code":"010-012"}`, false); a.status != 401 && a.status != 403 {
				t.Errorf("replay with token %q: %d %s", auth, a.status, a.body)
			}
		}
		a = b.call(t, http.MethodPost, "/api/v1/dead-letters/replay", testToken, nil, `{"code":"010-012","dry_run":true}`, true)
		var sum enqueue.ReplaySummary
		if err := json.Unmarshal([]byte(a.body), &sum); a.status != 200 || err != nil || sum != (enqueue.ReplaySummary{Matched: 2, Replayed: 2, DryRun: true}) {
			t.Fatalf("dry run: %d %s", a.status, a.body)
		}

		a = b.call(t, http.MethodPost, "/api/v1/dead-letters/replay", testToken, nil, `{"code":"010-012"}`, true)
		if !write {
			if code, _ := a.apiError(t); a.status != 403 || code != "forbidden" || !strings.Contains(a.body, "--ui-write") {
				t.Errorf("replay without write access: %d %s", a.status, a.body)
			}
			if a := b.call(t, http.MethodPost, "/api/v1/dead-letters/purge", testToken, nil, `{"code":"003-002"}`, true); a.status != 403 {
				t.Errorf("purge without write access: %d %s", a.status, a.body)
			}
			if pending, _ := asynq.NewInspectorFromRedisClient(b.rdb).ListPendingTasks(tasks.QueueBulk); len(pending) != 0 {
				t.Errorf("a refused replay enqueued %d tasks", len(pending))
			}
			continue
		}
		if err := json.Unmarshal([]byte(a.body), &sum); a.status != 200 || err != nil || sum != (enqueue.ReplaySummary{Matched: 2, Replayed: 2}) {
			t.Fatalf("replay: %d %s", a.status, a.body)
		}
		if pending, _ := asynq.NewInspectorFromRedisClient(b.rdb).ListPendingTasks(tasks.QueueBulk); len(pending) != 2 {
			t.Errorf("the replay enqueued %d tasks, want 2", len(pending))
		}
		a = b.call(t, http.MethodPost, "/api/v1/dead-letters/replay", testToken, nil, `{"code":"010-012"}`, true)
		if err := json.Unmarshal([]byte(a.body), &sum); a.status != 200 || err != nil || sum.Replayed != 0 || sum.AlreadyReplayed != 2 {
			t.Errorf("the same replay again: %d %s", a.status, a.body)
		}
		a = b.call(t, http.MethodPost, "/api/v1/dead-letters/purge", testToken, nil, `{"code":"003-002"}`, true)
		var purge enqueue.PurgeSummary
		if err := json.Unmarshal([]byte(a.body), &purge); a.status != 200 || err != nil || purge != (enqueue.PurgeSummary{Matched: 1, Purged: 1}) {
			t.Errorf("purge: %d %s", a.status, a.body)
		}
		if st, _ := b.store.DeadLetters(context.Background()); st.Total != 2 || st.Replayed != 2 {
			t.Errorf("after the replay and the purge: %+v", st)
		}
		for body, field := range map[string]string{
			`{}`:                                 "",
			`{"task_ids":["no-such-task"]}`:      "task_ids",
			`{"codes":"010-012"}`:                "codes",
			`{"code":"010-012","queue":"other"}`: "queue",
			`{"state":"closed"}`:                 "state",
		} {
			a := b.call(t, http.MethodPost, "/api/v1/dead-letters/replay", testToken, nil, body, false)
			if code, f := a.apiError(t); a.status != 400 || f != field || (code != "invalid" && code != "invalid_json") {
				t.Errorf("replay %s: %d %s, want 400 naming %q", body, a.status, a.body, field)
			}
		}
	}
}
