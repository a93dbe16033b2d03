// Package loginapi is the HTTP client of the Xsolla Login endpoint that
// resends an account confirmation email:
//
//	POST {api-base}/user/resend_confirmation_link?projectId=...
//
// A call answers the HTTP status and, for anything but 2xx, a *Error built by
// CheckResponse. Classifying outcomes (retry, dead letter) is the caller's job.
package loginapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpproxy"
	"golang.org/x/net/http/httpproxy"
)

// DefaultBaseURL is the API base used when Options.BaseURL is empty.
const DefaultBaseURL = "https://login.xsolla.com/api"

// ErrProxy is New's error when the proxy of the environment (HTTPS_PROXY,
// HTTP_PROXY, NO_PROXY) cannot be used, as errors.Is tells.
var ErrProxy = errors.New("loginapi: the proxy settings (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) cannot be used")

// DefaultTimeout bounds a whole call (connect, send, answer) when
// Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

const (
	endpointPath     = "/user/resend_confirmation_link"
	defaultUserAgent = "resendq/dev"
	// maxConns is no bound in practice: the caller bounds its calls (the
	// worker, to its --concurrency), and each call in flight needs its own
	// connection.
	maxConns = math.MaxInt32
	// writeBufferSize and readBufferSize are the buffers of one connection
	// to the API while it is sent or answered. A call is a few hundred bytes
	// each way, and a worker at concurrency 400 waits on 400 answers at
	// once. Longer requests go in more writes; longer response headers are
	// read again in a buffer of maxHeaderBytes.
	writeBufferSize = 512
	readBufferSize  = 1 << 10
	// maxIdle is how long a connection may wait unused for its next call.
	// Unlike net/http's, fasthttp's pool does not read idle connections, so
	// it learns that the server closed one only when a call fails on it;
	// servers close idle connections after 5s (Node.js) to 75s (nginx).
	maxIdle = 4 * time.Second
	// maxHeaderBytes is the most of a response's headers read.
	maxHeaderBytes = 64 << 10
	// maxBodyBytes is the most of a response body read: past it, an
	// answer is taken from its status and headers alone.
	maxBodyBytes = 64 << 10
)

// Request is one resend call.
type Request struct {
	// ProjectID is the Login project ID (a UUID); sent as the projectId query parameter.
	ProjectID string
	// Username is the user's username or email address; sent in the JSON body.
	Username string
	// LoginURL is sent as login_url only when non-empty.
	LoginURL string
	// Payload is sent as payload only when non-empty.
	Payload string
}

// Options configure a Client. The zero value is usable.
type Options struct {
	// BaseURL is the API base, an absolute http(s) URL without query or
	// fragment; a trailing slash is tolerated. Default DefaultBaseURL.
	BaseURL string
	// Timeout bounds a whole call: connect (through the proxy of
	// HTTPS_PROXY / HTTP_PROXY / NO_PROXY, if any), TLS, send, answer.
	// Default DefaultTimeout.
	Timeout time.Duration
	// TLSConfig is the TLS configuration of an https BaseURL, e.g. to trust
	// a private CA. Default: the system's roots.
	TLSConfig *tls.Config
	// UserAgent is the User-Agent header. Default "resendq/dev"; callers pass
	// "resendq/<version>".
	UserAgent string
	// Clock turns an HTTP-date Retry-After into a duration. Default: the
	// real clock.
	Clock clockwork.Clock
}

// Client calls the resend endpoint. It is safe for concurrent use.
//
// It speaks HTTP/1.1 over a pool of keep-alive connections (fasthttp): a
// call runs on its caller's goroutine from start to end, where net/http's
// client hands each call to two goroutines of its connection. A worker
// with hundreds of calls in flight so keeps half the goroutines, and its
// garbage collector, which scans every goroutine's stack, half the work.
type Client struct {
	hc        *fasthttp.HostClient
	calls     sync.Map // *fasthttp.Request → *call, while it is in flight
	endpointQ string   // "{base}/user/resend_confirmation_link?projectId="
	userAgent string
	timeout   time.Duration
	clock     clockwork.Clock
}

// New checks opts, fills in the defaults and precomputes the endpoint URL.
// The error says what is wrong with BaseURL or the proxy settings.
func New(opts Options) (*Client, error) {
	base := opts.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := checkBaseURL(base)
	if err != nil {
		return nil, err
	}
	c := &Client{
		endpointQ: strings.TrimRight(base, "/") + endpointPath + "?projectId=",
		userAgent: opts.UserAgent,
		timeout:   opts.Timeout,
		clock:     opts.Clock,
	}
	if c.userAgent == "" {
		c.userAgent = defaultUserAgent
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.clock == nil {
		c.clock = clockwork.NewRealClock()
	}
	isTLS := u.Scheme == "https"
	// The proxy settings come from the environment, as net/http's do. Names
	// resolve on each dial, as net/http's do, rather than in a cache with a
	// goroutine of its own per Client.
	dialer := fasthttpproxy.Dialer{
		TCPDialer:     fasthttp.TCPDialer{DisableDNSResolution: true},
		DialDualStack: true, Timeout: c.timeout, ConnectTimeout: c.timeout,
	}
	if err := checkProxy(u); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProxy, err)
	}
	dial, err := dialer.GetDialFuncForTLS(true, isTLS)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProxy, err)
	}
	c.hc = &fasthttp.HostClient{
		Addr:                     fasthttp.AddMissingPort(u.Host, isTLS),
		IsTLS:                    isTLS,
		TLSConfig:                opts.TLSConfig,
		Dial:                     dial,
		Transport:                (*transport)(c),
		MaxConns:                 maxConns,
		MaxConnWaitTimeout:       c.timeout,
		ConnPoolStrategy:         fasthttp.LIFO,
		MaxIdleConnDuration:      maxIdle,
		ReadBufferSize:           readBufferSize,
		WriteBufferSize:          writeBufferSize,
		MaxResponseBodySize:      maxBodyBytes,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
		// Errors go to logs and outcome records: no response bytes in them.
		SecureErrorLogMessage: true,
	}
	return c, nil
}

// checkProxy checks the environment's proxy for the endpoint at u now,
// rather than at every call's dial.
func checkProxy(u *url.URL) error {
	p, err := httpproxy.FromEnvironment().ProxyFunc()(u)
	switch {
	case err != nil:
		return err
	case p == nil:
		return nil
	case p.Scheme != "http" && p.Scheme != "socks5" && p.Scheme != "socks5h":
		return fmt.Errorf("proxy scheme %q: want http, socks5 or socks5h", p.Scheme)
	}
	return nil
}

func checkBaseURL(base string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("loginapi: base URL %q does not parse: %w", base, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("loginapi: base URL %q must be an absolute http(s) URL", base)
	case u.Host == "":
		return nil, fmt.Errorf("loginapi: base URL %q has no host", base)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(base, "?#"):
		return nil, fmt.Errorf("loginapi: base URL %q must not have a query or fragment", base)
	case u.User != nil:
		return nil, fmt.Errorf("loginapi: base URL %q must not hold credentials", base)
	case strings.ContainsFunc(base, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return nil, fmt.Errorf("loginapi: base URL %q must not hold spaces or control characters (escape them)", base)
	}
	return u, nil
}

// ResendConfirmation asks the API to resend the confirmation email of
// req.Username. It returns the HTTP status and:
//   - nil for 2xx;
//   - a *Error for any other status, built from its status, its JSON error
//     body and its Retry-After header;
//   - for a transport failure (connection refused or closed, timeout,
//     cancelled ctx), status 0 and an error wrapping a *url.Error, so that
//     errors.Is with context.DeadlineExceeded or context.Canceled and
//     net.Error checks work; its URL is the endpoint's, without the query
//     (login_url, payload).
//
// A call ends at the earlier of ctx's deadline and the client's timeout.
// Cancelling ctx ends it at once once it has its connection (opening one is
// bounded by the timeout alone). Nothing is retried: a POST may have
// reached the API before its connection failed.
func (c *Client) ResendConfirmation(ctx context.Context, req Request) (status int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, c.transportError(err)
	}
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	r := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(r)
	defer fasthttp.ReleaseResponse(resp)
	r.SetRequestURI(c.url(req))
	r.Header.SetMethod(fasthttp.MethodPost)
	r.Header.SetContentType("application/json")
	r.Header.Set("Accept", "application/json")
	r.Header.SetUserAgent(c.userAgent)
	r.SetBodyRaw(usernameBody(req.Username))

	cl := &call{ctx: ctx, deadline: deadline}
	c.calls.Store(r, cl)
	err = c.hc.DoDeadline(r, resp, deadline)
	c.calls.Delete(r)
	status = resp.StatusCode()
	switch {
	case err == nil:
	case errors.Is(err, fasthttp.ErrBodyTooLarge) && status > 0:
		// The answer came, its body is beyond what is read.
	case cl.cancelled.Load():
		// Cut short by its context: the connection's error says nothing more.
		return 0, c.transportError(ctx.Err())
	case isTimeout(err) || !time.Now().Before(deadline):
		// Past the deadline, whatever the error: some of fasthttp's (a
		// broken chunk) hide the connection's timeout.
		return 0, c.transportError(timeoutError{err})
	default:
		return 0, c.transportError(err)
	}
	if status >= 200 && status < 300 {
		return status, nil
	}
	return status, answerError(status, string(resp.Header.Peek("Retry-After")), resp.Body(), c.clock.Now())
}

// transportError names the endpoint without its query, which holds
// login_url and payload: they end up in outcome records and asynq's
// archive with the error.
func (c *Client) transportError(err error) error {
	return fmt.Errorf("login api: %w", &url.Error{Op: "Post", URL: c.endpoint(), Err: err})
}

// call is what the transport needs of a call besides its request.
type call struct {
	ctx       context.Context
	deadline  time.Time
	cancelled atomic.Bool // ctx ended the call
}

// transport is the round trip of a Client's calls: fasthttp's own, less
// its retries, and with the call's context, whose cancellation ends the
// call by setting its connection's deadline in the past.
type transport Client

func (t *transport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	v, ok := t.calls.Load(req)
	if !ok {
		return false, errors.New("a request not sent by loginapi.Client")
	}
	cl := v.(*call)
	cc, err := hc.AcquireConn(time.Until(cl.deadline), false)
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	if err := conn.SetDeadline(cl.deadline); err != nil {
		hc.CloseConn(cc)
		return false, err
	}
	stop := context.AfterFunc(cl.ctx, func() {
		cl.cancelled.Store(true)
		_ = conn.SetDeadline(time.Unix(1, 0))
	})
	if cl.ctx.Err() != nil {
		// Ended while the connection was taken or opened: AfterFunc's
		// function may not have run yet, so send nothing.
		stop()
		cl.cancelled.Store(true)
		hc.CloseConn(cc)
		return false, cl.ctx.Err()
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	reuse := true
	if err == nil {
		br := hc.AcquireReader(conn)
		err = resp.ReadLimitBody(br, hc.MaxResponseBodySize)
		var small *fasthttp.ErrSmallBuffer
		if errors.As(err, &small) {
			reuse = false
			read, _ := br.Peek(br.Buffered())
			switch {
			case bytes.HasPrefix(bytes.TrimLeft(read, "\r\n"), []byte("HTTP/")):
				// Headers longer than the connection's read buffer (which
				// fasthttp needs whole in it): read them again in a larger
				// one, starting with what the small one holds.
				large := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(read)), conn), maxHeaderBytes)
				resp.Reset()
				err = resp.ReadLimitBody(large, hc.MaxResponseBodySize)
			case resp.StatusCode() > 0:
				// Trailers that long, after the status, headers and body:
				// the answer is in.
				err = nil
			}
		}
		hc.ReleaseReader(br)
	}
	// Once stop returns, the cancellation can no longer touch the
	// connection; if it already has, the connection is not reused.
	if !stop() || err != nil || !reuse || resp.ConnectionClose() {
		hc.CloseConn(cc)
	} else {
		hc.ReleaseConn(cc)
	}
	return false, err
}

// timeoutError is a call that ran out of time: a net.Error timeout that is
// also context.DeadlineExceeded, as net/http's client timeouts are.
type timeoutError struct{ err error }

func (e timeoutError) Error() string   { return "no answer in time: " + e.err.Error() }
func (e timeoutError) Unwrap() []error { return []error{e.err, context.DeadlineExceeded} }
func (timeoutError) Timeout() bool     { return true }
func (timeoutError) Temporary() bool   { return true }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.Is(err, fasthttp.ErrTLSHandshakeTimeout) || errors.As(err, &ne) && ne.Timeout()
}

// endpoint is the endpoint's URL without its query.
func (c *Client) endpoint() string { return strings.TrimSuffix(c.endpointQ, "?projectId=") }

// url is the endpoint with its query: projectId always, login_url and
// payload only when set.
func (c *Client) url(req Request) string {
	pid := url.QueryEscape(req.ProjectID)
	if req.LoginURL == "" && req.Payload == "" {
		return c.endpointQ + pid
	}
	var b strings.Builder
	b.Grow(len(c.endpointQ) + len(pid) + len(req.LoginURL) + len(req.Payload) + 64)
	b.WriteString(c.endpointQ)
	b.WriteString(pid)
	if req.LoginURL != "" {
		b.WriteString("&login_url=")
		b.WriteString(url.QueryEscape(req.LoginURL))
	}
	if req.Payload != "" {
		b.WriteString("&payload=")
		b.WriteString(url.QueryEscape(req.Payload))
	}
	return b.String()
}

// usernameBody is the request body {"username":"..."}. Plain printable ASCII
// is copied as is; anything else is escaped by encoding/json.
func usernameBody(username string) []byte {
	const head, tail = `{"username":`, `}`
	if isPlainJSON(username) {
		b := make([]byte, 0, len(head)+len(username)+2+len(tail))
		b = append(b, head...)
		b = append(b, '"')
		b = append(b, username...)
		b = append(b, '"')
		return append(b, tail...)
	}
	quoted, err := json.Marshal(username) // never fails for a string
	if err != nil {
		quoted = []byte(`""`)
	}
	b := make([]byte, 0, len(head)+len(quoted)+len(tail))
	b = append(b, head...)
	b = append(b, quoted...)
	return append(b, tail...)
}

// isPlainJSON reports whether s can sit between JSON quotes unescaped, and
// unchanged by the HTML-safe escaping encoding/json applies.
func isPlainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
