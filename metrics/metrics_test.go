package metrics_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/resendq/resendq/metrics"
	"github.com/resendq/resendq/outcome"
)

func newObserver(t *testing.T) (*metrics.Observer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o, err := metrics.NewObserver(reg)
	if err != nil {
		t.Fatalf("NewObserver: %v", err)
	}
	return o, reg
}

func TestObserverCountsExactly(t *testing.T) {
	t.Parallel()
	o, reg := newObserver(t)
	sent := outcome.Record{Status: outcome.StatusSent, HTTPStatus: 204}
	rejected := outcome.Record{Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, HTTPStatus: 404, ErrorCode: "003-002"}
	exhausted := outcome.Record{Status: outcome.StatusDeadLetter, Reason: outcome.ReasonExhausted, HTTPStatus: 503, ErrorCode: "0"}
	weird := outcome.Record{Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, HTTPStatus: 400, ErrorCode: "<script>"}
	for _, rec := range []outcome.Record{sent, sent, sent, rejected, rejected, exhausted, weird} {
		o.Outcome(rec)
	}
	for _, s := range []int{204, 204, 204, 404, 404, 503, 503, 400, 0} {
		var err error
		if s == 0 {
			err = errors.New("connection refused")
		}
		o.APICall(s, err, 30*time.Millisecond)
	}
	o.Retry("server_error")
	o.Retry("server_error")
	o.Retry("rate_limited")
	o.Retry("martian")
	o.RateLimitPause()
	o.RateLimitWait(1500 * time.Millisecond)
	o.RateLimitWait(500 * time.Millisecond)

	want := `
# HELP resendq_api_requests_total Calls to the Login API, by HTTP status of the answer, or "error" when no answer arrived.
# TYPE resendq_api_requests_total counter
resendq_api_requests_total{status="204"} 3
resendq_api_requests_total{status="400"} 1
resendq_api_requests_total{status="404"} 2
resendq_api_requests_total{status="503"} 2
resendq_api_requests_total{status="error"} 1
# HELP resendq_outcomes_total Final outcomes of resend tasks recorded by this process, by status (sent, dead_letter), dead-letter reason and Login API error code.
# TYPE resendq_outcomes_total counter
resendq_outcomes_total{code="",reason="",status="sent"} 3
resendq_outcomes_total{code="",reason="exhausted",status="dead_letter"} 0
resendq_outcomes_total{code="",reason="invalid",status="dead_letter"} 0
resendq_outcomes_total{code="",reason="outage",status="dead_letter"} 0
resendq_outcomes_total{code="",reason="rate_limited",status="dead_letter"} 0
resendq_outcomes_total{code="",reason="rejected",status="dead_letter"} 0
resendq_outcomes_total{code="0",reason="exhausted",status="dead_letter"} 1
resendq_outcomes_total{code="003-002",reason="rejected",status="dead_letter"} 2
resendq_outcomes_total{code="other",reason="rejected",status="dead_letter"} 1
# HELP resendq_rate_limit_pauses_total Pauses of a Login project's calls on every worker that a 429 received by this process started.
# TYPE resendq_rate_limit_pauses_total counter
resendq_rate_limit_pauses_total 1
# HELP resendq_rate_limit_wait_seconds_total Time calls of this process waited for a rate-limit pause or the fleet's rate before going out.
# TYPE resendq_rate_limit_wait_seconds_total counter
resendq_rate_limit_wait_seconds_total 2
# HELP resendq_retries_total Retries scheduled, by cause: rate_limited (429), timeout, server_error (5xx), connection, paused (handed back without a call: the project's rate-limit pause or rate, or a stopping worker), outage (held back without spending an attempt: the project's circuit is open), internal (a panic).
# TYPE resendq_retries_total counter
resendq_retries_total{cause="connection"} 0
resendq_retries_total{cause="internal"} 0
resendq_retries_total{cause="outage"} 0
resendq_retries_total{cause="other"} 1
resendq_retries_total{cause="paused"} 0
resendq_retries_total{cause="rate_limited"} 1
resendq_retries_total{cause="server_error"} 2
resendq_retries_total{cause="timeout"} 0
`
	err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"resendq_api_requests_total", "resendq_outcomes_total", "resendq_retries_total",
		"resendq_rate_limit_pauses_total", "resendq_rate_limit_wait_seconds_total")
	if err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "resendq_api_request_duration_seconds"); n != 1 {
		t.Errorf("duration histograms: %d, want 1", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "resendq_api_request_duration_seconds" {
			if got := mf.GetMetric()[0].GetHistogram().GetSampleCount(); got != 9 {
				t.Errorf("duration sample count %d, want 9", got)
			}
		}
	}
}

func TestNewObserverTwiceOnOneRegistryFails(t *testing.T) {
	t.Parallel()
	_, reg := newObserver(t)
	if _, err := metrics.NewObserver(reg); err == nil {
		t.Fatal("second NewObserver on the same registry: want an error")
	}
}

func TestCodeLabel(t *testing.T) {
	t.Parallel()
	for code, want := range map[string]string{
		"": "", "0": "0", "003-002": "003-002", "10-011": "10-011", "999": "999",
		"1234": "other", "003-02": "other", "003-0021": "other", "003_002": "other", "-002": "other",
		"abc": "other", "003-00x": "other", "0000-000": "other",
	} {
		if got := metrics.CodeLabel(code); got != want {
			t.Errorf("CodeLabel(%q) = %q, want %q", code, got, want)
		}
	}
}

// Not parallel: testing.AllocsPerRun refuses to run in a parallel test.
func TestObserverHotPathDoesNotAllocate(t *testing.T) {
	o, _ := newObserver(t)
	rec := outcome.Record{Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected, ErrorCode: "003-002"}
	o.APICall(204, nil, time.Millisecond) // first use creates the series
	o.Outcome(rec)
	allocs := testing.AllocsPerRun(200, func() {
		o.APICall(204, nil, time.Millisecond)
		o.APICall(0, errors.ErrUnsupported, time.Millisecond)
		o.Retry("rate_limited")
		o.Outcome(rec)
	})
	if allocs != 0 {
		t.Errorf("observer calls allocate %.1f times per run, want 0", allocs)
	}
}

func BenchmarkObserver(b *testing.B) {
	o, err := metrics.NewObserver(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	rec := outcome.Record{Status: outcome.StatusSent}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o.APICall(204, nil, 20*time.Millisecond)
			o.Outcome(rec)
		}
	})
}

func TestObserverBoundsOutcomeSeries(t *testing.T) {
	t.Parallel()
	o, reg := newObserver(t)
	for i := range 3000 {
		o.Outcome(outcome.Record{Status: outcome.StatusDeadLetter, Reason: outcome.ReasonRejected,
			ErrorCode: fmt.Sprintf("%03d-%03d", i/1000, i%1000)})
	}
	if n := testutil.CollectAndCount(reg, "resendq_outcomes_total"); n > 1001 {
		t.Errorf("%d series of resendq_outcomes_total, want at most 1001", n)
	}
	if got := sumOutcomes(t, reg); got != 3000 {
		t.Errorf("sum of outcome series %v, want 3000", got)
	}
}

// sumOutcomes adds up every series of resendq_outcomes_total.
func sumOutcomes(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "resendq_outcomes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
