// Package fake is an in-process double of the Login API endpoint
// POST {api-base}/user/resend_confirmation_link, as an http.Handler.
//
// It checks requests against the endpoint's contract like the real API,
// answers 204 by default, and can be scripted per username, by a rule
// function, or with a global rate limit. Its memory stays bounded (see
// MaxCalls and MaxUsernames), so it can serve a long-running dev setup, and
// it answers fast at zero latency: counters are atomics and the few locks
// (username tracking, call recording) guard only short critical sections.
package fake

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Bounds on what an API remembers.
const (
	// MaxCalls is how many of the most recent calls Calls returns.
	MaxCalls = 10_000
	// MaxUsernames is how many distinct usernames are tracked for Count and
	// for per-username RateLimited/ServerErrors sequences. Scripted usernames
	// are always tracked; others only while fewer than MaxUsernames are, and
	// only when at most 1 KiB long.
	MaxUsernames = 100_000
	// StatusClientClosed is the Status recorded for a call whose client went
	// away while the answer was delayed by Latency; nothing is written.
	StatusClientClosed = 499
)

// maxRecordedLen bounds each string field of a recorded Call, in bytes.
const maxRecordedLen = 1 << 10

// Behavior is how the API answers the calls of a username (or of all
// usernames without a script, for the default). The zero value answers 204.
//
// Calls are numbered per username for a script or a rule, and globally for
// the default: the first RateLimited calls answer 429, the next ServerErrors
// calls answer 503, and every later call answers Status.
type Behavior struct {
	// Status is the final answer status; 0 means 204.
	Status int
	// Code is error.code in the JSON body of a non-2xx final answer; default "0".
	Code string
	// Description is error.description of a non-2xx final answer; default
	// http.StatusText(Status).
	Description string
	// RateLimited is how many calls first answer 429 (code "0", "Too many requests").
	RateLimited int
	// RetryAfter is the Retry-After header sent with those 429s; "" sends none.
	RetryAfter string
	// ServerErrors is how many calls, after the RateLimited ones, answer 503
	// (code "0", "Service Unavailable").
	ServerErrors int
	// Latency delays every answer of this behaviour; a client that goes away
	// meanwhile ends the wait (recorded as StatusClientClosed).
	Latency time.Duration
}

// Call is one request the API received, rejected ones included. String
// fields are truncated to 1 KiB; a field the request did not carry is empty.
type Call struct {
	ProjectID string
	Username  string
	LoginURL  string
	Payload   string
	// Status is the status answered, or StatusClientClosed.
	Status int
	// At is when the request arrived.
	At time.Time
}

// API is the fake endpoint. Create it with New; it is safe for concurrent use.
type API struct {
	total  atomic.Int64
	active atomic.Int64 // calls being answered
	peak   atomic.Int64 // most calls answered at once

	def     atomic.Pointer[Behavior]
	defSeq  atomic.Int64 // calls answered by the default behaviour
	rules   atomic.Pointer[rules]
	limiter atomic.Pointer[rate.Limiter]
	outages atomic.Pointer[map[string]int] // project ("" for all) → status answered

	limited  atomic.Int64      // calls answered 429 by the global rate limit
	byStatus [600]atomic.Int64 // calls answered, by status

	usersMu sync.RWMutex
	users   map[string]*user

	callsMu sync.Mutex
	calls   []Call // ring buffer of at most MaxCalls
	next    int    // oldest call, where the next one is written once full
}

type rules struct {
	fn func(username string) (Behavior, bool)
}

// user is what the API tracks per username.
type user struct {
	calls  atomic.Int64             // every call received, for Count
	seq    atomic.Int64             // calls answered by a script or rule
	script atomic.Pointer[Behavior] // nil when not scripted
}

// New returns an API that answers 204 to every valid request, with no rules
// and no rate limit.
func New() *API {
	a := &API{users: make(map[string]*user)}
	a.def.Store(&Behavior{})
	return a
}

// SetDefault sets the behaviour for usernames with neither a script nor a
// matching rule, and restarts its (global) call numbering.
func (a *API) SetDefault(b Behavior) {
	a.defSeq.Store(0)
	a.def.Store(&b)
}

// Script sets the behaviour of one username and restarts its call numbering.
func (a *API) Script(username string, b Behavior) {
	u := a.user(username, true)
	u.seq.Store(0)
	u.script.Store(&b)
}

// SetRules sets a function consulted for usernames without a script; when
// it answers false, the default applies. Calls are numbered per username
// (untracked usernames, beyond MaxUsernames, get the final answer at once).
// nil removes the rules.
func (a *API) SetRules(fn func(username string) (Behavior, bool)) {
	if fn == nil {
		a.rules.Store(nil)
		return
	}
	a.rules.Store(&rules{fn: fn})
}

// SetRateLimit limits valid calls to rps per second with bursts of burst
// (at least 1); calls beyond it answer 429 with Retry-After: 1. rps <= 0
// removes the limit (the default).
func (a *API) SetRateLimit(rps float64, burst int) {
	if rps <= 0 {
		a.limiter.Store(nil)
		return
	}
	a.limiter.Store(rate.NewLimiter(rate.Limit(rps), max(burst, 1)))
}

// SetOutage makes every valid call for project (every project when it is
// "") answer status (503 when 0) with code "0", before the rate limit and
// any behaviour, like a load balancer in front of a dead API, until
// EndOutage.
func (a *API) SetOutage(project string, status int) {
	if status == 0 {
		status = http.StatusServiceUnavailable
	}
	a.editOutages(func(m map[string]int) { m[project] = status })
}

// EndOutage ends the outage of project ("" for the one of every project).
func (a *API) EndOutage(project string) {
	a.editOutages(func(m map[string]int) { delete(m, project) })
}

func (a *API) editOutages(edit func(map[string]int)) {
	for {
		old := a.outages.Load()
		m := map[string]int{}
		if old != nil {
			for k, v := range *old {
				m[k] = v
			}
		}
		edit(m)
		if a.outages.CompareAndSwap(old, &m) {
			return
		}
	}
}

// outage returns the status an outage answers for project, or 0.
func (a *API) outage(project string) int {
	m := a.outages.Load()
	if m == nil || len(*m) == 0 {
		return 0
	}
	if s, ok := (*m)[project]; ok {
		return s
	}
	return (*m)[""]
}

// RateLimited returns how many calls the global rate limit answered 429.
func (a *API) RateLimited() int64 { return a.limited.Load() }

// Answered returns how many calls were answered with status (204: emails
// sent), rejected ones included.
func (a *API) Answered(status int) int64 {
	if status < 0 || status >= len(a.byStatus) {
		return 0
	}
	return a.byStatus[status].Load()
}

// Calls returns the most recent calls, oldest first, at most MaxCalls.
func (a *API) Calls() []Call {
	a.callsMu.Lock()
	defer a.callsMu.Unlock()
	out := make([]Call, 0, len(a.calls))
	out = append(out, a.calls[a.next:]...)
	return append(out, a.calls[:a.next]...)
}

// Count returns how many calls were received for username, rejected ones
// included; 0 for a username that is not tracked (see MaxUsernames).
func (a *API) Count(username string) int {
	a.usersMu.RLock()
	u := a.users[username]
	a.usersMu.RUnlock()
	if u == nil {
		return 0
	}
	return int(u.calls.Load())
}

// Total returns how many calls were received, rejected ones included.
func (a *API) Total() int64 { return a.total.Load() }

// Peak returns the most calls the API has been answering at once.
func (a *API) Peak() int64 { return a.peak.Load() }

// Reset returns the API to the state New leaves it in: no calls, counts,
// scripts, rules, rate limit or outage, and the default behaviour
// answering 204.
func (a *API) Reset() {
	a.callsMu.Lock()
	a.calls, a.next = nil, 0
	a.callsMu.Unlock()
	a.usersMu.Lock()
	a.users = make(map[string]*user)
	a.usersMu.Unlock()
	a.total.Store(0)
	a.peak.Store(a.active.Load())
	a.SetDefault(Behavior{})
	a.rules.Store(nil)
	a.limiter.Store(nil)
	a.outages.Store(nil)
	a.limited.Store(0)
	for i := range a.byStatus {
		a.byStatus[i].Store(0)
	}
}

// ServeHTTP answers one call: contract checks first, then an outage, then
// the global rate limit, then the behaviour of the username. Every call is
// recorded.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.total.Add(1)
	n := a.active.Add(1)
	defer a.active.Add(-1)
	for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
	}
	c, ans, valid := inspect(r)
	var u *user
	if c.Username != "" {
		if u = a.user(c.Username, false); u != nil {
			u.calls.Add(1)
		}
	}
	var latency time.Duration
	if valid {
		if status := a.outage(c.ProjectID); status != 0 {
			ans = reject(status, codeInvalid, http.StatusText(status))
		} else if lim := a.limiter.Load(); lim != nil && !lim.Allow() {
			a.limited.Add(1)
			ans = tooManyRequests("1")
		} else {
			ans, latency = a.decide(c.Username, u)
		}
	}
	if latency > 0 && !wait(r.Context(), latency) {
		c.Status = StatusClientClosed
		a.record(c)
		return
	}
	ans.write(w)
	c.Status = ans.status
	if ans.status >= 0 && ans.status < len(a.byStatus) {
		a.byStatus[ans.status].Add(1)
	}
	a.record(c)
}

// decide picks the behaviour of a valid call and numbers the call.
func (a *API) decide(username string, u *user) (answer, time.Duration) {
	if u != nil {
		if b := u.script.Load(); b != nil {
			return b.answer(u.seq.Add(1)), b.Latency
		}
	}
	if rs := a.rules.Load(); rs != nil {
		if b, ok := rs.fn(username); ok {
			n := int64(1) << 62 // untracked: past any transient phase
			if u != nil {
				n = u.seq.Add(1)
			}
			return b.answer(n), b.Latency
		}
	}
	b := a.def.Load()
	return b.answer(a.defSeq.Add(1)), b.Latency
}

// user returns the tracking entry of name, creating it when force is set or
// while the bounds allow; nil when untracked.
func (a *API) user(name string, force bool) *user {
	a.usersMu.RLock()
	u, n := a.users[name], len(a.users)
	a.usersMu.RUnlock()
	if u != nil || !force && (n >= MaxUsernames || len(name) > maxRecordedLen) {
		return u
	}
	a.usersMu.Lock()
	defer a.usersMu.Unlock()
	if u = a.users[name]; u == nil && (force || len(a.users) < MaxUsernames) {
		u = new(user)
		a.users[name] = u
	}
	return u
}

func (a *API) record(c Call) {
	a.callsMu.Lock()
	if len(a.calls) < MaxCalls {
		a.calls = append(a.calls, c)
	} else {
		a.calls[a.next] = c
		a.next = (a.next + 1) % MaxCalls
	}
	a.callsMu.Unlock()
}

// wait sleeps for d unless ctx ends first; it reports whether d elapsed.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// keep returns a copy of s, truncated to maxRecordedLen, that does not pin
// the request's memory.
func keep(s string) string {
	if len(s) > maxRecordedLen {
		s = s[:maxRecordedLen]
	}
	return strings.Clone(s)
}
