// Package metrics exposes a worker process to Prometheus: the resendq_*
// counters and histogram kept by Observer on the worker's hot path, and the
// asynq_* queue gauges read from Redis by QueueCollector at scrape time.
//
// # Metrics
//
//	resendq_outcomes_total{status,reason,code}    final outcomes recorded by this process
//	resendq_api_requests_total{status}            calls to the Login API, by HTTP status or "error"
//	resendq_api_request_duration_seconds          duration of those calls (histogram)
//	resendq_retries_total{cause}                  retries scheduled, by cause
//	resendq_redis_up                              1 if the last scrape could read the queues
//	asynq_*                                       see QueueCollector
//
// Label values are bounded: status is "sent" or "dead_letter"; reason is
// empty for sent outcomes, else a dead-letter reason; code is the Login API
// error code when it has the API's shape ("0", "003-002"), "other" when it
// does not, and empty when the answer carried none; the status of an API
// request is its HTTP status ("204", "429") or "error" when no response
// arrived; cause is one of outcome.Causes(), or "other".
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
)

// NewRegistry returns a registry holding the Go runtime and process
// collectors, to which NewObserver and QueueCollector add resendq's own. It
// is a fresh registry, never the global default one.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// DurationBuckets are the buckets of resendq_api_request_duration_seconds,
// in seconds: from 5ms up to 30s, past the default 10s call timeout.
var DurationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30}

// Label values that stand for a whole class.
const (
	// LabelError is the status label of an API request that got no response
	// (timeout, connection refused or reset).
	LabelError = "error"
	// LabelOther replaces a code or cause label value that is not of a
	// known shape, so that a misbehaving API cannot grow the series.
	LabelOther = "other"
)

// Observer keeps the resendq_* metrics; it is the worker's Observer. It is
// safe for concurrent use; a call that only bumps an already seen series
// takes no lock other than a read lock and allocates nothing.
type Observer struct {
	outcomes *prometheus.CounterVec
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	retries  *prometheus.CounterVec
	pauses   prometheus.Counter
	waited   prometheus.Counter

	circuits    *prometheus.CounterVec
	rateChanges *prometheus.CounterVec

	byStatus   [600]atomic.Pointer[counter] // resendq_api_requests_total by HTTP status, filled on first use
	errorCalls prometheus.Counter           // resendq_api_requests_total{status="error"}
	byCause    map[outcome.Cause]prometheus.Counter
	otherCause prometheus.Counter

	mu         sync.RWMutex
	byOutcome  map[outcomeKey]prometheus.Counter
	maxOutcome int // series of resendq_outcomes_total beyond which codes become "other"
}

// counter boxes a child counter so that it can sit in an atomic.Pointer.
type counter struct{ prometheus.Counter }

type outcomeKey struct {
	status outcome.Status
	reason outcome.Reason
	code   string
}

// maxOutcomeSeries bounds resendq_outcomes_total: past it, new codes are
// counted as "other" even when well-formed (3 digits + 3 digits allow a
// million codes; the API uses a few dozen).
const maxOutcomeSeries = 1000

// NewObserver creates the resendq_* metrics, registers them on reg and
// returns the Observer that updates them. It fails when reg already holds
// metrics of the same names.
func NewObserver(reg prometheus.Registerer) (*Observer, error) {
	o := &Observer{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resendq_outcomes_total",
			Help: "Final outcomes of resend tasks recorded by this process, by status (sent, dead_letter), dead-letter reason and Login API error code.",
		}, []string{"status", "reason", "code"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resendq_api_requests_total",
			Help: `Calls to the Login API, by HTTP status of the answer, or "error" when no answer arrived.`,
		}, []string{"status"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "resendq_api_request_duration_seconds",
			Help:    "Duration of calls to the Login API, answered or not.",
			Buckets: DurationBuckets,
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resendq_retries_total",
			Help: "Retries scheduled, by cause: rate_limited (429), timeout, server_error (5xx), connection, paused (handed back without a call: the project's rate-limit pause or rate, or a stopping worker), outage (held back without spending an attempt: the project's circuit is open), internal (a panic).",
		}, []string{"cause"}),
		pauses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "resendq_rate_limit_pauses_total",
			Help: "Pauses of a Login project's calls on every worker that a 429 received by this process started.",
		}),
		waited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "resendq_rate_limit_wait_seconds_total",
			Help: "Time calls of this process waited for a rate-limit pause or the fleet's rate before going out.",
		}),
		circuits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resendq_circuit_changes_total",
			Help: "Circuits of Login projects this process opened (state=open: the fleet's calls failed) or closed (state=closed: its probe succeeded).",
		}, []string{"project_id", "state"}),
		rateChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "resendq_api_rate_changes_total",
			Help: "Changes of a Login project's adaptive rate this process made: learned or lowered after a 429 (direction=down, or learned), or raised by a quarter (direction=up).",
		}, []string{"project_id", "direction"}),
		byCause:    make(map[outcome.Cause]prometheus.Counter),
		byOutcome:  make(map[outcomeKey]prometheus.Counter),
		maxOutcome: maxOutcomeSeries,
	}
	for _, c := range []prometheus.Collector{o.outcomes, o.requests, o.duration, o.retries, o.pauses, o.waited, o.circuits, o.rateChanges} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	o.errorCalls = o.requests.WithLabelValues(LabelError)
	for _, c := range outcome.Causes() {
		o.byCause[c] = o.retries.WithLabelValues(string(c))
	}
	o.otherCause = o.retries.WithLabelValues(LabelOther)
	// Series that always exist, so that rate() and alerts see a zero
	// before the first event rather than no data.
	o.outcomeCounter(outcomeKey{status: outcome.StatusSent})
	for _, r := range outcome.Reasons() {
		if r != outcome.ReasonCancelled { // an operator's doing, never a worker's
			o.outcomeCounter(outcomeKey{status: outcome.StatusDeadLetter, reason: r})
		}
	}
	return o, nil
}

// APICall counts one call to the Login API and its duration. status is the
// HTTP status of the answer, 0 when none arrived.
func (o *Observer) APICall(status int, _ error, took time.Duration) {
	o.duration.Observe(took.Seconds())
	if status < 100 || status >= len(o.byStatus) {
		o.errorCalls.Inc()
		return
	}
	if c := o.byStatus[status].Load(); c != nil {
		c.Inc()
		return
	}
	c := &counter{o.requests.WithLabelValues(strconv.Itoa(status))}
	o.byStatus[status].CompareAndSwap(nil, c)
	c.Inc()
}

// Retry counts one retry scheduled for cause.
func (o *Observer) Retry(cause outcome.Cause) {
	if c, ok := o.byCause[cause]; ok {
		c.Inc()
		return
	}
	o.otherCause.Inc()
}

// RateLimitPause counts one pause started by a 429 received here.
func (o *Observer) RateLimitPause() { o.pauses.Inc() }

// RateLimitWait adds the time one call waited for a pause or the rate.
func (o *Observer) RateLimitWait(d time.Duration) { o.waited.Add(d.Seconds()) }

// Flow counts a change of a project's flow control this process made.
func (o *Observer) Flow(e ratelimit.Event) {
	switch e.Kind {
	case ratelimit.CircuitOpened:
		o.circuits.WithLabelValues(e.Project, "open").Inc()
	case ratelimit.CircuitClosed:
		o.circuits.WithLabelValues(e.Project, "closed").Inc()
	case ratelimit.RateChanged:
		dir := "up"
		switch {
		case e.Was == 0:
			dir = "learned"
		case e.Rate < e.Was:
			dir = "down"
		}
		o.rateChanges.WithLabelValues(e.Project, dir).Inc()
	}
}

// Outcome counts one final outcome.
func (o *Observer) Outcome(rec outcome.Record) {
	o.outcomeCounter(outcomeKey{status: rec.Status, reason: rec.Reason, code: CodeLabel(rec.ErrorCode)}).Inc()
}

// outcomeCounter returns the child of key, creating it on first use.
func (o *Observer) outcomeCounter(key outcomeKey) prometheus.Counter {
	o.mu.RLock()
	c, ok := o.byOutcome[key]
	n := len(o.byOutcome)
	o.mu.RUnlock()
	if ok {
		return c
	}
	if n >= o.maxOutcome && key.code != "" && key.code != LabelOther {
		return o.outcomeCounter(outcomeKey{status: key.status, reason: key.reason, code: LabelOther})
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if c, ok = o.byOutcome[key]; !ok {
		c = o.outcomes.WithLabelValues(string(key.status), string(key.reason), key.code)
		o.byOutcome[key] = c
	}
	return c
}

// CodeLabel returns the code label of a Login API error code: the code
// itself when it has the API's shape (1 to 3 digits, optionally followed by
// "-" and 3 digits, e.g. "0" or "003-002"), "" for no code, and "other" for
// anything else.
func CodeLabel(code string) string {
	if code == "" || validCode(code) {
		return code
	}
	return LabelOther
}

func validCode(s string) bool {
	i := 0
	for i < len(s) && i < 3 && isDigit(s[i]) {
		i++
	}
	if i == 0 {
		return false
	}
	if i == len(s) {
		return true
	}
	if len(s) != i+4 || s[i] != '-' {
		return false
	}
	return isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3])
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
