package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/resendq/resendq/ratelimit"
)

// FlowCollector exports, at scrape time, the flow control of every Login
// project as this worker knows it (ratelimit.Limiter.Local): which circuits
// are open, which rates apply, which pauses run. A project shows while it
// has one of them.
//
//	resendq_circuit_open{project_id}                 1 while the project's circuit is open
//	resendq_api_rate{project_id}                     the project's rate, calls per second (fixed, or adaptive)
//	resendq_rate_limit_pause_seconds{project_id}     what remains of the project's pause after a 429
type FlowCollector struct {
	local func() []ratelimit.State
	open  *prometheus.Desc
	rate  *prometheus.Desc
	pause *prometheus.Desc
}

// NewFlowCollector returns a collector of what local says (a Limiter's
// Local).
func NewFlowCollector(local func() []ratelimit.State) *FlowCollector {
	labels := []string{"project_id"}
	return &FlowCollector{
		local: local,
		open:  prometheus.NewDesc("resendq_circuit_open", "1 while the Login project's circuit is open: the API fails most of its calls, and only one probe at a time goes out.", labels, nil),
		rate:  prometheus.NewDesc("resendq_api_rate", "The Login project's rate across the fleet, calls per second: fixed (--api-rate), or adaptive (learned from 429s).", labels, nil),
		pause: prometheus.NewDesc("resendq_rate_limit_pause_seconds", "What remains of the Login project's pause after a 429.", labels, nil),
	}
}

// Describe sends the descriptors of the metrics.
func (c *FlowCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.rate
	ch <- c.pause
}

// Collect sends the current values.
func (c *FlowCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.local() {
		ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(btoi(st.Open)), st.Project)
		ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, st.Rate, st.Project)
		ch <- prometheus.MustNewConstMetric(c.pause, prometheus.GaugeValue, st.Paused.Seconds(), st.Project)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
