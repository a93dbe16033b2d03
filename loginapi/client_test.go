package loginapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/resendq/resendq/loginapi"
)

const (
	testProject = "0b8c6f1e-6b9a-4e4f-9d2c-5f3a1b2c3d4e"
	testUser    = "john@example.com"
	apiPath     = "/api/user/resend_confirmation_link"
)

// bundle is what setup returns: a server with its own mux and a client whose
// base URL has the /api prefix the real API uses.
type bundle struct {
	mux    *http.ServeMux
	server *httptest.Server
	client *loginapi.Client
}

func setup(t *testing.T, opts loginapi.Options) *bundle {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	if opts.BaseURL == "" {
		opts.BaseURL = srv.URL + "/api/"
	}
	c, err := loginapi.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &bundle{mux: mux, server: srv, client: c}
}

// reply registers a handler answering status with body and headers.
func (b *bundle) reply(status int, body string, headers ...string) {
	b.mux.HandleFunc(apiPath, func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	})
}

func call(t *testing.T, c *loginapi.Client, req loginapi.Request) (int, error) {
	t.Helper()
	if req.ProjectID == "" {
		req.ProjectID = testProject
	}
	if req.Username == "" {
		req.Username = testUser
	}
	return c.ResendConfirmation(context.Background(), req)
}

func TestNewBaseURL(t *testing.T) {
	t.Parallel()
	good := []string{"", "https://login.xsolla.com/api", "http://127.0.0.1:8080/api/", "https://h"}
	for _, base := range good {
		if _, err := loginapi.New(loginapi.Options{BaseURL: base}); err != nil {
			t.Errorf("New(%q): %v", base, err)
		}
	}
	bad := []string{"login.xsolla.com/api", "/api", "ftp://h/api", "https://", "https://h/api?x=1", "https://h/api#f", "://bad", "https://user:secret@h/api", "https://h/a b"}
	for _, base := range bad {
		_, err := loginapi.New(loginapi.Options{BaseURL: base})
		if err == nil || !strings.Contains(err.Error(), "base URL") {
			t.Errorf("New(%q) = %v, want an error naming the base URL", base, err)
		}
	}
}

func TestRequestShape(t *testing.T) {
	t.Parallel()
	b := setup(t, loginapi.Options{UserAgent: "resendq/1.2.3"})
	got := make(chan *http.Request, 1)
	bodies := make(chan string, 1)
	b.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- string(body)
		w.WriteHeader(http.StatusNoContent)
	})
	status, err := call(t, b.client, loginapi.Request{})
	if status != http.StatusNoContent || err != nil {
		t.Fatalf("got (%d, %v), want (204, nil)", status, err)
	}
	r, body := <-got, <-bodies
	if r.Method != http.MethodPost || r.URL.Path != apiPath {
		t.Errorf("request %s %s, want POST %s", r.Method, r.URL.Path, apiPath)
	}
	q := r.URL.Query()
	if q.Get("projectId") != testProject {
		t.Errorf("projectId = %q", q.Get("projectId"))
	}
	for _, name := range []string{"login_url", "payload"} {
		if _, ok := q[name]; ok {
			t.Errorf("%s sent although empty", name)
		}
	}
	if want := `{"username":"john@example.com"}`; body != want {
		t.Errorf("body = %s, want %s", body, want)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if a := r.Header.Get("Accept"); a != "application/json" {
		t.Errorf("Accept = %q", a)
	}
	if ua := r.Header.Get("User-Agent"); ua != "resendq/1.2.3" {
		t.Errorf("User-Agent = %q", ua)
	}
}

// capture answers every call 204 and hands over each request and its
// body.
func (b *bundle) capture() (<-chan *http.Request, <-chan []byte) {
	got := make(chan *http.Request, 1)
	bodies := make(chan []byte, 1)
	b.mux.HandleFunc(apiPath, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- body
		w.WriteHeader(http.StatusNoContent)
	})
	return got, bodies
}

func TestRequestOptionalParamsAndEscaping(t *testing.T) {
	t.Parallel()
	b := setup(t, loginapi.Options{})
	got, bodies := b.capture()
	req := loginapi.Request{
		Username: "Ann \"the <best>\" Ünal\n",
		LoginURL: "https://example.com/cb?a=1&b=2",
		Payload:  `{"k": "v & w"}`,
	}
	if _, err := call(t, b.client, req); err != nil {
		t.Fatal(err)
	}
	r, body := <-got, <-bodies
	q := r.URL.Query()
	if q.Get("login_url") != req.LoginURL || q.Get("payload") != req.Payload {
		t.Errorf("login_url = %q, payload = %q", q.Get("login_url"), q.Get("payload"))
	}
	var decoded map[string]string
	if err := json.Unmarshal(body, &decoded); err != nil || len(decoded) != 1 || decoded["username"] != req.Username {
		t.Errorf("body %s decodes to %v (%v)", body, decoded, err)
	}
	if ua := r.Header.Get("User-Agent"); !strings.HasPrefix(ua, "resendq/") {
		t.Errorf("default User-Agent = %q", ua)
	}
}

func TestStatuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   *loginapi.Error
	}{
		{"204", 204, "", nil},
		{"200 with body", 200, `{"ok":true}`, nil},
		{"404 with code", 404, `{"error":{"code":"003-002","description":"User not found.","details":{}}}`,
			&loginapi.Error{StatusCode: 404, Code: "003-002", Description: "User not found."}},
		{"400 not JSON", 400, "<html>bad request</html>",
			&loginapi.Error{StatusCode: 400, Description: "Bad Request"}},
		{"500 huge body", 500, strings.Repeat("x", 1<<20),
			&loginapi.Error{StatusCode: 500, Description: "Internal Server Error"}},
		{"302 not followed", 302, "",
			&loginapi.Error{StatusCode: 302, Description: "Found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, loginapi.Options{})
			b.reply(tt.status, tt.body, "Location", "/elsewhere")
			status, err := call(t, b.client, loginapi.Request{})
			if status != tt.status {
				t.Errorf("status = %d, want %d", status, tt.status)
			}
			checkAPIError(t, err, tt.want)
		})
	}
}

// TestLongRequestArrivesWhole: the connection's write buffer is small (a
// call is a few hundred bytes); a call many times its size arrives whole.
func TestLongRequestArrivesWhole(t *testing.T) {
	t.Parallel()
	b := setup(t, loginapi.Options{})
	got, bodies := b.capture()
	req := loginapi.Request{
		Username: strings.Repeat("u", 255) + "@example.com",
		LoginURL: "https://example.com/cb?state=" + strings.Repeat("s", 3000),
		Payload:  strings.Repeat("p", 2000),
	}
	if status, err := call(t, b.client, req); status != http.StatusNoContent || err != nil {
		t.Fatalf("status %d, %v", status, err)
	}
	r, body := <-got, <-bodies
	if q := r.URL.Query(); q.Get("login_url") != req.LoginURL || q.Get("payload") != req.Payload {
		t.Errorf("login_url of %d bytes, payload of %d: not what was sent", len(q.Get("login_url")), len(q.Get("payload")))
	}
	var decoded map[string]string
	if err := json.Unmarshal(body, &decoded); err != nil || decoded["username"] != req.Username {
		t.Errorf("body %s decodes to %v (%v)", body, decoded, err)
	}
}

// TestLongResponseHeaders: the connection's read buffer is small (a call's
// answer is a few hundred bytes); answers with long headers still parse.
func TestLongResponseHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t, loginapi.Options{})
	headers := []string{"X-Trace", strings.Repeat("t", 6000)}
	for i := range 20 {
		headers = append(headers, fmt.Sprintf("X-Filler-%d", i), strings.Repeat("f", 400))
	}
	b.reply(404, `{"error":{"code":"003-002","description":"User not found."}}`, headers...)
	status, err := call(t, b.client, loginapi.Request{})
	if status != 404 {
		t.Errorf("status = %d, want 404", status)
	}
	checkAPIError(t, err, &loginapi.Error{StatusCode: 404, Code: "003-002", Description: "User not found."})
}

func checkAPIError(t *testing.T, err error, want *loginapi.Error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Errorf("err = %v, want nil", err)
		}
		return
	}
	var got *loginapi.Error
	if !errors.As(err, &got) {
		t.Fatalf("err = %v (%T), want *loginapi.Error", err, err)
	}
	if *got != *want {
		t.Errorf("err = %+v, want %+v", *got, *want)
	}
}

func TestRateLimitedRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Second) // HTTP dates are in whole seconds
	tests := []struct {
		name, header string
		want         time.Duration
	}{
		{"seconds", "120", 120 * time.Second},
		{"http date", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"past date", now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"garbage", "soon", 0},
		{"absent", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, loginapi.Options{Clock: clockwork.NewFakeClockAt(now)})
			var headers []string
			if tt.header != "" {
				headers = []string{"Retry-After", tt.header}
			}
			b.reply(429, `{"error":{"code":"0","description":"Too many requests","details":{}}}`, headers...)
			status, err := call(t, b.client, loginapi.Request{})
			if status != 429 || !loginapi.IsRateLimited(err) {
				t.Fatalf("got (%d, %v), want a 429 *Error", status, err)
			}
			checkAPIError(t, err, &loginapi.Error{StatusCode: 429, Code: "0", Description: "Too many requests", RetryAfter: tt.want})
		})
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, loginapi.Options{Timeout: 50 * time.Millisecond})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	b.mux.HandleFunc(apiPath, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	status, err := call(t, b.client, loginapi.Request{})
	if status != 0 || err == nil {
		t.Fatalf("got (%d, %v), want (0, timeout)", status, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(%v, DeadlineExceeded) = false", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%v is not a net.Error timeout", err)
	}
	checkNoUsername(t, err)
}

func TestContextCanceled(t *testing.T) {
	t.Parallel()
	b := setup(t, loginapi.Options{})
	started := make(chan struct{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b.mux.HandleFunc(apiPath, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	status, err := b.client.ResendConfirmation(ctx, loginapi.Request{ProjectID: testProject, Username: testUser})
	if status != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("got (%d, %v), want (0, context.Canceled)", status, err)
	}
	checkNoUsername(t, err)
}

func TestContextAlreadyCanceled(t *testing.T) {
	t.Parallel()
	b := setup(t, loginapi.Options{})
	b.reply(204, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	status, err := b.client.ResendConfirmation(ctx, loginapi.Request{ProjectID: testProject, Username: testUser})
	if status != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("got (%d, %v), want (0, context.Canceled)", status, err)
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL + "/api"
	srv.Close()
	c, err := loginapi.New(loginapi.Options{BaseURL: base})
	if err != nil {
		t.Fatal(err)
	}
	status, err := call(t, c, loginapi.Request{LoginURL: "https://example.com/cb?secret=1", Payload: "custom-payload"})
	if status != 0 || err == nil {
		t.Fatalf("got (%d, %v), want (0, error)", status, err)
	}
	var apiErr *loginapi.Error
	var opErr *net.OpError
	if errors.As(err, &apiErr) || !errors.As(err, &opErr) {
		t.Errorf("err = %v (%T), want a wrapped *net.OpError", err, err)
	}
	checkNoUsername(t, err)
	// The error goes into outcome records and asynq's archive: it names the
	// endpoint, not the request's query.
	for _, leak := range []string{"example.com", "secret", "custom-payload", testProject, "?"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("error text %q contains %q", err, leak)
		}
	}
	if !strings.Contains(err.Error(), base+"/user/resend_confirmation_link") {
		t.Errorf("error text %q does not name the endpoint", err)
	}
}

func checkNoUsername(t *testing.T, err error) {
	t.Helper()
	if strings.Contains(err.Error(), testUser) {
		t.Errorf("error text %q contains the username", err)
	}
}

func BenchmarkResendConfirmation(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	c, err := loginapi.New(loginapi.Options{BaseURL: srv.URL + "/api"})
	if err != nil {
		b.Fatal(err)
	}
	req := loginapi.Request{ProjectID: testProject, Username: testUser}
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

// TestHTTPS: an https base URL, with a CA the client is told to trust; a
// client that does not trust it fails with a connection error.
func TestHTTPS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c, err := loginapi.New(loginapi.Options{BaseURL: srv.URL + "/api", TLSConfig: &tls.Config{RootCAs: roots}})
	if err != nil {
		t.Fatal(err)
	}
	if status, err := call(t, c, loginapi.Request{}); status != http.StatusNoContent || err != nil {
		t.Fatalf("got (%d, %v), want (204, nil)", status, err)
	}
	untrusting, err := loginapi.New(loginapi.Options{BaseURL: srv.URL + "/api"})
	if err != nil {
		t.Fatal(err)
	}
	var unknown x509.UnknownAuthorityError
	if status, err := call(t, untrusting, loginapi.Request{}); status != 0 || !errors.As(err, &unknown) {
		t.Fatalf("got (%d, %v), want (0, an unknown authority)", status, err)
	}
}

// TestProxyFromEnvironment: HTTPS_PROXY is honoured, as net/http does: the
// call goes through the proxy's CONNECT tunnel to a host only the proxy
// can resolve.
func TestProxyFromEnvironment(t *testing.T) {
	p := startProxiedAPI(t, true, 0)
	if status, err := call(t, p.client, loginapi.Request{}); status != http.StatusNoContent || err != nil {
		t.Fatalf("got (%d, %v), want (204, nil) through the proxy", status, err)
	}
	if host := <-p.tunnels; host != "login.api.test:443" {
		t.Errorf("tunnel to %q", host)
	}
}

// TestCancelledWhileConnecting: a call whose context ends while its
// connection is being opened (here, a proxy slow to answer CONNECT) sends
// nothing once it has the connection.
func TestCancelledWhileConnecting(t *testing.T) {
	p := startProxiedAPI(t, false, 300*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-p.tunnels; time.Sleep(50 * time.Millisecond); cancel() }()
	status, err := p.client.ResendConfirmation(ctx, loginapi.Request{ProjectID: testProject, Username: testUser})
	if status != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("got (%d, %v), want (0, context.Canceled)", status, err)
	}
	// Its connection closed, the tunnel ends, and then the API's side:
	// anything sent through it has been answered by then.
	select {
	case <-p.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the API's connection through the proxy did not end")
	}
	if n := p.calls.Load(); n != 0 {
		t.Errorf("the API got %d calls from a call cancelled before it was sent", n)
	}
}

// TestProxySchemeChecked: a proxy scheme the client cannot speak is an
// error of New, even where NO_PROXY leaves the choice to each call.
func TestProxySchemeChecked(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "https://proxy.example.com")
	t.Setenv("NO_PROXY", "internal.example.com")
	_, err := loginapi.New(loginapi.Options{BaseURL: "https://login.api.test/api"})
	if !errors.Is(err, loginapi.ErrProxy) || !strings.Contains(err.Error(), `"https"`) {
		t.Fatalf("New = %v, want ErrProxy naming the scheme", err)
	}
}

// proxiedAPI is a Login API double, on TLS or plain HTTP, reached through a
// CONNECT proxy set in HTTPS_PROXY and HTTP_PROXY (so: no t.Parallel), as
// login.api.test, a name only the proxy resolves.
type proxiedAPI struct {
	client  *loginapi.Client
	tunnels chan string   // the host of each CONNECT
	calls   *atomic.Int32 // calls the API got
	closed  chan struct{} // a connection of the API's ended, its calls answered
}

func startProxiedAPI(t *testing.T, useTLS bool, connectDelay time.Duration) proxiedAPI {
	t.Helper()
	p := proxiedAPI{tunnels: make(chan string, 1), calls: new(atomic.Int32), closed: make(chan struct{}, 8)}
	api := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.calls.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	api.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			p.closed <- struct{}{}
		}
	}
	base, host := "http://login.api.test/api", "login.api.test:80"
	if useTLS {
		api.StartTLS()
		base, host = "https://login.api.test/api", "login.api.test:443"
	} else {
		api.Start()
	}
	t.Cleanup(api.Close)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.Host != host {
			http.Error(w, "unexpected "+r.Method+" "+r.Host, http.StatusBadGateway)
			return
		}
		p.tunnels <- r.Host
		time.Sleep(connectDelay)
		upstream, err := net.Dial("tcp", api.Listener.Addr().String())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		client, buffered, err := http.NewResponseController(w).Hijack()
		if err != nil {
			_ = upstream.Close()
			return
		}
		_, _ = io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n")
		// What the client sent may already sit in the server's buffer.
		go func() { _, _ = io.Copy(upstream, buffered); _ = upstream.Close() }()
		_, _ = io.Copy(client, upstream)
		_ = client.Close()
	}))
	t.Cleanup(proxy.Close)
	t.Setenv("HTTPS_PROXY", proxy.URL)
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("NO_PROXY", "")
	opts := loginapi.Options{BaseURL: base}
	if useTLS {
		roots := x509.NewCertPool()
		roots.AddCert(api.Certificate())
		// httptest's certificate is for example.com, so name it.
		opts.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "example.com"}
	}
	c, err := loginapi.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	p.client = c
	return p
}

// TestLongTrailers: trailers longer than the read buffer, after a 2xx and
// its body, leave the answer a 2xx.
func TestLongTrailers(t *testing.T) {
	t.Parallel()
	b := setup(t, loginapi.Options{})
	b.mux.HandleFunc(apiPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Trace")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "{}")
		w.Header().Set("X-Trace", strings.Repeat("t", 2000))
	})
	if status, err := call(t, b.client, loginapi.Request{}); status != http.StatusOK || err != nil {
		t.Fatalf("got (%d, %v), want (200, nil)", status, err)
	}
}

// TestTimeoutInsideABrokenChunk: a deadline that strikes inside a chunked
// body is still a timeout (fasthttp's own error for it hides that).
func TestTimeoutInsideABrokenChunk(t *testing.T) {
	t.Parallel()
	b := setup(t, loginapi.Options{Timeout: 100 * time.Millisecond})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b.mux.HandleFunc(apiPath, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r")
		<-release
	})
	status, err := call(t, b.client, loginapi.Request{})
	var ne net.Error
	if status != 0 || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got (%d, %v), want (0, a timeout)", status, err)
	}
}

// TestConnectionsReused: calls one after another share one connection.
func TestConnectionsReused(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := loginapi.New(loginapi.Options{BaseURL: srv.URL + "/api"})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if status, err := call(t, c, loginapi.Request{}); status != 204 || err != nil {
			t.Fatalf("got (%d, %v)", status, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("20 calls opened %d connections, want 1", n)
	}
}

// TestManyCallsAtOnce: every call in flight has a connection of its own,
// beyond net/http's and fasthttp's default of 512 per host.
func TestManyCallsAtOnce(t *testing.T) {
	t.Parallel()
	const n = 600
	var arrived sync.WaitGroup
	arrived.Add(n)
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()
	b := setup(t, loginapi.Options{Timeout: time.Minute})
	b.mux.HandleFunc(apiPath, func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		select {
		case <-all: // answered once every call has arrived
		case <-time.After(30 * time.Second):
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	errs := make(chan error, n)
	for range n {
		go func() {
			status, err := b.client.ResendConfirmation(context.Background(), loginapi.Request{ProjectID: testProject, Username: testUser})
			if err == nil && status != http.StatusNoContent {
				err = fmt.Errorf("status %d", status)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("a call of %d at once: %v", n, err)
		}
	}
}

// TestLongErrorBody: past 64 KiB, an answer is taken from its status alone.
func TestLongErrorBody(t *testing.T) {
	t.Parallel()
	b := setup(t, loginapi.Options{})
	b.reply(422, `{"error":{"code":"003-003","description":"`+strings.Repeat("x", 100<<10)+`"}}`, "Retry-After", "7")
	status, err := call(t, b.client, loginapi.Request{})
	if status != 422 {
		t.Errorf("status = %d, want 422", status)
	}
	checkAPIError(t, err, &loginapi.Error{StatusCode: 422, Description: "Unprocessable Entity", RetryAfter: 7 * time.Second})
	// The connection, its body unread, is not reused: the next call works.
	if status, _ := call(t, b.client, loginapi.Request{}); status != 422 {
		t.Errorf("second call: status %d, want 422", status)
	}
}
