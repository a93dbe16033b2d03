// Package loginapi is the HTTP client of the Xsolla Login endpoint that
// resends an account confirmation email:
//
//	POST {api-base}/user/resend_confirmation_link?projectId=...
//
// A call answers the HTTP status and, for anything but 2xx, a *Error built by
// CheckResponse. Classifying outcomes (retry, dead letter) is the caller's job.
package loginapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
)

// DefaultBaseURL is the API base used when Options.BaseURL is empty.
const DefaultBaseURL = "https://login.xsolla.com/api"

// DefaultTimeout bounds a whole call (connect, send, headers, body) made with
// the default HTTP client.
const DefaultTimeout = 10 * time.Second

const (
	endpointPath     = "/user/resend_confirmation_link"
	defaultUserAgent = "resendq/dev"
	// maxIdleConnsPerHost keeps connections alive for a worker running
	// hundreds of concurrent calls against the one API host.
	maxIdleConnsPerHost = 512
	// writeBufferSize and readBufferSize are the buffers of one connection
	// to the API (net/http's default: 4 KiB each). A call is a few hundred
	// bytes each way, and a worker at concurrency 400 keeps 400 connections:
	// the defaults would hold 3 MiB of buffers, mostly empty. Longer
	// requests and headers still work, in more writes and reads.
	writeBufferSize = 512
	readBufferSize  = 1 << 10
	// maxBodyBytes is the most of a response body read, parsed or drained.
	maxBodyBytes = 64 << 10
)

// headerJSON is shared by every request. It is read-only: the transport never
// modifies it, and Header.Set replaces rather than mutates a value slice.
var headerJSON = []string{"application/json"}

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
	// HTTPClient sends the requests. Default: a client with Timeout
	// DefaultTimeout that does not follow redirects (a 3xx is answered as a
	// *Error), on a transport cloned from http.DefaultTransport that keeps up
	// to 512 idle connections per host.
	HTTPClient *http.Client
	// UserAgent is the User-Agent header. Default "resendq/dev"; callers pass
	// "resendq/<version>".
	UserAgent string
	// Clock turns an HTTP-date Retry-After into a duration. Default: the
	// real clock.
	Clock clockwork.Clock
}

// Client calls the resend endpoint. It is safe for concurrent use.
type Client struct {
	hc        *http.Client
	endpointQ string // "{base}/user/resend_confirmation_link?projectId="
	userAgent []string
	clock     clockwork.Clock
}

// New checks opts, fills in the defaults and precomputes the endpoint URL.
// The error says what is wrong with BaseURL.
func New(opts Options) (*Client, error) {
	base := opts.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if err := checkBaseURL(base); err != nil {
		return nil, err
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = defaultUserAgent
	}
	c := &Client{
		hc:        opts.HTTPClient,
		endpointQ: strings.TrimRight(base, "/") + endpointPath + "?projectId=",
		userAgent: []string{ua},
		clock:     opts.Clock,
	}
	if c.hc == nil {
		c.hc = NewHTTPClient(DefaultTimeout)
	}
	if c.clock == nil {
		c.clock = clockwork.NewRealClock()
	}
	return c, nil
}

func checkBaseURL(base string) error {
	u, err := url.Parse(base)
	if err != nil {
		return fmt.Errorf("loginapi: base URL %q does not parse: %w", base, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("loginapi: base URL %q must be an absolute http(s) URL", base)
	case u.Host == "":
		return fmt.Errorf("loginapi: base URL %q has no host", base)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(base, "?#"):
		return fmt.Errorf("loginapi: base URL %q must not have a query or fragment", base)
	}
	return nil
}

// NewHTTPClient is the client Options.HTTPClient defaults to, with the given
// timeout for one call: it does not follow redirects and keeps up to 512 idle
// connections to the API, so a worker with high concurrency reuses them.
func NewHTTPClient(timeout time.Duration) *http.Client {
	var tr *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		tr = dt.Clone()
	} else {
		tr = &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true}
	}
	tr.MaxIdleConnsPerHost = maxIdleConnsPerHost
	tr.WriteBufferSize, tr.ReadBufferSize = writeBufferSize, readBufferSize
	if tr.MaxIdleConns != 0 && tr.MaxIdleConns < maxIdleConnsPerHost {
		tr.MaxIdleConns = maxIdleConnsPerHost
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// ResendConfirmation asks the API to resend the confirmation email of
// req.Username. It returns the HTTP status and:
//   - nil for 2xx;
//   - a *Error for any other status (see CheckResponse);
//   - for a transport failure (connection refused, timeout, cancelled ctx),
//     status 0 and an error wrapping the *url.Error, so errors.Is with
//     context.DeadlineExceeded or context.Canceled and net.Error checks work;
//     its URL is the endpoint's, without the query (login_url, payload).
//
// The response body is drained (up to 64 KiB) and closed so the connection
// is reused.
func (c *Client) ResendConfirmation(ctx context.Context, req Request) (status int, err error) {
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(req), bytes.NewReader(usernameBody(req.Username)))
	if err != nil {
		return 0, fmt.Errorf("login api: build request: %w", err)
	}
	h := httpReq.Header
	h["Content-Type"] = headerJSON
	h["Accept"] = headerJSON
	h["User-Agent"] = c.userAgent
	resp, err := c.hc.Do(httpReq)
	if err != nil {
		// The query holds login_url and payload, which end up in outcome
		// records and asynq's archive with the error: name the endpoint
		// without it.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = c.endpoint()
		}
		return 0, fmt.Errorf("login api: %w", err)
	}
	defer drainAndClose(resp.Body)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, CheckResponse(resp, c.clock.Now())
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

// drainAndClose reads what is left of a body, up to the limit, so that the
// connection goes back to the pool, then closes it.
func drainAndClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxBodyBytes))
	_ = body.Close()
}
