package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/tasks"
)

// latencySpec is the signup-latency figure: how long a new signup waits
// while a worker drains a backlog of batch resends in the bulk queue.
type latencySpec struct {
	backlog     int // tasks in the bulk queue when the worker starts
	signups     int // signups enqueued one after the other while it drains
	concurrency int
}

func (s latencySpec) String() string {
	return fmt.Sprintf("%d signups while a %s-task bulk backlog drains, 0 ms API latency, concurrency %d",
		s.signups, count(s.backlog), s.concurrency)
}

// latencyResult is what one run measured: the latency of every signup,
// sorted, and the bulk tasks still queued when the last one was sent.
type latencyResult struct {
	latencies []time.Duration
	bulkLeft  int64
}

// quantile is the q-quantile of the sorted latencies (nearest rank).
func (r latencyResult) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(q*float64(len(r.latencies))+0.999999) - 1
	return r.latencies[min(max(i, 0), len(r.latencies)-1)]
}

// signupLatency fills the bulk queue with spec.backlog tasks, starts the
// worker of side with its default queue weights (signup=8, bulk=1), waits
// until it is busy with the backlog, then enqueues spec.signups signups one
// after the other with the enqueue package, as a signup service does, and
// times each from just before its Enqueue call to its call's arrival at the
// API. The figure only counts when the backlog was still there at the end.
func (e *env) signupLatency(ctx context.Context, side string, spec latencySpec) (latencyResult, error) {
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		return latencyResult{}, err
	}
	if err := fill(ctx, e.redis.addr, tasks.QueueBulk, spec.backlog); err != nil {
		return latencyResult{}, fmt.Errorf("fill the bulk queue: %w", err)
	}
	e.api.latency.Store(0)
	logPath := filepath.Join(e.tmp, fmt.Sprintf("%s-latency.log", side))
	p, err := e.startWorker(side, spec.concurrency, logPath, profiles{})
	if err != nil {
		return latencyResult{}, err
	}
	defer p.stop()
	if err := e.waitProcessed(ctx, p, tasks.QueueBulk, 500); err != nil {
		return latencyResult{}, fmt.Errorf("%s: %w (log: %s)", side, err, logPath)
	}
	enq := enqueue.New(e.rdb, enqueue.Options{})
	var res latencyResult
	for i := range spec.signups {
		username := fmt.Sprintf("signup-%d@example.com", i)
		arrived := e.api.expect(username)
		start := time.Now()
		if _, err := enq.Enqueue(ctx, tasks.Resend{ProjectID: benchProject, Username: username}); err != nil {
			return latencyResult{}, err
		}
		select {
		case at := <-arrived:
			res.latencies = append(res.latencies, at.Sub(start))
		case <-time.After(30 * time.Second):
			return latencyResult{}, fmt.Errorf("%s: signup %d was not sent within 30s (log: %s)", side, i, logPath)
		case <-p.exited:
			return latencyResult{}, fmt.Errorf("%s: the worker exited (log: %s)", side, logPath)
		}
		time.Sleep(10 * time.Millisecond) // signups arrive apart, not in a burst
	}
	res.bulkLeft, err = e.rdb.LLen(ctx, "asynq:{"+tasks.QueueBulk+"}:pending").Result()
	if err != nil {
		return latencyResult{}, err
	}
	slices.Sort(res.latencies)
	if res.bulkLeft < int64(spec.backlog)/10 {
		return res, fmt.Errorf("%s: only %d bulk tasks were left when the last signup was sent: not measured under a backlog", side, res.bulkLeft)
	}
	return res, nil
}

// waitProcessed waits until the worker has processed n tasks of queue.
func (e *env) waitProcessed(ctx context.Context, p *workerProc, queue string, n int64) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.exited:
			return fmt.Errorf("the worker exited")
		case now := <-tick.C:
			got, err := e.rdb.Get(ctx, processedKey(queue)).Int64()
			if err != nil && err != redis.Nil {
				return err
			}
			if got >= n {
				return nil
			}
			if now.After(deadline) {
				return fmt.Errorf("%d of %d %s tasks processed after a minute", got, n, queue)
			}
		}
	}
}

// latencyFigure takes the signup-latency figure runs times per worker.
func (e *env) latencyFigure(ctx context.Context, spec latencySpec, runs int, res *results) error {
	res.latency = &spec
	fmt.Printf("\n== signup latency: %s\n", spec)
	for i := range runs {
		for _, side := range order(i) {
			r, err := e.signupLatency(ctx, side, spec)
			if err != nil {
				return err
			}
			res.latencies[side] = append(res.latencies[side], r)
			fmt.Printf("run %d %-8s p50 %6.1f ms  p99 %6.1f ms  max %6.1f ms  (%d bulk tasks still queued)\n", i+1, side,
				msf(r.quantile(0.5)), msf(r.quantile(0.99)), msf(r.latencies[len(r.latencies)-1]), r.bulkLeft)
		}
	}
	return nil
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
