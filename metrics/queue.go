package metrics

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
)

// DefaultQueueTimeout bounds the Redis check that starts each scrape of a
// QueueCollector when QueueCollector.Timeout is zero.
const DefaultQueueTimeout = 2 * time.Second

// The asynq_* metrics carry the names and labels of asynq's own collector
// (github.com/hibiken/asynq/x/metrics), so that dashboards made for it work
// unchanged.
var (
	tasksEnqueuedDesc = prometheus.NewDesc("asynq_tasks_enqueued_total",
		"Number of tasks in a queue, by state: active, pending, scheduled, retry, archived (dead letters), completed, aggregating.",
		[]string{"queue", "state"}, nil)
	queueSizeDesc = prometheus.NewDesc("asynq_queue_size",
		"Number of tasks in a queue, all states together.",
		[]string{"queue"}, nil)
	queueLatencyDesc = prometheus.NewDesc("asynq_queue_latency_seconds",
		"How long the oldest pending task of a queue has been waiting.",
		[]string{"queue"}, nil)
	queueMemoryDesc = prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes",
		"Approximate Redis memory used by a queue and its tasks (sampled).",
		[]string{"queue"}, nil)
	tasksProcessedDesc = prometheus.NewDesc("asynq_tasks_processed_total",
		"Tasks processed, succeeded or failed, by all workers of a queue since it was created.",
		[]string{"queue"}, nil)
	tasksFailedDesc = prometheus.NewDesc("asynq_tasks_failed_total",
		"Tasks whose processing failed, by all workers of a queue since it was created.",
		[]string{"queue"}, nil)
	queuePausedDesc = prometheus.NewDesc("asynq_queue_paused_total",
		"1 if the queue is paused, else 0.",
		[]string{"queue"}, nil)
	redisUpDesc = prometheus.NewDesc("resendq_redis_up",
		"1 if this scrape could read the queues from Redis, else 0 (and no asynq_* metrics).",
		nil, nil)
)

// QueueCollector is a prometheus.Collector of the asynq queues in Redis:
//
//	asynq_tasks_enqueued_total{queue,state}        tasks per state (a gauge, despite the name)
//	asynq_queue_size{queue}                        tasks in all states
//	asynq_queue_latency_seconds{queue}             wait of the oldest pending task
//	asynq_queue_memory_usage_approx_bytes{queue}   sampled memory use
//	asynq_tasks_processed_total{queue}             processed, ever
//	asynq_tasks_failed_total{queue}                failed, ever
//	asynq_queue_paused_total{queue}                1 when paused
//	resendq_redis_up                               1 when the queues could be read
//
// It reads Redis only while collecting, i.e. at scrape time: a PING bounded
// by Timeout, then one stats script per queue. It never closes Redis.
type QueueCollector struct {
	// Redis holds the queues. Required.
	Redis redis.UniversalClient
	// Log receives a warning when the queues cannot be read. Default: none.
	Log logrus.FieldLogger
	// Timeout bounds the PING that checks Redis before the queues are read.
	// Default DefaultQueueTimeout (2s).
	Timeout time.Duration

	insp *asynq.Inspector
}

// NewQueueCollector returns a QueueCollector of the queues in rdb that logs
// read failures to log (which may be nil).
func NewQueueCollector(rdb redis.UniversalClient, log logrus.FieldLogger) *QueueCollector {
	return &QueueCollector{Redis: rdb, Log: log, insp: asynq.NewInspectorFromRedisClient(rdb)}
}

// Describe sends the descriptors of every metric Collect may send.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tasksEnqueuedDesc, queueSizeDesc, queueLatencyDesc,
		queueMemoryDesc, tasksProcessedDesc, tasksFailedDesc, queuePausedDesc, redisUpDesc} {
		ch <- d
	}
}

// Collect reads every queue's stats from Redis and sends them.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	infos, err := c.read()
	up := 1.0
	if err != nil {
		up = 0
		if c.Log != nil {
			c.Log.WithError(err).Warn("metrics: cannot read the asynq queues")
		}
	}
	ch <- prometheus.MustNewConstMetric(redisUpDesc, prometheus.GaugeValue, up)
	for _, q := range infos {
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{q.Queue}, labels...)...)
		}
		for _, s := range []struct {
			state string
			n     int
		}{
			{"active", q.Active}, {"pending", q.Pending}, {"scheduled", q.Scheduled}, {"retry", q.Retry},
			{"archived", q.Archived}, {"completed", q.Completed}, {"aggregating", q.Aggregating},
		} {
			gauge(tasksEnqueuedDesc, float64(s.n), s.state)
		}
		gauge(queueSizeDesc, float64(q.Size))
		gauge(queueLatencyDesc, q.Latency.Seconds())
		gauge(queueMemoryDesc, float64(q.MemoryUsage))
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		gauge(queuePausedDesc, paused)
		ch <- prometheus.MustNewConstMetric(tasksProcessedDesc, prometheus.CounterValue, float64(q.ProcessedTotal), q.Queue)
		ch <- prometheus.MustNewConstMetric(tasksFailedDesc, prometheus.CounterValue, float64(q.FailedTotal), q.Queue)
	}
}

// read returns the stats of every queue, or none and an error when Redis
// does not answer or a queue cannot be read: a scrape shows either a
// consistent picture or resendq_redis_up 0.
func (c *QueueCollector) read() ([]*asynq.QueueInfo, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultQueueTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Redis.Ping(ctx).Err(); err != nil {
		return nil, err
	}
	insp := c.insp
	if insp == nil {
		insp = asynq.NewInspectorFromRedisClient(c.Redis)
	}
	names, err := insp.Queues()
	if err != nil {
		return nil, err
	}
	infos := make([]*asynq.QueueInfo, 0, len(names))
	for _, name := range names {
		info, err := insp.GetQueueInfo(name)
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}
