package worker

import (
	"fmt"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/loginapi"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/tasks"
)

// BenchmarkDrainOnACluster drains a backlog of resends from a 3-master Redis
// Cluster through a worker's asynq servers at concurrency 50, calling a
// local double of the API that answers 204, on the cluster client as it is
// ("plain") and on its full-duplex autopipeliner ("streamed", streamed). The
// outcome records are kept in memory, so that what is measured is asynq's
// side: dequeue, done, and the tasks taken ahead.
func BenchmarkDrainOnACluster(b *testing.B) {
	const backlog = 2000
	c := redistest.StartCluster(b, 3)
	api := httptest.NewServer(fake.New())
	b.Cleanup(api.Close)
	client, err := loginapi.New(loginapi.Options{BaseURL: api.URL + "/api", Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	for _, mode := range []struct {
		name string
		hot  func(redis.UniversalClient) redis.UniversalClient
	}{
		{"plain", func(rdb redis.UniversalClient) redis.UniversalClient { return rdb }},
		{"streamed", streamed},
	} {
		b.Run(mode.name, func(b *testing.B) {
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, PoolSize: 100})
			b.Cleanup(func() { _ = rdb.Close() })
			hot := mode.hot(rdb)
			producer := asynq.NewClientFromRedisClient(c.Client(b))
			var elapsed time.Duration
			for i := range b.N {
				b.StopTimer()
				for j := range backlog {
					task, err := tasks.NewTask(tasks.Resend{ProjectID: testProject, Username: fmt.Sprintf("u%d-%d@example.com", i, j)})
					if err != nil {
						b.Fatal(err)
					}
					if _, err := producer.Enqueue(task, tasks.Options(tasks.QueueSignup, fmt.Sprintf("%s-%d-%d", mode.name, i, j))...); err != nil {
						b.Fatal(err)
					}
				}
				records := newMemOutcomes(clockwork.NewRealClock())
				h := &Handler{API: client, Outcomes: records, Log: log}
				srv := NewServer(hot, h, Config{Concurrency: 50, SweepInterval: -1, Logger: log})
				b.StartTimer()
				start := time.Now()
				if err := srv.Start(); err != nil {
					b.Fatal(err)
				}
				for done := 0; done < backlog; {
					time.Sleep(5 * time.Millisecond)
					records.mu.Lock()
					done = len(records.finished)
					records.mu.Unlock()
				}
				elapsed += time.Since(start)
				b.StopTimer()
				srv.Shutdown()
			}
			b.ReportMetric(float64(backlog*b.N)/elapsed.Seconds(), "tasks/s")
		})
	}
}
