package worker

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/loginapi"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
	"github.com/resendq/resendq/tasks"
)

// backends are the Redis servers the integration tests run on: a real
// redis-server, and the embedded one of `resendq dev`.
var backends = []struct {
	name  string
	start func(testing.TB) *redistest.Server
}{
	{"redis", redistest.Start},
	{"embedded", redistest.StartEmbedded},
}

// pipeline is a worker process (New) wired to a Redis and a double of the
// Login API: the worker's hot path runs on its production Redis client.
type pipeline struct {
	rdb     *redis.Client
	srv     *redistest.Server
	api     *fake.API
	opts    Options
	worker  *Worker
	store   *outcome.Store
	enq     *enqueue.Enqueuer
	ins     *asynq.Inspector
	handler *Handler
	server  *Server
}

// newPipeline assembles a worker with quick retries, 3 attempts, a
// concurrency of 10 and the default flow control, after edit has had its
// say on the Options.
func newPipeline(t *testing.T, start func(testing.TB) *redistest.Server, edit func(*Options)) *pipeline {
	t.Helper()
	p := &pipeline{srv: start(t)}
	p.rdb = p.srv.Client(t)
	p.api, p.opts = apiDouble(t)
	if edit != nil {
		edit(&p.opts)
	}
	p.worker = p.newWorker(t)
	p.store = p.worker.Outcomes
	p.handler, p.server = p.worker.server.h, p.worker.server
	p.enq = enqueue.New(p.rdb, enqueue.Options{DedupWindow: -1})
	p.ins = asynq.NewInspectorFromRedisClient(p.rdb)
	return p
}

// apiDouble starts a double of the Login API for the test and returns it with
// the Options of a worker calling it: quick retries, 3 attempts, a
// concurrency of 10 and the default flow control, no log.
func apiDouble(t *testing.T) (*fake.API, Options) {
	t.Helper()
	api := fake.New()
	httpSrv := httptest.NewServer(api)
	t.Cleanup(httpSrv.Close)
	client, err := loginapi.New(loginapi.Options{BaseURL: httpSrv.URL + "/api", Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	return api, Options{
		API: client, Log: log, Concurrency: 10,
		Backoff:     Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		MaxAttempts: 3, RateLimitMaxWait: 5 * time.Second, PauseMax: DefaultPauseMax, OutageProbe: ratelimit.DefaultProbeInterval,
	}
}

// newWorker assembles another worker process of the pipeline's options.
func (p *pipeline) newWorker(t *testing.T) *Worker {
	t.Helper()
	w, err := New(p.rdb, p.opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// run runs the pipeline's worker until the test ends.
func (p *pipeline) run(t *testing.T) { runWorker(t, p.worker) }

// runWorker runs w as `resendq worker` does until the test ends.
func runWorker(t *testing.T, w *Worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

func (p *pipeline) enqueue(t *testing.T, username string) string {
	t.Helper()
	res, err := p.enq.Enqueue(context.Background(), tasks.Resend{ProjectID: testProject, Username: username})
	if err != nil {
		t.Fatal(err)
	}
	return res.TaskID
}

// waitOutcome polls until the user's outcome record exists.
func (p *pipeline) waitOutcome(t *testing.T, username string, within time.Duration) outcome.Record {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		rec, ok, err := p.store.Latest(context.Background(), testProject, username)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("no outcome for %s within %s (API calls: %d)", username, within, p.api.Count(username))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// archived returns the asynq archive's error text of a task.
func (p *pipeline) archived(t *testing.T, taskID string) string {
	t.Helper()
	info, err := p.ins.GetTaskInfo(tasks.QueueSignup, taskID)
	if err != nil {
		t.Fatalf("task %s: %v", taskID, err)
	}
	if info.State != asynq.TaskStateArchived {
		t.Fatalf("task %s is %v, want archived", taskID, info.State)
	}
	return info.LastErr
}

// TestOutcomeTableEndToEnd runs every row of the outcome table through
// Redis, asynq, the HTTP client and the double of the API.
func TestOutcomeTableEndToEnd(t *testing.T) {
	t.Parallel()
	rows := []struct {
		username   string
		behavior   fake.Behavior
		status     outcome.Status
		reason     outcome.Reason
		code       string
		httpCode   int
		calls      int    // calls the API received: exactly one email for a sent task
		archived   string // text in asynq's archive
		attempts   int
		maxWaitFor time.Duration
	}{
		{"sent@example.com", fake.Behavior{}, outcome.StatusSent, "", "", 204, 1, "", 1, 0},
		{"r400@example.com", fake.Behavior{Status: 400, Code: "010-011", Description: "login_url required."}, outcome.StatusDeadLetter, outcome.ReasonRejected, "010-011", 400, 1, "login api 400 010-011: login_url required.", 1, 0},
		{"r404@example.com", fake.Behavior{Status: 404, Code: "003-002", Description: "User not found."}, outcome.StatusDeadLetter, outcome.ReasonRejected, "003-002", 404, 1, "login api 404 003-002: User not found.", 1, 0},
		{"r409@example.com", fake.Behavior{Status: 409, Code: "003-033", Description: "Conflict."}, outcome.StatusDeadLetter, outcome.ReasonRejected, "003-033", 409, 1, "login api 409 003-033", 1, 0},
		{"r422@example.com", fake.Behavior{Status: 422, Code: "003-061", Description: "Object not found."}, outcome.StatusDeadLetter, outcome.ReasonRejected, "003-061", 422, 1, "login api 422 003-061", 1, 0},
		{"limited@example.com", fake.Behavior{RateLimited: 2, RetryAfter: "1"}, outcome.StatusSent, "", "", 204, 3, "", 3, 0},
		{"limitedforever@example.com", fake.Behavior{Status: 429}, outcome.StatusDeadLetter, outcome.ReasonRateLimited, "0", 429, -1, "rate limited: its own 429s asked for", -1, 0},
		{"flaky@example.com", fake.Behavior{ServerErrors: 2}, outcome.StatusSent, "", "", 204, 3, "", 3, 0},
		{"down@example.com", fake.Behavior{Status: 503}, outcome.StatusDeadLetter, outcome.ReasonExhausted, "0", 503, 3, "gave up after 3 failed attempts: login api 503", 3, 0},
		{"slow@example.com", fake.Behavior{Latency: 5 * time.Second}, outcome.StatusDeadLetter, outcome.ReasonExhausted, "", 0, 3, "gave up after 3 failed attempts", 3, 0},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			// Rows answer 429 and fail per user: the adaptive rate and the
			// circuit, which take them for the project's, would slow the
			// other rows down and hold the failing ones as an outage.
			p := newPipeline(t, be.start, func(o *Options) { o.NoAdaptiveRate, o.OutageMinFailures = true, 1000 })
			ids := map[string]string{}
			for _, row := range rows {
				p.api.Script(row.username, row.behavior)
				ids[row.username] = p.enqueue(t, row.username)
			}
			// A task from a broken producer never reaches the API.
			bad := asynq.NewTask(tasks.TypeResend, []byte(`{"project_id":"`+testProject+`","username":""}`))
			badInfo, err := asynq.NewClientFromRedisClient(p.rdb).Enqueue(bad, asynq.Queue(tasks.QueueSignup))
			if err != nil {
				t.Fatal(err)
			}
			p.run(t)
			for _, row := range rows {
				rec := p.waitOutcome(t, row.username, 30*time.Second)
				if rec.Status != row.status || rec.Reason != row.reason || rec.ErrorCode != row.code || rec.HTTPStatus != row.httpCode {
					t.Errorf("%s: record %+v, want %s/%s code %q http %d", row.username, rec, row.status, row.reason, row.code, row.httpCode)
				}
				if rec.TaskID != ids[row.username] || rec.Queue != tasks.QueueSignup || rec.EnqueuedAt.IsZero() {
					t.Errorf("%s: record %+v does not describe task %s", row.username, rec, ids[row.username])
				}
				if calls := p.api.Count(row.username); row.calls >= 0 && calls != row.calls {
					t.Errorf("%s: the API got %d calls, want %d", row.username, calls, row.calls)
				}
				if row.attempts >= 0 && rec.Attempts != row.attempts {
					t.Errorf("%s: attempts %d, want %d", row.username, rec.Attempts, row.attempts)
				}
				if row.attempts < 0 && rec.Attempts != p.api.Count(row.username) {
					t.Errorf("%s: attempts %d, but the API got %d calls", row.username, rec.Attempts, p.api.Count(row.username))
				}
				if row.status == outcome.StatusDeadLetter {
					if text := p.archived(t, ids[row.username]); !strings.Contains(text, row.archived) {
						t.Errorf("%s: archive text %q, want it to contain %q", row.username, text, row.archived)
					}
				}
			}
			// The invalid task is dead-lettered without a call.
			waitArchived(t, p, badInfo.ID)
			page, err := p.store.List(context.Background(), outcome.Filter{Reason: outcome.ReasonInvalid})
			if err != nil || len(page.Records) != 1 || page.Records[0].TaskID != badInfo.ID || page.Records[0].Attempts != 0 {
				t.Errorf("invalid outcome: %+v, %v", page.Records, err)
			}
			st, err := p.store.Stats(context.Background())
			if err != nil || st.Sent != 3 || st.DeadLetter != 8 || st.ByReason["rejected"] != 4 || st.ByReason["exhausted"] != 2 ||
				st.ByReason["rate_limited"] != 1 || st.ByReason["invalid"] != 1 {
				t.Errorf("stats = %+v, %v", st, err)
			}
		})
	}
}

// TestCallsInFlightStayWithinConcurrency checks that the worker takes more
// tasks than its Concurrency from Redis (the prefetched ones, ready to go)
// but never has more than Concurrency calls at the API at once.
func TestCallsInFlightStayWithinConcurrency(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			const concurrency, n = 4, 14
			p := newPipeline(t, be.start, func(o *Options) { o.Concurrency = concurrency })
			p.api.SetDefault(fake.Behavior{Latency: 100 * time.Millisecond})
			users := make([]string, n)
			for i := range users {
				users[i] = fmt.Sprintf("u%02d@example.com", i)
				p.enqueue(t, users[i])
			}
			p.run(t)
			var servers []*asynq.ServerInfo
			waitFor(t, func() bool {
				servers, _ = p.ins.Servers()
				return len(servers) == len(p.server.srvs)
			}, "the servers' first heartbeat")
			slots := 0
			for _, s := range servers {
				slots += s.Concurrency
			}
			if want := concurrency + Prefetch(concurrency); slots != want {
				t.Errorf("asynq slots %d over %d servers, want %d", slots, len(servers), want)
			}
			for _, u := range users {
				if rec := p.waitOutcome(t, u, 20*time.Second); rec.Status != outcome.StatusSent {
					t.Errorf("%s: %+v", u, rec)
				}
			}
			if peak := p.api.Peak(); peak != concurrency {
				t.Errorf("at most %d calls at once, want %d (the concurrency)", peak, concurrency)
			}
		})
	}
}

func TestSlotsAreSharedAmongAsynqServers(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, redistest.Start, func(o *Options) { o.Concurrency = 50 })
	p.run(t)
	var servers []*asynq.ServerInfo
	waitFor(t, func() bool {
		servers, _ = p.ins.Servers()
		return len(servers) == 4
	}, "4 asynq servers")
	var got []int
	for _, s := range servers {
		got = append(got, s.Concurrency)
		if s.PID != servers[0].PID || s.Host != servers[0].Host {
			t.Errorf("server %+v is not of this process", s)
		}
	}
	sort.Ints(got)
	if fmt.Sprint(got) != "[15 15 15 15]" {
		t.Errorf("slots per server %v, want the 60 slots (50 calls + 10 ready) in four shares", got)
	}
	for c, want := range map[int]int{1: 1, 20: 1, 24: 2, 50: 4, 400: 4} {
		if n := ProcessorsFor(c); n != want {
			t.Errorf("ProcessorsFor(%d) = %d, want %d", c, n, want)
		}
	}
}

// TestRetryOfASentTaskMakesNoCall: a run of a task whose email went out
// already (its worker died between the record and asynq's done, and asynq
// retries it) ends without a call. Here the earlier run's record is written
// while the task waits for its retry after a 503.
func TestRetryOfASentTaskMakesNoCall(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, redistest.Start, func(o *Options) {
		o.Backoff = Backoff{Initial: time.Second, Max: time.Second}
	})
	const user = "twice@example.com"
	p.api.Script(user, fake.Behavior{ServerErrors: 1})
	id := p.enqueue(t, user)
	p.run(t)
	waitFor(t, func() bool {
		info, err := p.ins.GetTaskInfo(tasks.QueueSignup, id)
		return err == nil && info.State == asynq.TaskStateRetry
	}, "the retry after the 503")
	earlier, err := p.store.Finish(context.Background(), outcome.Record{TaskID: id, ProjectID: testProject, Username: user, Queue: tasks.QueueSignup, Status: outcome.StatusSent, HTTPStatus: 204, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		info, err := p.ins.GetQueueInfo(tasks.QueueSignup)
		return err == nil && info.Processed == 2 && info.Failed == 1 && info.Size == 0
	}, "the retry to complete")
	if n := p.api.Count(user); n != 1 {
		t.Errorf("the API got %d calls, want only the 503", n)
	}
	if rec, ok, err := p.store.Get(context.Background(), id); err != nil || !ok || rec.Status != outcome.StatusSent || !rec.FinishedAt.Equal(earlier.FinishedAt) {
		t.Errorf("record %+v, %v, %v; want the earlier run's", rec, ok, err)
	}
}

// TestA429PausesTheProjectOnEveryWorker: one worker's 429 (Retry-After 2)
// holds back the calls of every worker for that project; the other
// worker, started after it, reads the pause from Redis. The workers' clock
// stands still inside the pause until the test moves it past the end: every
// task is handed back without a call meanwhile, and all are sent after.
func TestA429PausesTheProjectOnEveryWorker(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	p := newPipeline(t, redistest.Start, func(o *Options) { o.Concurrency = 2; o.Clock = clock })
	p.api.Script("first@example.com", fake.Behavior{RateLimited: 1, RetryAfter: "2"})
	ids := []string{p.enqueue(t, "first@example.com")}
	p.run(t)
	waitFor(t, func() bool { return p.api.Count("first@example.com") == 1 }, "the 429")
	runWorker(t, p.newWorker(t))
	users := []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"}
	for _, u := range users {
		ids = append(ids, p.enqueue(t, u))
	}
	// Each task enqueued after the 429 goes back and forth (handed back,
	// due, taken, handed back) until the pause ends: each is seen handed
	// back at least once (its last error says so, whichever state it is in
	// when looked at). The first task may be handed back for its own
	// Retry-After instead, its last error the 429's.
	handedBack := map[string]bool{}
	waitFor(t, func() bool {
		for _, id := range ids[1:] {
			info, err := p.ins.GetTaskInfo(tasks.QueueSignup, id)
			if err == nil && info.LastErr == errHeldBack.Error() {
				handedBack[id] = true
			}
		}
		return len(handedBack) == len(ids)-1
	}, "every task to be handed back for the pause")
	if n := p.api.Total(); n != 1 {
		t.Fatalf("%d calls to the API inside the pause, want only the 429", n-1)
	}
	clock.Advance(2 * time.Second)
	for _, u := range append(users, "first@example.com") {
		if rec := p.waitOutcome(t, u, 20*time.Second); rec.Status != outcome.StatusSent {
			t.Errorf("%s: %+v", u, rec)
		}
	}
}

func waitArchived(t *testing.T, p *pipeline, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := p.ins.GetTaskInfo(tasks.QueueSignup, id)
		if err == nil && info.State == asynq.TaskStateArchived {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not archived: %+v, %v", id, info, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConnectionRefusedExhausts: an API that cannot be reached at all.
func TestConnectionRefusedExhausts(t *testing.T) {
	t.Parallel()
	closed := httptest.NewServer(nil)
	closed.Close()
	client, err := loginapi.New(loginapi.Options{BaseURL: closed.URL})
	if err != nil {
		t.Fatal(err)
	}
	p := newPipeline(t, redistest.Start, func(o *Options) { o.API, o.MaxAttempts = client, 2 })
	id := p.enqueue(t, "john@example.com")
	p.run(t)
	rec := p.waitOutcome(t, "john@example.com", 20*time.Second)
	if rec.Reason != outcome.ReasonExhausted || rec.Attempts != 2 || rec.HTTPStatus != 0 || !strings.Contains(rec.ErrorDescription, "connection refused") {
		t.Errorf("record = %+v", rec)
	}
	if text := p.archived(t, id); !strings.Contains(text, "gave up after 2 failed attempts") || strings.Contains(text, "john@") {
		t.Errorf("archive text %q", text)
	}
}

// TestGracefulShutdownFinishesInFlightCalls: on shutdown, calls in flight
// finish and are recorded; nothing is sent twice or lost.
func TestGracefulShutdownFinishesInFlightCalls(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, redistest.Start, func(o *Options) { o.ShutdownTimeout = 10 * time.Second })
	p.api.SetDefault(fake.Behavior{Latency: 300 * time.Millisecond})
	const n = 10
	users := make([]string, n)
	for i := range users {
		users[i] = "user" + string(rune('a'+i)) + "@example.com"
		p.enqueue(t, users[i])
	}
	if err := p.server.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return p.api.Total() == n }, "all calls in flight")
	p.server.Shutdown()
	for _, u := range users {
		rec, ok, err := p.store.Latest(context.Background(), testProject, u)
		if err != nil || !ok || rec.Status != outcome.StatusSent || p.api.Count(u) != 1 {
			t.Errorf("%s: %+v %v %v, %d calls", u, rec, ok, err, p.api.Count(u))
		}
	}
	info, err := p.ins.GetQueueInfo(tasks.QueueSignup)
	if err != nil || info.Size != 0 {
		t.Errorf("queue after shutdown: %+v, %v", info, err)
	}
}

// TestShutdownTimeoutHandsTasksBack: calls that outlast the shutdown
// timeout are abandoned and their tasks go back to the queue, where the
// next worker picks them up.
func TestShutdownTimeoutHandsTasksBack(t *testing.T) {
	t.Parallel()
	p := newSlowPipeline(t, 10)
	const n = 5
	for i := 0; i < n; i++ {
		p.enqueue(t, "user"+string(rune('a'+i))+"@example.com")
	}
	if err := p.server.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return p.api.Total() == n }, "all calls in flight")
	p.server.Shutdown()
	info, err := p.ins.GetQueueInfo(tasks.QueueSignup)
	if err != nil || info.Pending != n {
		t.Fatalf("after shutdown: %+v, %v; want %d pending", info, err, n)
	}
	if st, _ := p.store.Stats(context.Background()); st.Sent+st.DeadLetter != 0 {
		t.Fatalf("outcomes recorded for abandoned calls: %+v", st)
	}
	// The next worker finishes them.
	p.api.SetDefault(fake.Behavior{})
	runWorker(t, p.newWorker(t))
	waitFor(t, func() bool { st, _ := p.store.Stats(context.Background()); return st.Sent == n }, "all sent by the next worker")
}

// newSlowPipeline is a pipeline of the given concurrency whose API answers
// after a minute and whose worker gives in-flight calls 200ms to finish on
// shutdown.
func newSlowPipeline(t *testing.T, concurrency int) *pipeline {
	t.Helper()
	api := fake.New()
	httpSrv := httptest.NewServer(api)
	t.Cleanup(httpSrv.Close)
	slow, err := loginapi.New(loginapi.Options{BaseURL: httpSrv.URL, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	p := newPipeline(t, redistest.Start, func(o *Options) {
		o.ShutdownTimeout, o.API, o.Concurrency = 200*time.Millisecond, slow, concurrency
	})
	p.api = api
	p.api.SetDefault(fake.Behavior{Latency: time.Minute})
	return p
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	waitWithin(t, 20*time.Second, cond, what)
}

// waitWithin is waitFor with a deadline of its own, for work that takes
// long under the race detector.
func waitWithin(t *testing.T, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
