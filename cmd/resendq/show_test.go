package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
)

func TestOutcomesShow(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	store := outcome.NewStore(srv.Client(t), outcome.Options{})
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Millisecond).Add(-2 * time.Hour)
	history := []outcome.Attempt{
		{At: start, HTTPStatus: 503, ErrorCode: "0", Cause: outcome.CauseServerError, Latency: 12 * time.Millisecond, Error: "login api 503 0: Service Unavailable"},
		{At: start.Add(time.Minute), Cause: outcome.CauseTimeout, Latency: 10 * time.Second, Error: "login api: context deadline exceeded"},
		{At: start.Add(time.Hour), HTTPStatus: 429, ErrorCode: "0", Cause: outcome.CauseRateLimited, Latency: 3 * time.Millisecond},
	}
	for _, a := range history {
		if err := store.AddAttempt(ctx, "t1", a); err != nil {
			t.Fatal(err)
		}
	}
	rec := outcome.Record{TaskID: "t1", ProjectID: testProject, Username: "john@example.com", Queue: "signup", Status: outcome.StatusSent,
		HTTPStatus: 204, Attempts: 4, EnqueuedAt: start, FinishedAt: start.Add(2 * time.Hour)}
	if _, err := store.Finish(ctx, rec); err != nil {
		t.Fatal(err)
	}

	r := runCLI(t, nil, "outcomes", "show", "t1", "--redis-url", srv.URL)
	if r.code != 0 {
		t.Fatalf("show: %+v", r)
	}
	for _, want := range []string{"john@example.com", "sent", "(2h0m0s after it was enqueued)", "3 attempts before the last one, oldest first"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show lacks %q:\n%s", want, r.stdout)
		}
	}
	_, table, ok := strings.Cut(r.stdout, "oldest first:\n")
	if !ok {
		t.Fatalf("show prints no history table:\n%s", r.stdout)
	}
	rows := strings.Split(strings.TrimSpace(table), "\n")[1:] // below the header
	if len(rows) != 3 || !strings.Contains(rows[0], "server_error") || !strings.Contains(rows[0], "12ms") ||
		!strings.Contains(rows[1], "timeout") || !strings.Contains(rows[1], "context deadline exceeded") || !strings.Contains(rows[2], "429") {
		t.Errorf("history rows, oldest first:\n%s", strings.Join(rows, "\n"))
	}

	r = runCLI(t, nil, "outcomes", "show", "--username", "john@example.com", "--project-id", testProject, "--json", "--redis-url", srv.URL)
	var tl outcome.Timeline
	if err := json.Unmarshal([]byte(r.stdout), &tl); err != nil || r.code != 0 {
		t.Fatalf("show --username --json: %+v (%v)", r, err)
	}
	if tl.TaskID != "t1" || tl.Record == nil || tl.Record.Attempts != 4 || len(tl.History) != 3 ||
		tl.History[0].Cause != outcome.CauseServerError || tl.History[2].HTTPStatus != 429 || tl.History[1].Latency != 10*time.Second {
		t.Errorf("show --json = %+v", tl)
	}

	// A task still retrying has a history and no record yet.
	if err := store.AddAttempt(ctx, "t2", outcome.Attempt{HTTPStatus: 502, Cause: outcome.CauseServerError}); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, nil, "outcomes", "show", "t2", "--redis-url", srv.URL)
	if r.code != 0 || !strings.Contains(r.stdout, "not final yet") || !strings.Contains(r.stdout, "502") {
		t.Errorf("show of a running task: %+v", r)
	}
}

func TestOutcomesShowErrors(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nope"}, 1, "no outcome record and no attempt history for task nope"},
		{[]string{"--username", "nobody@example.com", "--project-id", testProject}, 1, "no outcome record of nobody@example.com in project " + testProject},
		{[]string{"t1", "--username", "john@example.com"}, 2, "not both"},
		{nil, 2, "give a TASK_ID"},
		{[]string{"--project-id", testProject}, 2, "--project-id goes with --username"},
		{[]string{"t1", "t2"}, 2, "accepts at most 1 arg"},
	} {
		r := runCLI(t, nil, append([]string{"outcomes", "show", "--redis-url", srv.URL}, c.args...)...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) || r.stdout != "" {
			t.Errorf("show %v: exit %d, stderr %q, stdout %q; want exit %d and %q", c.args, r.code, r.stderr, r.stdout, c.code, c.want)
		}
	}
}
