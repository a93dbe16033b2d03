package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/worker"
)

// Shape of the drains that lose Redis half way: drainUsers resends through
// a Login API answering in drainLatency, by a worker of drainConcurrency.
const (
	drainUsers       = 2000
	drainLatency     = 20 * time.Millisecond
	drainConcurrency = 10
)

// drain is a worker process draining drainUsers resends from a Redis that
// the test takes away half way.
type drain struct {
	api   *fake.API
	logs  *lockedBuffer
	http  string // the worker's HTTP address
	ready *readyWatch
}

// startDrain enqueues drainUsers resends on rdb and starts a worker process
// on redisURL with its HTTP surface on a free port, and returns once a
// third of them have been called.
func startDrain(t *testing.T, rdb redis.UniversalClient, redisURL string) *drain {
	t.Helper()
	api := fake.New()
	api.SetDefault(fake.Behavior{Latency: drainLatency})
	apiSrv := httptest.NewServer(api)
	t.Cleanup(apiSrv.Close)
	enqueueUsers(t, rdb, drainUsers)

	d := &drain{api: api, logs: &lockedBuffer{}, http: freeAddr(t)}
	startWorkerWith(t, d.logs, "--redis-url", redisURL, "--api-base", apiSrv.URL+"/api", "--http-addr", d.http,
		"--concurrency", fmt.Sprint(drainConcurrency), "--log-format", "json", "--backoff-initial", "100ms")
	t.Cleanup(func() {
		if t.Failed() {
			var lines []string
			for _, l := range strings.Split(d.logs.String(), "\n") {
				if !strings.Contains(l, "confirmation email sent") {
					lines = append(lines, l)
				}
			}
			t.Logf("the worker's output, but for the lines of emails sent:\n%s", strings.Join(lines, "\n"))
		}
	})
	d.ready = watchReady(t, "http://"+d.http+"/readyz")
	waitUntil(t, 30*time.Second, func() bool { return d.ready.saw(http.StatusOK) }, "the worker's /readyz to answer 200")
	waitUntil(t, 60*time.Second, func() bool { return api.Total() >= drainUsers/3 }, "a third of the resends called")
	return d
}

// checkMidDrain fails t unless Redis went away with resends still to call.
func (d *drain) checkMidDrain(t *testing.T) {
	t.Helper()
	if called := d.api.Total(); called >= drainUsers {
		t.Fatalf("the API had all %d calls before Redis went away; the test wants it mid-drain", called)
	}
}

// startWorkerWith runs the real binary as `resendq worker args...`, killed
// when t ends.
func startWorkerWith(t *testing.T, logs *lockedBuffer, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"worker"}, args...)...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// waitAllSent waits until store holds a sent record for every user of the
// drain and the extra ones, then checks that the API was called for every
// one of them, and called twice for no more users than were in flight or
// being recorded (the worker's slots and the acks it holds).
//
// It waits up to 150s: a task whose run ended while Redis was away, its
// answer to asynq (done, retry) lost, stays active until asynq's recoverer
// hands it back, once its lease (30s) has been expired for 30s, at its next
// round (every minute): up to two minutes after the task was taken.
func (d *drain) waitAllSent(t *testing.T, rdb redis.UniversalClient, extra ...string) {
	t.Helper()
	store := outcome.NewStore(rdb, outcome.Options{})
	want := int64(drainUsers + len(extra))
	deadline := time.Now().Add(150 * time.Second)
	for {
		st, err := store.Stats(context.Background())
		if err == nil && st.Sent >= want {
			break
		}
		if time.Now().After(deadline) {
			info, qerr := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(tasks.QueueSignup)
			t.Fatalf("after 150s, %d of %d resends sent (stats %+v, %v); the signup queue: %+v, %v; the API had %d calls",
				st.Sent, want, st, err, info, qerr, d.api.Total())
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, err := store.Stats(context.Background())
	if err != nil || st.Sent != want || st.DeadLetter != 0 {
		t.Errorf("outcome stats: %+v, %v; want %d sent and no dead letter", st, err, want)
	}
	users := append([]string(nil), extra...)
	for i := range drainUsers {
		users = append(users, fmt.Sprintf("user%d@example.com", i))
	}
	twice := 0
	for _, u := range users {
		switch n := d.api.Count(u); {
		case n == 0:
			t.Errorf("%s: never sent", u)
		case n > 2:
			t.Errorf("%s: sent %d times", u, n)
		case n == 2:
			twice++
		}
		if rec, ok, err := store.Latest(context.Background(), testProject, u); err != nil || !ok || rec.Status != outcome.StatusSent {
			t.Errorf("%s: outcome record %+v, %v, %v; want sent", u, rec, ok, err)
		}
	}
	if most := drainConcurrency + worker.Prefetch(drainConcurrency) + worker.HeldAcks(drainConcurrency); twice > most {
		t.Errorf("%d users were sent two emails; at most the %d calls in flight and answers being recorded may be repeated", twice, most)
	}
	t.Logf("%d API calls for %d resends: %d users called twice", d.api.Total(), len(users), twice)
	if strings.Contains(d.logs.String(), "outcome record could not be written") {
		t.Errorf("the worker lost outcome records")
	}
	if addr := unmaskedUser.FindString(d.logs.String()); addr != "" {
		t.Errorf("an unmasked email address in the worker's logs: %s", addr)
	}
}

// unmaskedUser matches the address of a drain's user unmasked.
var unmaskedUser = regexp.MustCompile(`user[0-9]+@example\.com`)

// readyWatch polls a /readyz and keeps the sequence of statuses it
// answered, each change once (0 when it did not answer).
type readyWatch struct {
	mu   sync.Mutex
	seen []int
}

func watchReady(t *testing.T, url string) *readyWatch {
	w := &readyWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		client := &http.Client{Timeout: 5 * time.Second}
		for ctx.Err() == nil {
			status := 0
			if resp, err := client.Get(url); err == nil {
				status = resp.StatusCode
				resp.Body.Close()
			}
			w.mu.Lock()
			if n := len(w.seen); n == 0 || w.seen[n-1] != status {
				w.seen = append(w.seen, status)
			}
			w.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()
	return w
}

// saw reports whether status has been answered.
func (w *readyWatch) saw(status int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.seen {
		if s == status {
			return true
		}
	}
	return false
}

// waitDownAndUp waits up to 10s for the answers to have gone 200, 503,
// then 200, and fails t with the answers seen otherwise.
func (w *readyWatch) waitDownAndUp(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, seen := w.wentDownAndUp()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("/readyz answered %v (0: no answer); want 200, 503, then 200", seen)
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// wentDownAndUp reports whether the answers went 200, then 503, then 200.
func (w *readyWatch) wentDownAndUp() (bool, []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	step := 0
	for _, s := range w.seen {
		switch {
		case step == 0 && s == http.StatusOK, step == 1 && s == http.StatusServiceUnavailable, step == 2 && s == http.StatusOK:
			step++
		}
	}
	return step == 3, append([]int(nil), w.seen...)
}

// waitReplicated fails t unless a replica has every write the master of
// rdb has acknowledged, within 5 seconds (Redis WAIT).
func waitReplicated(t *testing.T, rdb *redis.Client) {
	t.Helper()
	ctx := context.Background()
	conn := rdb.Conn()
	defer conn.Close()
	if err := conn.Set(ctx, "test:replicated", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1: %d, %v; want the replica's acknowledgement", n, err)
	}
}

// TestWorkerFollowsSentinelFailover drains resends from a master behind a
// Sentinel, kills the master (SIGKILL) a third of the way through and lets
// the Sentinel promote its replica. The worker follows by itself: its
// /readyz answers 503, then 200 again; every resend enqueued before the
// drain is sent, and no more users are called twice than calls were in
// flight. Producers follow too: `resendq enqueue` on the same URL and the
// worker's HTTP API enqueue on the new master.
func TestWorkerFollowsSentinelFailover(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	master := s.Master.Client(t)
	start := time.Now()
	d := startDrain(t, master, s.URL)
	waitReplicated(t, master)

	s.Master.Stop()
	killed := time.Now()
	d.checkMidDrain(t)
	s.WaitFailover(t, 30*time.Second)
	t.Logf("the replica promoted %s after the kill", time.Since(killed).Round(10*time.Millisecond))

	r := runBinary(t, "enqueue", "--redis-url", s.URL, "--project-id", testProject, "--username", "after-cli@example.com")
	if r.code != 0 || len(strings.TrimSpace(r.stdout)) != 36 {
		t.Errorf("resendq enqueue after the failover: %+v; want exit 0 and a task id", r)
	}
	resp, err := http.Post("http://"+d.http+"/api/v1/resends", "application/json",
		strings.NewReader(`{"project_id":"`+testProject+`","username":"after-http@example.com"}`))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Errorf("POST /api/v1/resends after the failover: %v, %v; want 202", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}

	newMaster := s.Replica.Client(t)
	d.waitAllSent(t, newMaster, "after-cli@example.com", "after-http@example.com")
	d.ready.waitDownAndUp(t)
	t.Logf("drained %d resends across the failover in %s", drainUsers, time.Since(start).Round(100*time.Millisecond))
}

// redisOutage is how long TestWorkerRidesOutRedisRestartWithAOF keeps
// Redis down.
const redisOutage = 8 * time.Second

// TestWorkerRidesOutRedisRestartWithAOF drains resends from a Redis with an
// append-only file fsynced on every write, kills Redis (SIGKILL) a third of
// the way through and starts it again on the same port and directory 8
// seconds later.
// While it is down, `resendq enqueue` fails within seconds with exit status
// 1 and says Redis is unreachable, and /readyz answers 503. The worker
// reconnects by itself: every resend is sent and has its outcome record,
// and no more users are called twice than calls were in flight.
func TestWorkerRidesOutRedisRestartWithAOF(t *testing.T) {
	t.Parallel()
	srv := redistest.StartDurable(t)
	rdb := srv.Client(t)
	start := time.Now()
	d := startDrain(t, rdb, srv.URL)

	srv.Kill()
	killed := time.Now()
	d.checkMidDrain(t)
	r := runBinary(t, "enqueue", "--redis-url", srv.URL, "--project-id", testProject, "--username", "while-down@example.com")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach Redis") || r.took > 10*time.Second {
		t.Errorf("resendq enqueue while Redis is down: %+v; want exit 1 within seconds, saying Redis is unreachable", r)
	}
	waitUntil(t, 10*time.Second, func() bool { return d.ready.saw(http.StatusServiceUnavailable) }, "/readyz to answer 503 while Redis is down")
	// An outage longer than one try of an outcome write (5s): the records
	// of the calls in flight wait for Redis to come back.
	time.Sleep(time.Until(killed.Add(redisOutage)))
	srv.Restart(t)
	t.Logf("Redis was down for %s", time.Since(killed).Round(100*time.Millisecond))

	d.waitAllSent(t, rdb)
	d.ready.waitDownAndUp(t)
	r = runBinary(t, "outcomes", "stats", "--redis-url", srv.URL, "--json")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf(`"sent":%d`, drainUsers)) {
		t.Errorf("resendq outcomes stats after the restart: %+v; want %d sent", r, drainUsers)
	}
	t.Logf("drained %d resends across the restart in %s", drainUsers, time.Since(start).Round(100*time.Millisecond))
}

// binResult is what one run of the real binary printed, returned and took.
type binResult struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// runBinary runs the real binary with args, and kills it after a minute.
func runBinary(t *testing.T, args ...string) binResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := binResult{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if err != nil && r.code <= 0 {
		t.Fatalf("resendq %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// TestEnqueueFailsFastWhenRedisIsDown runs `resendq enqueue`, single and
// batch, against a port nobody listens on, a Redis that was killed, and a
// Sentinel that is gone: each gives up within seconds with its documented
// exit status (1 single, 2 batch: nothing enqueued) and says that Redis
// cannot be reached.
func TestEnqueueFailsFastWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	killed := redistest.Start(t)
	killed.Stop()
	urls := map[string]string{
		"FreePort":     "redis://" + freeAddr(t) + "/0",
		"KilledServer": killed.URL,
		"GoneSentinel": "redis-sentinel://" + freeAddr(t) + "?master=" + redistest.MasterName,
	}
	file := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(file, []byte("username\nj@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, url := range urls {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, "enqueue", "--redis-url", url, "--project-id", testProject, "--username", "j@example.com")
			if r.code != 1 || !strings.Contains(r.stderr, "cannot reach Redis") || r.took > 10*time.Second {
				t.Errorf("single enqueue %+v; want exit 1 within seconds, saying Redis cannot be reached", r)
			}
			if name == "GoneSentinel" && !strings.Contains(r.stderr, "no answer within 5s from the Sentinels") {
				t.Errorf("single enqueue through a gone Sentinel: %q; want it to say no Sentinel answered", r.stderr)
			}
			r = runBinary(t, "enqueue", "--redis-url", url, "--project-id", testProject, "--file", file)
			if r.code != 2 || !strings.Contains(r.stderr, "cannot reach Redis") || !strings.Contains(r.stderr, "nothing was enqueued") || r.took > 10*time.Second {
				t.Errorf("batch enqueue %+v; want exit 2 within seconds, saying Redis cannot be reached", r)
			}
		})
	}
}

// TestEnqueueWaitsForReplicas: with --redis-wait-replicas 1, `resendq
// enqueue` exits 0 once the replica has the task, and 3, naming how many
// replicas acknowledged, when the replica is down; the task id is printed
// either way, and the task is on the master.
func TestEnqueueWaitsForReplicas(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t)
	replica := redistest.StartReplica(t, master)
	args := func(user string) []string {
		return []string{"enqueue", "--redis-url", master.URL, "--project-id", testProject, "--username", user,
			"--redis-wait-replicas", "1", "--redis-wait-timeout", "1s"}
	}
	r := runCLI(t, nil, args("john@example.com")...)
	if r.code != 0 || len(strings.TrimSpace(r.stdout)) != 36 {
		t.Fatalf("with the replica up: %+v; want exit 0 and a task id", r)
	}
	replica.Stop()
	r = runCLI(t, nil, args("mary@example.com")...)
	want := "only 0 of the 1 replicas asked for acknowledged it within 1s"
	if r.code != exitReplicas || !strings.Contains(r.stderr, want) || len(strings.TrimSpace(r.stdout)) != 36 {
		t.Fatalf("with the replica down: %+v; want exit %d, a task id and %q", r, exitReplicas, want)
	}
	id := strings.TrimSpace(r.stdout)
	if n, err := master.Client(t).Exists(context.Background(), "asynq:{"+tasks.QueueSignup+"}:t:"+id).Result(); err != nil || n != 1 {
		t.Errorf("task %s on the master: %d, %v", id, n, err)
	}
	r = runCLI(t, nil, "enqueue", "--redis-url", master.URL, "--project-id", testProject, "--username", "x@example.com", "--redis-wait-replicas", "-1")
	if r.code != 2 || !strings.Contains(r.stderr, "--redis-wait-replicas -1") {
		t.Errorf("a negative --redis-wait-replicas: %+v; want exit 2 naming it", r)
	}
}

// TestSentinelURLNeedsMaster: a redis-sentinel:// URL without the master's
// name, or without a Sentinel, is bad usage (exit 2) named at once, not a
// Redis that cannot be reached.
func TestSentinelURLNeedsMaster(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]string{
		"redis-sentinel://:s3cret@127.0.0.1:26379": "no master name",
		"redis-sentinel://?master=m":               "no host",
	} {
		r := runCLI(t, nil, "enqueue", "--redis-url", url, "--project-id", testProject, "--username", "j@example.com")
		if r.code != 2 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "s3cret") {
			t.Errorf("%s: exit %d, stderr %q; want 2 and %q, no password", url, r.code, r.stderr, want)
		}
	}
}

// TestWaitForReplicasIsRefusedOnACluster: --redis-wait-replicas on a Redis
// Cluster is bad usage, said before anything is enqueued, by the single and
// the batch enqueue.
func TestWaitForReplicasIsRefusedOnACluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	file := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(file, []byte("username\nj@example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, input := range [][]string{{"--username", "j@example.com"}, {"--file", file}} {
		args := append([]string{"enqueue", "--redis-url", c.URL, "--project-id", testProject, "--redis-wait-replicas", "1"}, input...)
		r := runCLI(t, nil, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "--redis-wait-replicas: not available on Redis Cluster") {
			t.Errorf("%v: exit %d, stderr %q; want 2, refused on a cluster", input, r.code, r.stderr)
		}
	}
	if n, err := c.Client(t).DBSize(context.Background()).Result(); err != nil || n != 0 {
		t.Errorf("the cluster holds %d keys (%v); want nothing enqueued", n, err)
	}
}
