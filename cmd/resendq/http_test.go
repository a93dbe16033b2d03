package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
)

func TestHTTPFlagValidation(t *testing.T) {
	t.Parallel()
	// Redis at port 1 never answers: a command line that passes validation
	// fails later with exit status 1, one that does not exits with 2.
	const noRedis = "redis://127.0.0.1:1/0"
	for _, c := range []struct {
		args string
		env  map[string]string
		code int
		want string
	}{
		{"--http-addr 0.0.0.0:8080", nil, 2, "--http-token"},
		{"--http-addr :8080", nil, 2, "--http-token"},
		{"--http-addr 10.1.2.3:8080 --ui-write", nil, 2, "RESENDQ_HTTP_TOKEN"},
		{"--http-addr 8080", nil, 2, `--http-addr "8080": want host:port`},
		{"--http-addr 127.0.0.1:80800", nil, 2, "want host:port"},
		{`--http-addr 127.0.0.1:8080 --http-token=two\x20words`, nil, 2, "--http-token"},
		{"--http-addr 0.0.0.0:8080 --http-insecure", nil, 1, "cannot reach Redis"},
		{"--http-addr 0.0.0.0:8080 --http-token t0ken", nil, 1, "cannot reach Redis"},
		{"--http-addr 0.0.0.0:8080", map[string]string{"RESENDQ_HTTP_TOKEN": "t0ken"}, 1, "cannot reach Redis"},
		{"--http-addr 127.0.0.1:8080", nil, 1, "cannot reach Redis"},
		{"--http-addr [::1]:8080", nil, 1, "cannot reach Redis"},
		{"--http-addr localhost:8080", nil, 1, "cannot reach Redis"},
		{"--http-addr 127.0.0.1:8080 --producer-token p0", nil, 2, "--producer-token needs --http-token"},
		{"--http-addr 127.0.0.1:8080 --producer-token t0ken --http-token t0ken", nil, 2, "must differ"},
		{"--http-addr 127.0.0.1:8080 --idempotency-window 10s", nil, 2, "--idempotency-window 10s"},
		{"--http-addr 127.0.0.1:8080 --dedup-window -1s", nil, 2, "--dedup-window -1s"},
		{"--http-addr 127.0.0.1:8080 --outcome-retention 2h", nil, 2, "must not outlast --outcome-retention 2h"},
		{"--http-addr 127.0.0.1:8080 --producer-token p0 --http-token t0ken", nil, 1, "cannot reach Redis"},
	} {
		args := strings.Fields(c.args)
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], `\x20`, " ")
		}
		r := runCLI(t, c.env, append([]string{"worker", "--redis-url", noRedis}, args...)...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("worker %s (env %v): exit %d, stderr %q; want %d and %q", c.args, c.env, r.code, r.stderr, c.code, c.want)
		}
	}
}

// freeAddr returns a local address that nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// lockedBuffer is a bytes.Buffer that a command may write while a test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestWorkerServesHTTP(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	addr := freeAddr(t)
	cli := startCLI(t, map[string]string{"RESENDQ_HTTP_TOKEN": "t0ken"},
		"worker", "--redis-url", srv.URL, "--http-addr", addr, "--log-format", "json")
	stderr := &cli.stderr

	get := func(path, user, password string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if password != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if status, _ := get("/healthz", "", ""); status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz never answered 200; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range []struct {
		path, password string
		status         int
		want           string
	}{
		{"/readyz", "", 200, "ok"},
		{"/metrics", "", 401, "unauthorized"},
		{"/metrics", "t0ken", 200, "resendq_outcomes_total"},
		{"/monitoring/", "wrong", 401, "unauthorized"},
		{"/monitoring/", "t0ken", 200, "<title>Asynq - Monitoring</title>"},
		{"/api/v1/outcomes/stats", "t0ken", 200, `"by_reason"`},
	} {
		if status, body := get(c.path, "ops", c.password); status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("GET %s (password %q): %d %.200q, want %d and %q", c.path, c.password, status, body, c.status, c.want)
		}
	}
	if !strings.Contains(stderr.String(), `"msg":"http server listening"`) {
		t.Errorf("no log line for the HTTP server; stderr:\n%s", stderr.String())
	}

	cli.stop(t)
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("the HTTP server still listens after the worker stopped")
	}
}

func TestDevBannerShowsUI(t *testing.T) {
	t.Parallel()
	r := runCLI(t, nil, "dev", "--demo", "2", "--once", "--redis-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--log-level", "error")
	if r.code != 0 {
		t.Fatalf("dev: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "Web UI    http://127.0.0.1:") || !strings.Contains(r.stdout, "/monitoring/ (also http://127.0.0.1:") {
		t.Errorf("dev banner lacks the UI address:\n%s", r.stdout)
	}
	r = runCLI(t, nil, "dev", "--http-addr", "0.0.0.0:8080")
	if r.code != 2 || !strings.Contains(r.stderr, "--http-token") {
		t.Errorf("dev on all interfaces without a token: exit %d, stderr %q; want 2 naming --http-token", r.code, r.stderr)
	}
}

// bgCLI is a command line running in-process until stop.
type bgCLI struct {
	name   string
	cancel context.CancelFunc
	exited chan int
	stderr lockedBuffer
}

// startCLI runs a command line in-process with the given environment
// variables only, until the test stops it (or ends).
func startCLI(t *testing.T, env map[string]string, args ...string) *bgCLI {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &bgCLI{name: args[0], cancel: cancel, exited: make(chan int, 1)}
	go func() {
		var stdout lockedBuffer
		lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
		c.exited <- run(ctx, args, lookup, strings.NewReader(""), &stdout, &c.stderr)
	}()
	return c
}

// stop cancels the command's context and waits for its exit status, which
// must be 0.
func (c *bgCLI) stop(t *testing.T) {
	t.Helper()
	c.cancel()
	select {
	case code := <-c.exited:
		if code != 0 {
			t.Errorf("%s exit status %d after cancel; stderr:\n%s", c.name, code, c.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop within 30s", c.name)
	}
}
