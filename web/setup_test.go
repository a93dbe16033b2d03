package web_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/loginapi"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/metrics"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/web"
	"github.com/resendq/resendq/worker"
)

// testToken is the token of every test server that has one.
const testToken = "s3cret-token-for-tests"

// projectID is the project of every task the tests enqueue.
const projectID = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"

// bundle is a web handler in front of a throw-away Redis, with the outcome
// store and metrics registry of a worker process.
type bundle struct {
	redis *redistest.Server
	rdb   *redis.Client
	store *outcome.Store
	reg   *prometheus.Registry
	obs   *metrics.Observer
	http  *httptest.Server
}

// setup starts Redis and the web handler; edit may change the options
// before the handler is built.
func setup(t *testing.T, edit func(*web.Options)) *bundle {
	t.Helper()
	b := &bundle{redis: redistest.Start(t)}
	b.rdb = b.redis.Client(t)
	b.store = outcome.NewStore(b.rdb, outcome.Options{})
	b.reg = metrics.NewRegistry()
	b.reg.MustRegister(metrics.NewQueueCollector(b.rdb, nil))
	var err error
	if b.obs, err = metrics.NewObserver(b.reg); err != nil {
		t.Fatal(err)
	}
	opts := web.Options{Redis: b.rdb, Outcomes: b.store, Metrics: b.reg, Token: testToken, Log: quietLog()}
	if edit != nil {
		edit(&opts)
	}
	h, err := web.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	b.http = httptest.NewServer(h)
	t.Cleanup(b.http.Close)
	return b
}

func quietLog() *logrus.Logger {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return log
}

// get requests path with an Authorization header (none when auth is "")
// and returns the status and body.
func (b *bundle) get(t *testing.T, path, auth string) (int, string) {
	t.Helper()
	return b.do(t, http.MethodGet, path, auth, nil)
}

func (b *bundle) do(t *testing.T, method, path, auth string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, b.http.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// runWorker starts a worker on b's Redis that calls a fake Login API
// answering by fake.DemoRules ("unknown..." 404 003-002, "down..." 500),
// enqueues a resend for each username and waits until every one is final.
func (b *bundle) runWorker(t *testing.T, usernames ...string) {
	t.Helper()
	b.runWorkerOn(t, demoAPI(t), usernames...)
}

// runWorkerOn is runWorker calling the Login API through client.
func (b *bundle) runWorkerOn(t *testing.T, client *loginapi.Client, usernames ...string) {
	t.Helper()
	h := &worker.Handler{
		API: client, Outcomes: b.store, Log: quietLog(), Observer: b.obs,
		Backoff:     worker.Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, Jitter: -1},
		MaxAttempts: 2,
	}
	srv := worker.NewServer(b.rdb, h, worker.Config{Concurrency: 4, ForwardInterval: 100 * time.Millisecond, Logger: quietLog()})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	ctx := context.Background()
	enq := enqueue.New(b.rdb, enqueue.Options{DedupWindow: -1})
	for _, u := range usernames {
		if _, err := enq.Enqueue(ctx, tasks.Resend{ProjectID: projectID, Username: u}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := b.store.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Sent+st.DeadLetter == int64(len(usernames)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s only %d of %d tasks are final: %+v", st.Sent+st.DeadLetter, len(usernames), st)
		}
		<-tick.C
	}
}

// bearer is the Authorization header carrying testToken.
func bearer() string { return "Bearer " + testToken }

// lines reports which of want are missing from the lines of body.
func missingLines(body string, want ...string) []string {
	have := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		have[l] = true
	}
	var missing []string
	for _, w := range want {
		if !have[w] {
			missing = append(missing, w)
		}
	}
	return missing
}

// demoAPI is a client of a fake Login API that answers by fake.DemoRules
// ("unknown..." 404 003-002, "down..." 500), served until the test ends.
func demoAPI(t *testing.T) *loginapi.Client {
	t.Helper()
	api := fake.New()
	api.SetRules(fake.DemoRules)
	return clientOf(t, api)
}

// clientOf is a client of api, served until the test ends.
func clientOf(t *testing.T, api *fake.API) *loginapi.Client {
	t.Helper()
	apiSrv := httptest.NewServer(api)
	t.Cleanup(apiSrv.Close)
	client, err := loginapi.New(loginapi.Options{BaseURL: apiSrv.URL + "/api", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return client
}
