package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the resendq command once for the process tests.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "resendq-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "resendq")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// TestWorkerProcessSIGTERMFinishesInFlight runs the real binary, sends it
// SIGTERM while calls are in flight and checks that they finish, are
// recorded once, and that the process exits 0.
func TestWorkerProcessSIGTERMFinishesInFlight(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	api := fake.New()
	api.SetDefault(fake.Behavior{Latency: 700 * time.Millisecond})
	httpSrv := httptest.NewServer(api)
	defer httpSrv.Close()

	const n = 5
	enq := enqueue.New(rdb, enqueue.Options{})
	for i := 0; i < n; i++ {
		if _, err := enq.Enqueue(context.Background(), tasks.Resend{ProjectID: testProject, Username: fmt.Sprintf("user%d@example.com", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "worker", "--redis-url", srv.URL, "--api-base", httpSrv.URL+"/api", "--concurrency", "10", "--log-format", "json")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for api.Total() < n {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("calls never started; worker output:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("worker exited with %v; output:\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("worker did not exit after SIGTERM; output:\n%s", logs.String())
	}
	st, err := outcome.NewStore(rdb, outcome.Options{}).Stats(context.Background())
	if err != nil || st.Sent != n {
		t.Errorf("stats after SIGTERM = %+v, %v; want %d sent", st, err, n)
	}
	if api.Total() != n {
		t.Errorf("the API got %d calls for %d tasks", api.Total(), n)
	}
	if bytes.Contains(logs.Bytes(), []byte("user0@example.com")) {
		t.Errorf("an unmasked email address in the logs:\n%s", logs.String())
	}
	if !bytes.Contains(logs.Bytes(), []byte(`"username":"us***@example.com"`)) {
		t.Errorf("no masked per-outcome log line:\n%s", logs.String())
	}
}
