package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

const testProject = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"

// result is what one command line printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs a command line with the given environment variables only.
func runCLI(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code := run(context.Background(), args, lookup, strings.NewReader(""), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func TestEnqueueBadInputExits2AndWritesNothing(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--project-id", "nope", "--username", "j@example.com"}, "--project-id \"nope\" must be a UUID"},
		{[]string{"--project-id", testProject}, "--username is required"},
		{[]string{"--project-id", testProject, "--username", strings.Repeat("x", 256)}, "--username is 256 characters long"},
		{[]string{"--project-id", testProject, "--username", "j@example.com", "--login-url", "example.com/cb"}, "--login-url \"example.com/cb\" must be an absolute http(s) URL"},
		{[]string{"--project-id", testProject, "--username", "j@example.com", "--dedup-window", "soon"}, "invalid argument \"soon\" for \"--dedup-window\""},
		{[]string{"--project-id", testProject, "--username", "j@example.com", "extra"}, "unknown command"},
	}
	for _, c := range cases {
		r := runCLI(t, nil, append([]string{"enqueue", "--redis-url", srv.URL}, c.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 || r.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit 2 and one line naming %q", c.args, r.code, r.stderr, r.stdout, c.want)
		}
	}
	if keys := srv.Client(t).Keys(context.Background(), "*").Val(); len(keys) != 0 {
		t.Errorf("bad input wrote to Redis: %v", keys)
	}
}

func TestEnqueueFromEnvironmentAndDedup(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	env := map[string]string{"RESENDQ_REDIS_URL": srv.URL, "RESENDQ_PROJECT_ID": testProject}
	first := runCLI(t, env, "enqueue", "--username", "john@example.com")
	if first.code != 0 || len(strings.TrimSpace(first.stdout)) != 36 {
		t.Fatalf("enqueue: %+v", first)
	}
	again := runCLI(t, env, "enqueue", "--username", "john@example.com", "--json")
	var res struct {
		TaskID    string `json:"task_id"`
		Duplicate bool   `json:"duplicate"`
	}
	if err := json.Unmarshal([]byte(again.stdout), &res); err != nil || !res.Duplicate || res.TaskID != strings.TrimSpace(first.stdout) {
		t.Fatalf("second enqueue: %+v (%v); want the first task id as a duplicate", again, err)
	}
	info, err := asynq.NewInspectorFromRedisClient(srv.Client(t)).GetQueueInfo(tasks.QueueSignup)
	if err != nil || info.Pending != 1 {
		t.Errorf("signup queue: %+v, %v; want 1 pending", info, err)
	}
}

func TestBadEnvironmentValueIsNamed(t *testing.T) {
	t.Parallel()
	r := runCLI(t, map[string]string{"RESENDQ_CONCURRENCY": "many"}, "worker")
	if r.code != 2 || !strings.Contains(r.stderr, "RESENDQ_CONCURRENCY") {
		t.Errorf("exit %d, stderr %q; want 2 naming RESENDQ_CONCURRENCY", r.code, r.stderr)
	}
}

func TestUnreachableRedisHidesPassword(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	srv.Stop()
	url := "redis://:s3cret@" + srv.Addr + "/0"
	r := runCLI(t, nil, "enqueue", "--redis-url", url, "--project-id", testProject, "--username", "j@example.com")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach Redis") || strings.Contains(r.stderr, "s3cret") {
		t.Errorf("exit %d, stderr %q; want 1, a clear message and no password", r.code, r.stderr)
	}
	r = runCLI(t, nil, "outcomes", "stats", "--redis-url", "http://:s3cret@host/0")
	if r.code != 2 || strings.Contains(r.stderr, "s3cret") || !strings.Contains(r.stderr, "--redis-url") {
		t.Errorf("bad scheme: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestWorkerFlagValidation(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ args, want string }{
		{"--max-attempts 0", "--max-attempts 0"},
		{"--max-attempts 101", "between 1 and 100"},
		{"--queue-weights signup", "queue weights"},
		{"--log-format xml", "--log-format"},
		{"--backoff-initial 10s --backoff-max 1s", "--backoff-initial"},
		{"--api-rate -1", "--api-rate -1"},
		{"--rate-limit-pause-max -1s", "--rate-limit-pause-max -1s"},
		{"--outcome-retention 30m", "--outcome-retention 30m0s: must be at least 1h"},
	} {
		r := runCLI(t, nil, append([]string{"worker"}, strings.Fields(c.args)...)...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("worker %s: exit %d, stderr %q; want 2 and %q", c.args, r.code, r.stderr, c.want)
		}
	}
}

// TestWorkerBadProxyEnvironment: a proxy the Login API client cannot use
// is named as such, not as a bad --api-base.
func TestWorkerBadProxyEnvironment(t *testing.T) {
	srv := redistest.Start(t)
	t.Setenv("HTTPS_PROXY", "ftp://proxy.example.com")
	t.Setenv("NO_PROXY", "")
	r := runCLI(t, nil, "worker", "--redis-url", srv.URL)
	if r.code != 2 || !strings.Contains(r.stderr, "HTTPS_PROXY") || !strings.Contains(r.stderr, "ftp") || strings.Contains(r.stderr, "--api-base") {
		t.Errorf("exit %d, stderr %q; want 2 naming HTTPS_PROXY and its scheme", r.code, r.stderr)
	}
}

func TestOutcomesListAndStats(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	store := outcome.NewStore(srv.Client(t), outcome.Options{})
	now := time.Now().UTC().Truncate(time.Millisecond)
	recs := []outcome.Record{
		{TaskID: "t1", ProjectID: testProject, Username: "john@example.com", Queue: "signup", Status: outcome.StatusSent, HTTPStatus: 204, Attempts: 1, FinishedAt: now.Add(-2 * time.Second)},
		{TaskID: "t2", ProjectID: testProject, Username: "jane@example.com", Queue: "signup", Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, HTTPStatus: 404, ErrorCode: "003-002", ErrorDescription: "User not found.", Attempts: 1, FinishedAt: now.Add(-time.Second)},
	}
	for _, r := range recs {
		if _, err := store.Finish(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	r := runCLI(t, nil, "outcomes", "list", "--redis-url", srv.URL, "--json")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 {
		t.Fatalf("list: %+v", r)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"task_id": "t2", "status": "dead_letter", "reason": "rejected", "error_code": "003-002", "http_status": 404.0, "attempts": 1.0, "username": "jane@example.com"} {
		if got[k] != want {
			t.Errorf("list --json field %s = %v, want %v (line %s)", k, got[k], want, lines[0])
		}
	}
	r = runCLI(t, nil, "outcomes", "list", "--redis-url", srv.URL, "--username", "john@example.com")
	if r.code != 0 || !strings.Contains(r.stdout, "john@example.com") || strings.Contains(r.stdout, "jane@") {
		t.Errorf("list --username: %+v", r)
	}
	r = runCLI(t, nil, "outcomes", "list", "--redis-url", srv.URL, "--status", "lost")
	if r.code != 2 || !strings.Contains(r.stderr, `--status "lost": want one of sent, dead_letter`) {
		t.Errorf("bad --status: %+v", r)
	}
	// Checked before Redis is asked: the right exit status even with Redis down.
	r = runCLI(t, nil, "dlq", "list", "--redis-url", "redis://127.0.0.1:1/0", "--reason", "lost")
	if r.code != 2 || !strings.Contains(r.stderr, "--reason") {
		t.Errorf("bad --reason with Redis down: %+v", r)
	}
	r = runCLI(t, nil, "outcomes", "stats", "--redis-url", srv.URL, "--json")
	if want := `{"sent":1,"dead_letter":1,"by_reason":{"rejected":1},"by_code":{"003-002":1},"dead_by_project":{"` + testProject + `":1},` +
		`"replayed":0,"replayed_by_reason":{},"replayed_by_code":{},"replayed_by_project":{}}`; r.code != 0 || strings.TrimSpace(r.stdout) != want {
		t.Errorf("stats --json = %q, want %q", r.stdout, want)
	}
}

// TestDevDemoOnEmbeddedRedis runs the embedded default end to end: every
// outcome of the table, with no Redis and no network.
func TestDevDemoOnEmbeddedRedis(t *testing.T) {
	t.Parallel()
	r := runCLI(t, nil, "dev", "--demo", "12", "--once", "--redis-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--log-level", "error")
	if r.code != 0 {
		t.Fatalf("dev: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"in memory only", "resendq enqueue  --redis-url redis://127.0.0.1:", "7 sent, 5 dead-lettered (rejected 3, exhausted 1, invalid 1)", "003-002", "ratelimited.6@example.com"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dev output lacks %q:\n%s", want, r.stdout)
		}
	}
}
