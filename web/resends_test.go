package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/hibiken/asynq"
	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/web"
	"github.com/resendq/resendq/worker"
)

// producerToken is the producer token of the servers that have one.
const producerToken = "producer-token-for-tests"

// spec is api/openapi.yaml and its router, loaded once.
var spec = sync.OnceValues(func() (routers.Router, error) {
	data, err := os.ReadFile("../api/openapi.yaml")
	if err != nil {
		return nil, err
	}
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("api/openapi.yaml: %w", err)
	}
	return gorillamux.NewRouter(doc)
})

// answer is one HTTP answer of the API.
type answer struct {
	status int
	header http.Header
	body   string
}

// apiError decodes the answer's error.
func (a answer) apiError(t *testing.T) (code, field string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message, Field string }
	}
	if err := json.Unmarshal([]byte(a.body), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("not an API error: %d %s", a.status, a.body)
	}
	return e.Error.Code, e.Error.Field
}

// call sends a request to the API with the token auth ("" for none) and
// checks the answer against api/openapi.yaml; with valid, the request too
// (requests meant to be refused are not checked).
func (b *bundle) call(t *testing.T, method, path, auth string, header map[string]string, body string, valid bool) answer {
	t.Helper()
	req, err := http.NewRequest(method, b.http.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	router, err := spec()
	if err != nil {
		t.Fatal(err)
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s %s is not in api/openapi.yaml: %v", method, path, err)
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if valid {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			t.Fatalf("the request breaks api/openapi.yaml: %v", err)
		}
		req.Body = io.NopCloser(strings.NewReader(body))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: opts}
	out.SetBodyBytes(data)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s %s: the answer %d %s breaks api/openapi.yaml: %v", method, path, resp.StatusCode, data, err)
	}
	return answer{resp.StatusCode, resp.Header, string(data)}
}

// post sends a request without checking it against the spec, from any
// goroutine: a failure is an answer of status 0.
func (b *bundle) post(method, path, auth string, header map[string]string, body string) answer {
	req, err := http.NewRequest(method, b.http.URL+path, strings.NewReader(body))
	if err != nil {
		return answer{body: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+auth)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{body: err.Error()}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(data)}
}

// result decodes an enqueue's answer.
func (a answer) result(t *testing.T) enqueue.Result {
	t.Helper()
	var res enqueue.Result
	if err := json.Unmarshal([]byte(a.body), &res); err != nil || res.TaskID == "" {
		t.Fatalf("not an enqueue result: %d %s", a.status, a.body)
	}
	return res
}

// queued is the number of tasks in the signup queue.
func (b *bundle) queued(t *testing.T) int {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(b.rdb).GetQueueInfo(tasks.QueueSignup)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return 0
		}
		t.Fatal(err)
	}
	return info.Size
}

func resendBody(username string) string {
	return fmt.Sprintf(`{"project_id":%q,"username":%q}`, projectID, username)
}

// noDedup serves an Enqueuer without a dedup window, so that only the
// idempotency key keeps a repeat from being enqueued.
func noDedup(o *web.Options) {
	o.Enqueuer = enqueue.New(o.Redis, enqueue.Options{DedupWindow: -1})
}

func TestEnqueueOneAndLookItUp(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	a := b.call(t, http.MethodPost, "/api/v1/resends", testToken, nil,
		fmt.Sprintf(`{"project_id":%q,"username":" john@example.com ","login_url":"https://example.com/login","payload":"x"}`, projectID), true)
	if a.status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", a.status, a.body)
	}
	res := a.result(t)
	if res.Queue != tasks.QueueSignup || res.Duplicate {
		t.Errorf("result %+v", res)
	}
	info, err := asynq.NewInspectorFromRedisClient(b.rdb).GetTaskInfo(tasks.QueueSignup, res.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tasks.Decode(info.Payload)
	if err != nil || r.Username != "john@example.com" || r.LoginURL != "https://example.com/login" || r.Payload != "x" {
		t.Errorf("the task holds %+v, %v", r, err)
	}
	// Within the dedup window, the same user (in another case) is a duplicate.
	again := b.call(t, http.MethodPost, "/api/v1/resends", testToken, nil, resendBody("John@Example.com"), true)
	if got := again.result(t); again.status != http.StatusAccepted || !got.Duplicate || got.TaskID != res.TaskID {
		t.Errorf("a repeat: %d %+v, want a duplicate of %s", again.status, got, res.TaskID)
	}
	st := b.call(t, http.MethodGet, "/api/v1/resends/"+res.TaskID, testToken, nil, "", true)
	if st.status != http.StatusOK || !strings.Contains(st.body, `"state":"pending"`) || strings.Contains(st.body, "john") {
		t.Errorf("GET: %d %s, want pending and no username", st.status, st.body)
	}
	missing := b.call(t, http.MethodGet, "/api/v1/resends/no-such-task", testToken, nil, "", true)
	if code, field := missing.apiError(t); missing.status != http.StatusNotFound || code != "not_found" || field != "task_id" {
		t.Errorf("GET an unknown task: %d %s", missing.status, missing.body)
	}
	if n := b.queued(t); n != 1 {
		t.Errorf("%d tasks queued, want 1", n)
	}
}

// TestEnqueueErrorsLeaveNothing: every refused request names what is
// wrong, in the API's error format, and enqueues nothing.
func TestEnqueueErrorsLeaveNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) { o.ProducerToken = producerToken })
	huge := fmt.Sprintf(`{"project_id":%q,"username":"a@example.com","payload":%q}`, projectID, strings.Repeat("x", web.MaxResendBody))
	for _, c := range []struct {
		name, method, path, auth string
		header                   map[string]string
		body                     string
		status                   int
		code, field              string
	}{
		{"malformed JSON", "POST", "/api/v1/resends", testToken, nil, `{"project_id":`, 400, "invalid_json", ""},
		{"an empty body", "POST", "/api/v1/resends", testToken, map[string]string{"Content-Type": "application/json"}, "", 400, "invalid_json", ""},
		{"two objects", "POST", "/api/v1/resends", testToken, nil, resendBody("a@example.com") + resendBody("b@example.com"), 400, "invalid_json", ""},
		{"an unknown field", "POST", "/api/v1/resends", testToken, nil, fmt.Sprintf(`{"project_id":%q,"username":"a@example.com","loginurl":"x"}`, projectID), 400, "invalid_json", "loginurl"},
		{"a number for a string", "POST", "/api/v1/resends", testToken, nil, fmt.Sprintf(`{"project_id":%q,"username":42}`, projectID), 400, "invalid_json", "username"},
		{"no username", "POST", "/api/v1/resends", testToken, nil, fmt.Sprintf(`{"project_id":%q}`, projectID), 400, "invalid", "username"},
		{"a bad project", "POST", "/api/v1/resends", testToken, nil, `{"project_id":"p1","username":"a@example.com"}`, 400, "invalid", "project_id"},
		{"a bad login_url", "POST", "/api/v1/resends", testToken, nil, fmt.Sprintf(`{"project_id":%q,"username":"a@example.com","login_url":"ftp://x"}`, projectID), 400, "invalid", "login_url"},
		{"a bad Idempotency-Key", "POST", "/api/v1/resends", testToken, map[string]string{"Idempotency-Key": "two words"}, resendBody("a@example.com"), 400, "invalid", "Idempotency-Key"},
		{"a body over the limit", "POST", "/api/v1/resends", testToken, nil, huge, 413, "too_large", ""},
		{"text/plain", "POST", "/api/v1/resends", testToken, map[string]string{"Content-Type": "text/plain"}, resendBody("a@example.com"), 415, "unsupported_media_type", "Content-Type"},
		{"no token", "POST", "/api/v1/resends", "", nil, resendBody("a@example.com"), 401, "unauthorized", ""},
		{"a wrong token", "POST", "/api/v1/resends", "nope", nil, resendBody("a@example.com"), 401, "unauthorized", ""},
		{"the producer token on outcomes", "GET", "/api/v1/outcomes", producerToken, nil, "", 403, "forbidden", ""},
		{"an empty batch", "POST", "/api/v1/resends:batch", testToken, nil, `{"items":[]}`, 400, "invalid", "items"},
		{"a batch without items", "POST", "/api/v1/resends:batch", testToken, nil, `{}`, 400, "invalid", "items"},
		{"a batch over 1000", "POST", "/api/v1/resends:batch", testToken, nil, `{"items":[` + strings.Repeat(resendBody("a@example.com")+",", 1000) + resendBody("b@example.com") + `]}`, 400, "invalid", "items"},
	} {
		a := b.call(t, c.method, c.path, c.auth, c.header, c.body, false)
		code, field := a.apiError(t)
		if a.status != c.status || code != c.code || field != c.field {
			t.Errorf("%s: %d %s, want %d %s naming %q", c.name, a.status, a.body, c.status, c.code, c.field)
		}
		if strings.Contains(a.body, "a@example.com") {
			t.Errorf("%s: the error repeats the username: %s", c.name, a.body)
		}
	}
	if n := b.queued(t); n != 0 {
		t.Errorf("%d tasks queued after refused requests, want none", n)
	}
	if keys := b.rdb.Keys(context.Background(), "resendq:*").Val(); len(keys) != 0 {
		t.Errorf("refused requests left keys %v", keys)
	}
}

func TestRedisDownIs503WithRetryAfter(t *testing.T) {
	t.Parallel()
	var logs lockedLog
	b := setup(t, func(o *web.Options) {
		l := logrus.New()
		l.SetOutput(&logs)
		o.Log, o.ProducerToken = l, producerToken
	})
	b.redis.Stop()
	for _, c := range []struct {
		method, path, body string
		key                bool
	}{
		{"POST", "/api/v1/resends", resendBody("a@example.com"), true},
		{"POST", "/api/v1/resends", resendBody("a@example.com"), false},
		{"POST", "/api/v1/resends:batch", `{"items":[` + resendBody("a@example.com") + `]}`, true},
		{"POST", "/api/v1/resends:batch", `{"items":[` + resendBody("a@example.com") + `]}`, false},
		{"GET", "/api/v1/resends/t1", "", false},
	} {
		var header map[string]string
		if c.key {
			header = map[string]string{"Idempotency-Key": "k-" + c.path}
		}
		a := b.call(t, c.method, c.path, producerToken, header, c.body, true)
		if code, _ := a.apiError(t); a.status != http.StatusServiceUnavailable || code != "unavailable" || a.header.Get("Retry-After") == "" {
			t.Errorf("%s %s with Redis down: %d %v %s, want 503 with Retry-After", c.method, c.path, a.status, a.header, a.body)
		}
		if strings.Contains(a.body, b.redis.Addr) {
			t.Errorf("the error names Redis's address: %s", a.body)
		}
	}
	got := logs.String()
	if !strings.Contains(got, "enqueue failed") {
		t.Errorf("the failures are not logged:\n%s", got)
	}
	for _, secret := range []string{"a@example.com", producerToken, testToken} {
		if strings.Contains(got, secret) {
			t.Errorf("the log shows %q:\n%s", secret, got)
		}
	}
}

// lockedLog is a log output that handlers write while a test reads it.
type lockedLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t, noDedup)
	key := map[string]string{"Idempotency-Key": "9b1d-signup-42"}
	first := b.call(t, http.MethodPost, "/api/v1/resends", testToken, key, resendBody("jane@example.com"), true)
	res := first.result(t)
	if first.status != http.StatusAccepted || res.Duplicate {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	// The task is done and gone from the queue; the key still answers.
	if err := asynq.NewInspectorFromRedisClient(b.rdb).DeleteTask(tasks.QueueSignup, res.TaskID); err != nil {
		t.Fatal(err)
	}
	again := b.call(t, http.MethodPost, "/api/v1/resends", testToken, key, resendBody(" jane@example.com"), true)
	if got := again.result(t); again.status != http.StatusAccepted || !got.Duplicate || got.TaskID != res.TaskID || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("the same key again: %d %s, want a duplicate of %s", again.status, again.body, res.TaskID)
	}
	other := b.call(t, http.MethodPost, "/api/v1/resends", testToken, key, resendBody("someone-else@example.com"), true)
	if code, field := other.apiError(t); other.status != http.StatusConflict || code != "idempotency_conflict" || field != "Idempotency-Key" {
		t.Errorf("the same key for another body: %d %s, want 409", other.status, other.body)
	}
	batch := b.call(t, http.MethodPost, "/api/v1/resends:batch", testToken, key, `{"items":[`+resendBody("jane@example.com")+`]}`, true)
	if batch.status != http.StatusConflict {
		t.Errorf("the same key for a batch: %d %s, want 409", batch.status, batch.body)
	}
	if n := b.queued(t); n != 0 {
		t.Errorf("%d tasks queued, want none", n)
	}
}

// TestConcurrentDuplicatesGetOneTask: producers racing with the same user
// (the dedup window), or retrying with the same key, get one task and no 5xx.
func TestConcurrentDuplicatesGetOneTask(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		edit func(*web.Options)
		key  bool
	}{
		{"the same user", nil, false},
		{"the same Idempotency-Key", noDedup, true},
		{"the same Idempotency-Key and user", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, c.edit)
			var header map[string]string
			if c.key {
				header = map[string]string{"Idempotency-Key": "race-1"}
			}
			const n = 20
			answers := make([]answer, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					answers[i] = b.post(http.MethodPost, "/api/v1/resends", testToken, header, resendBody("racer@example.com"))
				})
			}
			wg.Wait()
			ids := map[string]int{}
			for _, a := range answers {
				if a.status != http.StatusAccepted {
					t.Errorf("answer %d %s, want 202", a.status, a.body)
					continue
				}
				ids[a.result(t).TaskID]++
			}
			for id := range ids {
				if st := b.call(t, http.MethodGet, "/api/v1/resends/"+id, testToken, nil, "", true); st.status != http.StatusOK {
					t.Errorf("the task every producer was told of: %d %s", st.status, st.body)
				}
			}
			if len(ids) != 1 {
				t.Errorf("task IDs %v, want one", ids)
			}
			if q := b.queued(t); q != 1 {
				t.Errorf("%d tasks queued, want 1", q)
			}
		})
	}
}

func TestBatchOfMixedItems(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) { o.ProducerToken = producerToken })
	body := `{"items":[` + strings.Join([]string{
		resendBody("a@example.com"),
		`{"project_id":"nope","username":"b@example.com"}`,
		resendBody("c@example.com"),
		resendBody("A@example.com"), // a repeat of the first
		fmt.Sprintf(`{"project_id":%q}`, projectID),
		fmt.Sprintf(`{"project_id":%q,"username":7}`, projectID),
		fmt.Sprintf(`{"project_id":%q,"username":"d@example.com","loginurl":"x"}`, projectID),
		`"e@example.com"`,
	}, ",") + `]}`
	key := map[string]string{"Idempotency-Key": "batch-7"}
	// Its bad items break the spec's request schema (what a client should
	// send); the answer is checked against it still.
	a := b.call(t, http.MethodPost, "/api/v1/resends:batch", producerToken, key, body, false)
	if a.status != http.StatusOK {
		t.Fatalf("batch: %d %s", a.status, a.body)
	}
	var ans struct {
		Items []struct {
			TaskID    string `json:"task_id"`
			Duplicate bool
			Error     *struct{ Code, Field string }
		}
	}
	if err := json.Unmarshal([]byte(a.body), &ans); err != nil || len(ans.Items) != 8 {
		t.Fatalf("answer %s: %v", a.body, err)
	}
	it := ans.Items
	switch {
	case it[0].TaskID == "" || it[0].Duplicate || it[2].TaskID == "" || it[2].Duplicate || it[0].TaskID == it[2].TaskID:
		t.Errorf("the valid items: %s", a.body)
	case it[1].Error == nil || it[1].Error.Code != "invalid" || it[1].Error.Field != "items[1].project_id" || it[1].TaskID != "":
		t.Errorf("the bad project: %s", a.body)
	case it[3].TaskID != it[0].TaskID || !it[3].Duplicate:
		t.Errorf("the repeat of the first: %s", a.body)
	case it[4].Error == nil || it[4].Error.Field != "items[4].username":
		t.Errorf("the item without a username: %s", a.body)
	case it[5].Error == nil || it[5].Error.Code != "invalid_json" || it[5].Error.Field != "items[5].username":
		t.Errorf("the item with a number for a username: %s", a.body)
	case it[6].Error == nil || it[6].Error.Field != "items[6].loginurl":
		t.Errorf("the item with an unknown field: %s", a.body)
	case it[7].Error == nil || it[7].Error.Code != "invalid_json" || it[7].TaskID != "":
		t.Errorf("the item that is not an object: %s", a.body)
	}
	if n := b.queued(t); n != 2 {
		t.Errorf("%d tasks queued, want 2", n)
	}
	// The same batch again under its key: the same tasks, duplicates.
	again := b.call(t, http.MethodPost, "/api/v1/resends:batch", producerToken, key, body, false)
	var replay struct {
		Items []struct {
			TaskID    string `json:"task_id"`
			Duplicate bool
			Error     *struct{ Code, Field string }
		}
	}
	if err := json.Unmarshal([]byte(again.body), &replay); err != nil || again.status != http.StatusOK ||
		again.header.Get("Idempotent-Replayed") != "true" || len(replay.Items) != len(it) {
		t.Fatalf("the batch again: %d %s", again.status, again.body)
	}
	for i, r := range replay.Items {
		if r.TaskID != it[i].TaskID || (r.Error == nil) != (it[i].Error == nil) || r.TaskID != "" && !r.Duplicate {
			t.Errorf("item %d again: %+v, want %+v as a duplicate", i, r, it[i])
		}
	}
	if n := b.queued(t); n != 2 {
		t.Errorf("%d tasks queued after the repeat, want 2", n)
	}
	// The producer token looks resends up too.
	if st := b.call(t, http.MethodGet, "/api/v1/resends/"+it[0].TaskID, producerToken, nil, "", true); st.status != http.StatusOK {
		t.Errorf("GET with the producer token: %d %s", st.status, st.body)
	}
}

// TestLookUpThroughEveryState: a resend is seen pending, scheduled,
// retrying with its last error and next attempt, sent, and dead-lettered
// with the API's code.
func TestLookUpThroughEveryState(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	enq := enqueue.New(b.rdb, enqueue.Options{DedupWindow: -1})
	state := func(id string) map[string]any {
		t.Helper()
		a := b.call(t, http.MethodGet, "/api/v1/resends/"+id, testToken, nil, "", true)
		var st map[string]any
		if err := json.Unmarshal([]byte(a.body), &st); err != nil || a.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", id, a.status, a.body)
		}
		return st
	}
	pending, err := enq.Enqueue(ctx, tasks.Resend{ProjectID: projectID, Username: "sent@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if st := state(pending.TaskID); st["state"] != "pending" {
		t.Errorf("before a worker runs: %v", st)
	}
	task, _ := tasks.NewTask(tasks.Resend{ProjectID: projectID, Username: "later@example.com"})
	info, err := asynq.NewClientFromRedisClient(b.rdb).Enqueue(task, asynq.Queue(tasks.QueueSignup), asynq.ProcessIn(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st := state(info.ID); st["state"] != "scheduled" || st["next_attempt_at"] == nil {
		t.Errorf("a scheduled task: %v", st)
	}
	down, _ := enq.Enqueue(ctx, tasks.Resend{ProjectID: projectID, Username: "down@example.com"})
	gone, _ := enq.Enqueue(ctx, tasks.Resend{ProjectID: projectID, Username: "unknown@example.com"})

	h := &worker.Handler{
		API: demoAPI(t), Outcomes: b.store, Log: quietLog(),
		Backoff: worker.Backoff{Initial: time.Hour, Max: time.Hour, Jitter: -1}, MaxAttempts: 3,
	}
	srv := worker.NewServer(b.rdb, h, worker.Config{Concurrency: 2, Logger: quietLog()})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	waitFor := func(id, want string) map[string]any {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st := state(id)
			if st["state"] == want {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s: %v, want %s", id, st, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if st := waitFor(pending.TaskID, "sent"); st["finished_at"] == nil || st["attempts"] != 1.0 {
		t.Errorf("sent: %v", st)
	}
	if st := waitFor(down.TaskID, "retrying"); st["last_error"] == nil || st["next_attempt_at"] == nil || st["attempts"] != 1.0 {
		t.Errorf("retrying: %v", st)
	}
	if st := waitFor(gone.TaskID, "dead_letter"); st["reason"] != "rejected" || st["error_code"] != "003-002" || st["http_status"] != 404.0 {
		t.Errorf("dead letter: %v", st)
	}
}

// TestProducerTokenNeedsTheFullToken: a producer token alone would leave
// every other path open.
func TestProducerTokenNeedsTheFullToken(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	_, err := web.New(web.Options{Redis: b.rdb, Outcomes: b.store, ProducerToken: producerToken})
	if err == nil || !strings.Contains(err.Error(), "ProducerToken needs Options.Token") {
		t.Errorf("New: %v", err)
	}
}
