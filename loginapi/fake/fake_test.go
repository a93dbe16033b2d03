package fake_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/loginapi"
	"github.com/resendq/resendq/loginapi/fake"
)

const (
	project = "0b8c6f1e-6b9a-4e4f-9d2c-5f3a1b2c3d4e"
	path    = "/api/user/resend_confirmation_link"
)

type bundle struct {
	api *fake.API
	srv *httptest.Server
}

func setup(t *testing.T) *bundle {
	t.Helper()
	api := fake.New()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &bundle{api: api, srv: srv}
}

// reply is what a test sees of an answer.
type reply struct {
	status     int
	code       string
	retryAfter string
	header     http.Header
}

// send makes a raw request; query is appended to path as is.
func (b *bundle) send(t *testing.T, method, pathAndQuery, contentType, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, b.srv.URL+pathAndQuery, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), header: resp.Header}
	if len(data) > 0 {
		var e struct {
			Error struct {
				Code    string          `json:"code"`
				Details json.RawMessage `json:"details"`
			} `json:"error"`
		}
		if err := json.Unmarshal(data, &e); err != nil || string(e.Error.Details) != "{}" {
			t.Fatalf("body %s is not the API's JSON error (%v)", data, err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("error Content-Type = %q", ct)
		}
		r.code = e.Error.Code
	} else if resp.StatusCode >= 300 {
		t.Errorf("status %d without a body", resp.StatusCode)
	}
	return r
}

// resend makes a valid call for username.
func (b *bundle) resend(t *testing.T, username string) reply {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"username": username})
	return b.send(t, http.MethodPost, path+"?projectId="+project, "application/json", string(body))
}

func (b *bundle) statuses(t *testing.T, username string, n int) []int {
	t.Helper()
	var got []int
	for range n {
		got = append(got, b.resend(t, username).status)
	}
	return got
}

func TestContractRejections(t *testing.T) {
	t.Parallel()
	q := "?projectId=" + project
	body := `{"username":"john@example.com"}`
	tests := []struct {
		name, method, path, ct, body string
		status                       int
		code                         string
	}{
		{"GET", http.MethodGet, path + q, "application/json", "", 405, "0"},
		{"wrong path", http.MethodPost, "/api/user/other" + q, "application/json", body, 404, "0"},
		{"no projectId", http.MethodPost, path, "application/json", body, 400, "002-028"},
		{"empty projectId", http.MethodPost, path + "?projectId=", "application/json", body, 400, "002-028"},
		{"bad projectId", http.MethodPost, path + "?projectId=123", "application/json", body, 400, "002-027"},
		{"uuid without dashes", http.MethodPost, path + "?projectId=0b8c6f1e6b9a4e4f9d2c5f3a1b2c3d4e", "application/json", body, 400, "002-027"},
		{"text/plain", http.MethodPost, path + q, "text/plain", body, 400, "0"},
		{"no content type", http.MethodPost, path + q, "", body, 400, "0"},
		{"empty body", http.MethodPost, path + q, "application/json", "", 400, "0"},
		{"not JSON", http.MethodPost, path + q, "application/json", "username=john", 400, "0"},
		{"array", http.MethodPost, path + q, "application/json", `["john"]`, 400, "0"},
		{"empty username", http.MethodPost, path + q, "application/json", `{"username":""}`, 400, "0"},
		{"number username", http.MethodPost, path + q, "application/json", `{"username":1}`, 400, "0"},
		{"extra key", http.MethodPost, path + q, "application/json", `{"username":"a","x":"b"}`, 400, "0"},
		{"wrong key case", http.MethodPost, path + q, "application/json", `{"Username":"a"}`, 400, "0"},
		{"huge body", http.MethodPost, path + q, "application/json", `{"username":"` + strings.Repeat("a", 20<<10) + `"}`, 400, "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			got := b.send(t, tt.method, tt.path, tt.ct, tt.body)
			if got.status != tt.status || got.code != tt.code {
				t.Errorf("got %d %q, want %d %q", got.status, got.code, tt.status, tt.code)
			}
			if tt.status == 405 && got.header.Get("Allow") != "POST" {
				t.Errorf("Allow = %q", got.header.Get("Allow"))
			}
			calls := b.api.Calls()
			if len(calls) != 1 || calls[0].Status != tt.status || b.api.Total() != 1 {
				t.Errorf("recorded %+v (total %d), want one call with status %d", calls, b.api.Total(), tt.status)
			}
		})
	}
}

func TestContractAccepts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := "?projectId=" + strings.ToUpper(project) + "&login_url=https%3A%2F%2Fexample.com%2Fcb&payload=p%261"
	got := b.send(t, http.MethodPost, "/user/resend_confirmation_link"+q, "Application/JSON; charset=utf-8", ` { "username" : "b\u00e9a" } `)
	if got.status != http.StatusNoContent {
		t.Fatalf("status = %d, want 204", got.status)
	}
	calls := b.api.Calls()
	want := fake.Call{ProjectID: strings.ToUpper(project), Username: "béa", LoginURL: "https://example.com/cb", Payload: "p&1", Status: 204}
	if len(calls) != 1 || calls[0].At.IsZero() {
		t.Fatalf("calls = %+v", calls)
	}
	calls[0].At = time.Time{}
	if calls[0] != want {
		t.Errorf("call = %+v, want %+v", calls[0], want)
	}
}

func TestScriptPerUsername(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.api.Script("ann@example.com", fake.Behavior{Status: 404, Code: "003-002", Description: "User not found."})
	b.api.Script("bob@example.com", fake.Behavior{Status: 500})
	if got := b.resend(t, "ann@example.com"); got.status != 404 || got.code != "003-002" {
		t.Errorf("ann: %d %q", got.status, got.code)
	}
	if got := b.resend(t, "bob@example.com"); got.status != 500 || got.code != "0" {
		t.Errorf("bob: %d %q, want 500 with default code 0", got.status, got.code)
	}
	if got := b.resend(t, "cid@example.com"); got.status != 204 {
		t.Errorf("unscripted: %d", got.status)
	}
}

func TestCounters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.statuses(t, "ann@example.com", 3)
	b.resend(t, "bob@example.com")
	b.send(t, http.MethodPost, path, "application/json", `{"username":"ann@example.com"}`) // rejected, still counted
	if n := b.api.Count("ann@example.com"); n != 4 {
		t.Errorf("Count(ann) = %d, want 4", n)
	}
	if n := b.api.Count("bob@example.com"); n != 1 {
		t.Errorf("Count(bob) = %d, want 1", n)
	}
	if n := b.api.Count("nobody"); n != 0 {
		t.Errorf("Count(nobody) = %d", n)
	}
	if n := b.api.Total(); n != 5 {
		t.Errorf("Total = %d, want 5", n)
	}
}

func TestRateLimitedThenSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.api.Script("ann", fake.Behavior{RateLimited: 2, RetryAfter: "3"})
	for i := range 2 {
		got := b.resend(t, "ann")
		if got.status != 429 || got.retryAfter != "3" || got.code != "0" {
			t.Errorf("call %d: %d Retry-After %q code %q, want 429 3 0", i+1, got.status, got.retryAfter, got.code)
		}
	}
	if got := b.resend(t, "ann"); got.status != 204 || got.retryAfter != "" {
		t.Errorf("third call: %d Retry-After %q", got.status, got.retryAfter)
	}
	b.api.Script("ann", fake.Behavior{RateLimited: 1})
	if got := b.resend(t, "ann"); got.status != 429 || got.retryAfter != "" {
		t.Errorf("after re-script: %d Retry-After %q, want 429 without header", got.status, got.retryAfter)
	}
}

func TestServerErrorsThenSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.api.Script("ann", fake.Behavior{RateLimited: 1, ServerErrors: 2, Status: 422, Code: "003-061"})
	want := []int{429, 503, 503, 422, 422}
	if got := b.statuses(t, "ann", 5); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	if got := b.statuses(t, "bob", 1); got[0] != 204 {
		t.Errorf("bob = %v", got)
	}
}

func TestDefaultCountsGlobally(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.api.SetDefault(fake.Behavior{ServerErrors: 2})
	got := []int{b.resend(t, "ann").status, b.resend(t, "bob").status, b.resend(t, "cid").status}
	if fmt.Sprint(got) != "[503 503 204]" {
		t.Errorf("statuses = %v, want [503 503 204]", got)
	}
}

func TestGlobalRateLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.api.SetRateLimit(0.001, 2)
	for i := range 2 {
		if got := b.resend(t, "ann"); got.status != 204 {
			t.Fatalf("call %d within burst: %d", i+1, got.status)
		}
	}
	got := b.resend(t, "ann")
	if got.status != 429 || got.retryAfter != "1" || got.code != "0" {
		t.Errorf("beyond the limit: %d Retry-After %q code %q", got.status, got.retryAfter, got.code)
	}
	if got := b.send(t, http.MethodGet, path, "", ""); got.status != 405 {
		t.Errorf("invalid call under the limit: %d, want the contract's 405", got.status)
	}
	if n := b.api.RateLimited(); n != 1 || b.api.Answered(429) != 1 || b.api.Answered(204) != 2 {
		t.Errorf("RateLimited() = %d, Answered(429) = %d, Answered(204) = %d; want 1, 1, 2", n, b.api.Answered(429), b.api.Answered(204))
	}
	b.api.SetRateLimit(0, 0)
	if got := b.resend(t, "ann"); got.status != 204 {
		t.Errorf("limit removed: %d", got.status)
	}
}

func TestOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.api.Script("ann", fake.Behavior{Status: 404, Code: "003-002"})
	b.api.SetOutage(project, 0)
	if got := b.resend(t, "ann"); got.status != 503 || got.code != "0" {
		t.Errorf("in an outage of its project: %d %q, want 503 code 0", got.status, got.code)
	}
	if got := b.send(t, http.MethodGet, path, "", ""); got.status != 405 {
		t.Errorf("an invalid call in an outage: %d, want the contract's 405", got.status)
	}
	b.api.EndOutage(project)
	b.api.SetOutage("", http.StatusBadGateway)
	if got := b.resend(t, "ann"); got.status != 502 {
		t.Errorf("in an outage of every project: %d, want 502", got.status)
	}
	b.api.EndOutage("")
	if got := b.resend(t, "ann"); got.status != 404 {
		t.Errorf("after the outage: %d, want the script's 404", got.status)
	}
	b.api.SetOutage("00000000-0000-0000-0000-000000000000", 0)
	if got := b.resend(t, "ann"); got.status != 404 {
		t.Errorf("during another project's outage: %d, want the script's 404", got.status)
	}
}

// serve calls the handler directly, without a network round trip.
func serve(api http.Handler, username string) int {
	body := `{"username":"` + username + `"}`
	r := httptest.NewRequest(http.MethodPost, path+"?projectId="+project, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	api.ServeHTTP(w, r)
	return w.Code
}

func TestCallsRingBuffer(t *testing.T) {
	t.Parallel()
	api := fake.New()
	const extra = 5
	for i := range fake.MaxCalls + extra {
		serve(api, fmt.Sprintf("user%d", i))
	}
	calls := api.Calls()
	if len(calls) != fake.MaxCalls || api.Total() != fake.MaxCalls+extra {
		t.Fatalf("kept %d calls of %d, want %d", len(calls), api.Total(), fake.MaxCalls)
	}
	first, last := calls[0].Username, calls[len(calls)-1].Username
	if first != fmt.Sprintf("user%d", extra) || last != fmt.Sprintf("user%d", fake.MaxCalls+extra-1) {
		t.Errorf("oldest %q, newest %q", first, last)
	}
}

func TestCountBound(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("makes MaxUsernames calls")
	}
	api := fake.New()
	api.Script("scripted", fake.Behavior{})
	for i := range fake.MaxUsernames {
		serve(api, fmt.Sprintf("u%d", i))
	}
	serve(api, "scripted")
	if n := api.Count("u0"); n != 1 {
		t.Errorf("Count(u0) = %d, want 1", n)
	}
	if n := api.Count(fmt.Sprintf("u%d", fake.MaxUsernames-1)); n != 0 {
		t.Errorf("Count of the username beyond the bound = %d, want 0", n)
	}
	if n := api.Count("scripted"); n != 1 {
		t.Errorf("Count(scripted) = %d, want 1", n)
	}
}

func TestDemoRules(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.api.SetRules(fake.DemoRules)
	b.api.Script("unknown-but-scripted@example.com", fake.Behavior{})
	tests := []struct {
		username string
		want     string
		code     string
	}{
		{"unknown.ann@example.com", "[404 404]", "003-002"},
		{"BadProject@example.com", "[400 400]", "003-019"},
		{"confirmed+1@example.com", "[422 422]", "003-061"},
		{"ratelimited.bob@example.com", "[429 429 204 204]", "0"},
		{"flaky@example.com", "[503 503 204]", "0"},
		{"down@example.com", "[500 500 500]", "0"},
		{"alice@unknown.example.com", "[204]", ""},
		{"unknown-but-scripted@example.com", "[204]", ""},
	}
	for _, tt := range tests {
		var statuses []int
		var code string
		for i := range strings.Count(tt.want, " ") + 1 {
			r := b.resend(t, tt.username)
			statuses = append(statuses, r.status)
			if i == 0 {
				code = r.code
			}
		}
		if got := fmt.Sprint(statuses); got != tt.want || code != tt.code {
			t.Errorf("%s: statuses %s code %q, want %s %q", tt.username, got, code, tt.want, tt.code)
		}
	}
	if _, ok := fake.DemoRules("alice@example.com"); ok {
		t.Error("DemoRules matched an ordinary username")
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.api.Script("slow", fake.Behavior{Latency: 20 * time.Millisecond, Status: 404})
	start := time.Now()
	if got := b.resend(t, "slow"); got.status != 404 {
		t.Errorf("status = %d", got.status)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("answered after %v, before the latency", d)
	}
}

func TestLatencyHonoursCancellation(t *testing.T) {
	t.Parallel()
	api := fake.New()
	api.Script("slow", fake.Behavior{Latency: time.Hour})
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.ServeHTTP(w, r)
		close(done)
	}))
	t.Cleanup(srv.Close)
	c, err := loginapi.New(loginapi.Options{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.ResendConfirmation(ctx, loginapi.Request{ProjectID: project, Username: "slow"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler kept waiting after the client left")
	}
	if calls := api.Calls(); len(calls) != 1 || calls[0].Status != fake.StatusClientClosed {
		t.Errorf("calls = %+v, want one with status %d", calls, fake.StatusClientClosed)
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.api.Script("ann", fake.Behavior{Status: 404})
	b.api.SetDefault(fake.Behavior{Status: 500})
	b.api.SetRules(fake.DemoRules)
	b.api.SetRateLimit(0.001, 1)
	b.resend(t, "ann")
	b.api.Reset()
	if b.api.Total() != 0 || len(b.api.Calls()) != 0 || b.api.Count("ann") != 0 {
		t.Fatalf("after Reset: total %d, calls %d, count %d", b.api.Total(), len(b.api.Calls()), b.api.Count("ann"))
	}
	if got := fmt.Sprint(b.statuses(t, "ann", 2), b.statuses(t, "down", 1)); got != "[204 204] [204]" {
		t.Errorf("after Reset: %s, want everything 204", got)
	}
}

func TestClientRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.api.Script("unknown@example.com", fake.Behavior{Status: 404, Code: "003-002", Description: "User not found."})
	b.api.Script("busy@example.com", fake.Behavior{RateLimited: 1, RetryAfter: "2"})
	c, err := loginapi.New(loginapi.Options{BaseURL: b.srv.URL + "/api/"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := loginapi.Request{ProjectID: project, Username: "ann@example.com", LoginURL: "https://example.com/cb", Payload: "x"}
	if status, err := c.ResendConfirmation(ctx, req); status != 204 || err != nil {
		t.Errorf("valid call: (%d, %v)", status, err)
	}
	if calls := b.api.Calls(); len(calls) != 1 || calls[0].LoginURL != req.LoginURL || calls[0].Payload != "x" {
		t.Errorf("recorded %+v", calls)
	}
	req.Username = "unknown@example.com"
	status, err := c.ResendConfirmation(ctx, req)
	var apiErr *loginapi.Error
	if status != 404 || !errors.As(err, &apiErr) || apiErr.Code != "003-002" || apiErr.Description != "User not found." {
		t.Errorf("scripted 404: (%d, %v)", status, err)
	}
	req.Username = "busy@example.com"
	status, err = c.ResendConfirmation(ctx, req)
	if !loginapi.IsRateLimited(err) || !errors.As(err, &apiErr) || apiErr.RetryAfter != 2*time.Second {
		t.Errorf("scripted 429: (%d, %v)", status, err)
	}
}

// discard is a ResponseWriter that keeps nothing, to measure the handler alone.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

func BenchmarkServeHTTP(b *testing.B) {
	api := fake.New()
	body := `{"username":"john@example.com"}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discard{h: http.Header{}}
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, path+"?projectId="+project, strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			api.ServeHTTP(w, r)
		}
	})
}

func BenchmarkClientRoundTrip(b *testing.B) {
	srv := httptest.NewServer(fake.New())
	defer srv.Close()
	c, err := loginapi.New(loginapi.Options{BaseURL: srv.URL + "/api"})
	if err != nil {
		b.Fatal(err)
	}
	req := loginapi.Request{ProjectID: project, Username: "john@example.com"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.ResendConfirmation(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
