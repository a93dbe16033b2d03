package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
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
	enqueueUsers(t, rdb, n)
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

// startWorker runs the real binary as a worker process.
func startWorker(t *testing.T, redisURL, apiBase string, logs *bytes.Buffer) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary(t), "worker", "--redis-url", redisURL, "--api-base", apiBase, "--concurrency", "10", "--log-format", "json", "--backoff-initial", "100ms")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestWorkerKilledMidCallLosesNothing kills a worker process with SIGKILL
// while its calls are in flight; asynq recovers the tasks once their lease
// has expired (about a minute) and a second worker process sends them. One
// task, from another producer, had no retry left: asynq's recoverer
// archives it without a word to the worker, and the second worker's sweep
// records it as a dead letter.
func TestWorkerKilledMidCallLosesNothing(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	api := fake.New()
	api.SetDefault(fake.Behavior{Latency: time.Hour})
	httpSrv := httptest.NewServer(api)
	defer httpSrv.Close()

	const n = 5
	enqueueUsers(t, rdb, n)
	last, err := tasks.NewTask(tasks.Resend{ProjectID: testProject, Username: "lastchance@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	lastInfo, err := asynq.NewClientFromRedisClient(rdb).Enqueue(last, asynq.Queue(tasks.QueueSignup), asynq.MaxRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	var logs1, logs2 bytes.Buffer
	first := startWorker(t, srv.URL, httpSrv.URL+"/api", &logs1)
	waitUntil(t, 30*time.Second, func() bool { return api.Total() >= n+1 }, "calls in flight")
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	killed := time.Now()

	api.SetDefault(fake.Behavior{})
	startWorker(t, srv.URL, httpSrv.URL+"/api", &logs2)
	store := outcome.NewStore(rdb, outcome.Options{})
	waitUntil(t, 3*time.Minute, func() bool {
		st, err := store.Stats(context.Background())
		return err == nil && st.Sent == n && st.DeadLetter == 1
	}, "every task sent by the second worker, and the one without retries recorded")
	t.Logf("all %d tasks recovered and sent %s after the kill", n, time.Since(killed).Round(time.Second))
	rec, ok, err := store.Get(context.Background(), lastInfo.ID)
	if err != nil || !ok || rec.Reason != outcome.ReasonExhausted || !strings.Contains(rec.ErrorDescription, "lease expired") || rec.Username != "lastchance@example.com" {
		t.Errorf("the task archived by asynq's recoverer: %+v, %v, %v", rec, ok, err)
	}
	if info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(tasks.QueueSignup, lastInfo.ID); err != nil || info.State != asynq.TaskStateArchived {
		t.Errorf("that task is %+v, %v; want it in asynq's archive", info, err)
	}
	for i := 0; i < n; i++ {
		rec, ok, err := store.Latest(context.Background(), testProject, fmt.Sprintf("user%d@example.com", i))
		if err != nil || !ok || rec.Status != outcome.StatusSent {
			t.Errorf("user%d: %+v %v %v", i, rec, ok, err)
		}
	}
}

func waitUntil(t *testing.T, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// enqueueUsers enqueues resends for user0@example.com ... user(n-1)@example.com.
func enqueueUsers(t *testing.T, rdb redis.UniversalClient, n int) {
	t.Helper()
	enq := enqueue.New(rdb, enqueue.Options{})
	for i := 0; i < n; i++ {
		if _, err := enq.Enqueue(context.Background(), tasks.Resend{ProjectID: testProject, Username: fmt.Sprintf("user%d@example.com", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTwoWorkerProcessesRideOutAnOutage: two real worker processes drain a
// backlog through an API that answers 503 to everything for a while, far
// longer than a task's own retries (3 attempts, 100ms apart) last. They
// share the project's circuit: once one opens it, neither calls but for a
// probe a second, and no resend is dead-lettered; after the outage every
// resend is sent, once.
func TestTwoWorkerProcessesRideOutAnOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	api := fake.New()
	api.SetDefault(fake.Behavior{Latency: 10 * time.Millisecond})
	api.SetOutage("", 503)
	httpSrv := httptest.NewServer(api)
	defer httpSrv.Close()
	const n = 60
	enqueueUsers(t, rdb, n)
	var logs [2]lockedBuffer
	for i := range logs {
		cmd := exec.Command(binary(t), "worker", "--redis-url", srv.URL, "--api-base", httpSrv.URL+"/api", "--concurrency", "10",
			"--log-format", "json", "--max-attempts", "3", "--backoff-initial", "100ms", "--backoff-max", "200ms", "--outage-probe", "1s")
		cmd.Stdout, cmd.Stderr = &logs[i], &logs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	}
	waitUntil(t, 30*time.Second, func() bool {
		st, err := ratelimit.Status(context.Background(), rdb, "")
		return err == nil && len(st) == 1 && st[0].Open
	}, "the circuit to open")
	time.Sleep(time.Second) // calls under way when it opened come back
	opened := api.Total()
	time.Sleep(4 * time.Second)
	if during := api.Total() - opened; during > 5 {
		t.Errorf("%d calls in 4s of an open circuit, want a probe a second", during)
	}
	store := outcome.NewStore(rdb, outcome.Options{})
	if st, _ := store.Stats(context.Background()); st.DeadLetter != 0 {
		t.Fatalf("dead letters during the outage: %+v", st)
	}
	api.EndOutage("")
	waitUntil(t, 60*time.Second, func() bool {
		st, err := store.Stats(context.Background())
		return err == nil && st.Sent == n
	}, "every resend sent after the outage")
	if sent := api.Answered(204); sent != n {
		t.Errorf("%d emails sent for %d resends", sent, n)
	}
	opens := 0
	for i := range logs {
		opens += strings.Count(logs[i].String(), "Login API outage: calls for the project held back")
	}
	if opens != 1 {
		t.Errorf("the outage was logged %d times, want once for the fleet", opens)
	}
}
