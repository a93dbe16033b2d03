package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/metrics"
)

func TestQueueCollector(t *testing.T) {
	t.Parallel()
	for _, be := range redistest.Backends() {
		if be.Name == "embedded" {
			continue
		}
		t.Run(be.Name, func(t *testing.T) {
			t.Parallel()
			rdb := be.Start(t)(t)
			client := asynq.NewClientFromRedisClient(rdb)
			for i := range 3 {
				task := asynq.NewTask("resendq:resend_confirmation", []byte(`{}`))
				if _, err := client.Enqueue(task, asynq.Queue("signup"), asynq.TaskID(string(rune('a'+i)))); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := client.Enqueue(asynq.NewTask("x", nil), asynq.Queue("bulk"), asynq.ProcessIn(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := asynq.NewInspectorFromRedisClient(rdb).ArchiveTask("signup", "a"); err != nil {
				t.Fatal(err)
			}

			reg := prometheus.NewRegistry()
			reg.MustRegister(metrics.NewQueueCollector(rdb, nil))
			want := `
		# HELP asynq_queue_size Number of tasks in a queue, all states together.
		# TYPE asynq_queue_size gauge
		asynq_queue_size{queue="bulk"} 1
		asynq_queue_size{queue="signup"} 3
		# HELP asynq_queue_paused_total 1 if the queue is paused, else 0.
		# TYPE asynq_queue_paused_total gauge
		asynq_queue_paused_total{queue="bulk"} 0
		asynq_queue_paused_total{queue="signup"} 0
		# HELP resendq_redis_up 1 if this scrape could read the queues from Redis, else 0 (and no asynq_* metrics).
		# TYPE resendq_redis_up gauge
		resendq_redis_up 1
		`
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
				"asynq_queue_size", "asynq_queue_paused_total", "resendq_redis_up"); err != nil {
				t.Error(err)
			}
			states := map[string]float64{}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() != "asynq_tasks_enqueued_total" {
					continue
				}
				for _, m := range mf.GetMetric() {
					var q, s string
					for _, l := range m.GetLabel() {
						switch l.GetName() {
						case "queue":
							q = l.GetValue()
						case "state":
							s = l.GetValue()
						}
					}
					states[q+"/"+s] = m.GetGauge().GetValue()
				}
			}
			for key, n := range map[string]float64{"signup/pending": 2, "signup/archived": 1, "signup/active": 0, "bulk/scheduled": 1} {
				if states[key] != n {
					t.Errorf("asynq_tasks_enqueued_total %s = %v, want %v (all: %v)", key, states[key], n, states)
				}
			}
			if n := testutil.CollectAndCount(reg, "asynq_queue_latency_seconds"); n != 2 {
				t.Errorf("asynq_queue_latency_seconds: %d series, want 2", n)
			}
		})
	}
}

func TestQueueCollectorRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	srv.Stop()
	c := metrics.NewQueueCollector(rdb, nil)
	c.Timeout = 500 * time.Millisecond
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	want := `
# HELP resendq_redis_up 1 if this scrape could read the queues from Redis, else 0 (and no asynq_* metrics).
# TYPE resendq_redis_up gauge
resendq_redis_up 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
