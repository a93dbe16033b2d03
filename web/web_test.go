package web_test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/web"
)

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

func TestAuthRules(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	protected := []string{
		"/metrics", "/monitoring/", "/monitoring/api/queues", "/api/v1/outcomes", "/api/v1/outcomes/stats", "/",
	}
	creds := []struct {
		name string
		auth string
		ok   bool
	}{
		{"missing", "", false},
		{"wrong bearer", "Bearer not-the-token", false},
		{"bearer with a suffix", bearer() + "x", false},
		{"empty bearer", "Bearer ", false},
		{"right bearer", bearer(), true},
		{"right bearer, scheme in lower case", "bearer " + testToken, true},
		{"basic, token as password", basic("ops", testToken), true},
		{"basic, no user name", basic("", testToken), true},
		{"basic, wrong password", basic("ops", "nope"), false},
		{"basic, token as user name", basic(testToken, ""), false},
		{"token without a scheme", testToken, false},
	}
	for _, path := range protected {
		for _, c := range creds {
			status, body := b.get(t, path, c.auth)
			if c.ok {
				if status == http.StatusUnauthorized || status >= 400 {
					t.Errorf("GET %s with %s: %d, want success", path, c.name, status)
				}
				continue
			}
			want := "unauthorized\n"
			if strings.HasPrefix(path, "/api/") { // the API's errors are JSON
				want = `{"error":{"code":"unauthorized","message":"send the token as \"Authorization: Bearer \u003ctoken\u003e\""}}` + "\n"
			}
			if status != http.StatusUnauthorized || body != want {
				t.Errorf("GET %s with %s: %d %q, want 401 %q", path, c.name, status, body, want)
			}
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if status, _ := b.get(t, path, ""); status != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want 200", path, status)
		}
	}
}

func TestUnauthorizedAsksForBasic(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	resp, err := http.Get(b.http.URL + "/monitoring/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="resendq"`) {
		t.Errorf("WWW-Authenticate %q, want a Basic challenge so that browsers prompt", got)
	}
}

func TestNoTokenLeavesEverythingOpen(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) { o.Token = "" })
	for _, path := range []string{"/metrics", "/monitoring/", "/api/v1/outcomes/stats"} {
		if status, _ := b.get(t, path, ""); status != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", path, status)
		}
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.redis.Stop()
	if status, body := b.get(t, "/healthz", ""); status != http.StatusOK || body != "ok\n" {
		t.Errorf("GET /healthz with Redis stopped: %d %q, want 200 \"ok\"", status, body)
	}
}

func TestReadyzFollowsRedis(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	if status, body := b.get(t, "/readyz", ""); status != http.StatusOK || body != "ok\n" {
		t.Fatalf("GET /readyz: %d %q, want 200 \"ok\"", status, body)
	}
	b.redis.Stop()
	status, body := b.get(t, "/readyz", "")
	if status != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz with Redis stopped: %d, want 503", status)
	}
	if body != "not ready: redis: dial: connect: connection refused\n" {
		t.Errorf("GET /readyz with Redis stopped: body %q, want the reason, without Redis's address", body)
	}
}

func TestRootRedirectsToUI(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	resp := mustDo(t, b, http.MethodGet, "/", bearer())
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/monitoring/" {
		t.Errorf("GET /: %d to %q, want 302 to /monitoring/", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestUIIsServed(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	status, body := b.get(t, "/monitoring/", bearer())
	if status != http.StatusOK || !strings.Contains(body, `window.FLAG_ROOT_PATH="\/monitoring"`) || !strings.Contains(body, `window.FLAG_READ_ONLY="true"`) {
		t.Errorf("GET /monitoring/: %d, want the UI's index page rooted at /monitoring, read-only; got %.300q", status, body)
	}
	status, body = b.get(t, "/monitoring/queues/signup?status=archived", bearer())
	if status != http.StatusOK || !strings.Contains(body, `<div id="root">`) {
		t.Errorf("GET a UI route: %d, want the index page", status)
	}
	status, body = b.get(t, "/monitoring/api/queues", bearer())
	if status != http.StatusOK || !strings.Contains(body, `"queues"`) {
		t.Errorf("GET /monitoring/api/queues: %d %q", status, body)
	}
}

func TestUIReadOnlyUnlessUIWrite(t *testing.T) {
	t.Parallel()
	sameOrigin := http.Header{"Sec-Fetch-Site": {"same-origin"}}
	ro := setup(t, nil)
	status, body := ro.do(t, http.MethodPost, "/monitoring/api/queues/signup:pause", bearer(), sameOrigin)
	if status != http.StatusMethodNotAllowed || !strings.Contains(body, "read-only") {
		t.Errorf("pause a queue, read-only UI: %d %q, want 405 read-only", status, body)
	}
	status, _ = ro.do(t, http.MethodDelete, "/monitoring/api/queues/signup/archived_tasks:delete_all", bearer(), sameOrigin)
	if status != http.StatusMethodNotAllowed {
		t.Errorf("delete archived tasks, read-only UI: %d, want 405", status)
	}

	rw := setup(t, func(o *web.Options) { o.UIWrite = true })
	if status, body := rw.get(t, "/monitoring/", bearer()); !strings.Contains(body, `window.FLAG_READ_ONLY="false"`) {
		t.Errorf("GET /monitoring/ with UIWrite: %d, want the UI not read-only", status)
	}
	if _, err := asynq.NewClientFromRedisClient(rw.rdb).Enqueue(asynq.NewTask(tasks.TypeResend, nil), asynq.Queue("signup")); err != nil {
		t.Fatal(err)
	}
	status, body = rw.do(t, http.MethodPost, "/monitoring/api/queues/signup:pause", bearer(), sameOrigin)
	if status != http.StatusNoContent {
		t.Errorf("pause a queue with UIWrite: %d %q, want 204", status, body)
	}
	if info, err := asynq.NewInspectorFromRedisClient(rw.rdb).GetQueueInfo("signup"); err != nil || !info.Paused {
		t.Errorf("queue after pause with UIWrite: %+v, %v; want paused", info, err)
	}
}

func TestCrossOriginWritesAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) { o.UIWrite = true })
	status, _ := b.do(t, http.MethodPost, "/monitoring/api/queues/signup/archived_tasks:run_all", bearer(),
		http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://elsewhere.example"}})
	if status != http.StatusForbidden {
		t.Errorf("cross-site POST: %d, want 403", status)
	}
}

func TestMetricsAfterKnownOutcomes(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.runWorker(t,
		"alice@example.com", "bob@example.com", "carol@example.com", // 204: sent
		"unknown.1@example.com", "unknown.2@example.com", // 404 003-002: rejected
		"down.1@example.com", // 500 twice (MaxAttempts 2): exhausted
	)
	status, body := b.get(t, "/metrics", bearer())
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	missing := missingLines(body,
		`resendq_outcomes_total{code="",reason="",status="sent"} 3`,
		`resendq_outcomes_total{code="003-002",reason="rejected",status="dead_letter"} 2`,
		`resendq_outcomes_total{code="0",reason="exhausted",status="dead_letter"} 1`,
		`resendq_outcomes_total{code="",reason="rate_limited",status="dead_letter"} 0`,
		`resendq_api_requests_total{status="204"} 3`,
		`resendq_api_requests_total{status="404"} 2`,
		`resendq_api_requests_total{status="500"} 2`,
		`resendq_api_requests_total{status="error"} 0`,
		`resendq_api_request_duration_seconds_count 7`,
		`resendq_retries_total{cause="server_error"} 1`,
		`resendq_retries_total{cause="rate_limited"} 0`,
		`asynq_tasks_enqueued_total{queue="signup",state="archived"} 3`,
		`asynq_tasks_enqueued_total{queue="signup",state="pending"} 0`,
		`asynq_queue_size{queue="signup"} 3`,
		`asynq_queue_latency_seconds{queue="signup"} 0`,
		`asynq_tasks_processed_total{queue="signup"} 7`,
		`resendq_redis_up 1`,
	)
	if len(missing) > 0 {
		t.Errorf("/metrics lacks:\n%s\n\nit has:\n%s", strings.Join(missing, "\n"), grep(body, "resendq_", "asynq_"))
	}
}

// grep keeps the lines of s that start with one of prefixes.
func grep(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func mustDo(t *testing.T, b *bundle, method, path, auth string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, b.http.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}
