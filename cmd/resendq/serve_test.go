package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
)

// TestServeAlone: `resendq serve` enqueues over HTTP and tells where a
// resend stands, processes nothing, and keeps the producer token to its
// routes.
func TestServeAlone(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	addr := freeAddr(t)
	cli := startCLI(t, map[string]string{"RESENDQ_HTTP_TOKEN": "t0ken", "RESENDQ_PRODUCER_TOKEN": "pr0ducer"},
		"serve", "--redis-url", srv.URL, "--http-addr", addr, "--log-format", "json")
	stderr := &cli.stderr
	call := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	waitUntil(t, 30*time.Second, func() bool { s, _ := call("GET", "/healthz", "", ""); return s == http.StatusOK }, "serve to answer /healthz")

	status, body := call("POST", "/api/v1/resends", "pr0ducer", `{"project_id":"6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11","username":"john@example.com"}`)
	var res struct {
		TaskID string `json:"task_id"`
	}
	if err := json.Unmarshal([]byte(body), &res); status != http.StatusAccepted || err != nil || res.TaskID == "" {
		t.Fatalf("POST /api/v1/resends: %d %s", status, body)
	}
	// Nothing processes it here: it stays pending.
	if status, body := call("GET", "/api/v1/resends/"+res.TaskID, "pr0ducer", ""); status != http.StatusOK || !strings.Contains(body, `"state":"pending"`) {
		t.Errorf("GET the resend: %d %s", status, body)
	}
	if status, _ := call("GET", "/metrics", "pr0ducer", ""); status != http.StatusForbidden {
		t.Errorf("GET /metrics with the producer token: %d, want 403", status)
	}
	if status, body := call("GET", "/api/v1/outcomes/stats", "t0ken", ""); status != http.StatusOK {
		t.Errorf("GET /api/v1/outcomes/stats: %d %s", status, body)
	}
	cli.stop(t)
	if strings.Contains(stderr.String(), "john@example.com") || strings.Contains(stderr.String(), "pr0ducer") {
		t.Errorf("the log shows a username or a token:\n%s", stderr.String())
	}
}

func TestServeNeedsAnAddress(t *testing.T) {
	t.Parallel()
	r := runCLI(t, nil, "serve", "--http-addr", "")
	if r.code != 2 || !strings.Contains(r.stderr, "--http-addr") {
		t.Errorf("serve without an address: exit %d, stderr %q", r.code, r.stderr)
	}
}
