package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// idleSettle is how long an idle worker runs before the idle figure starts
// counting: its start-up (connections, server registration) is not idling.
const idleSettle = 2 * time.Second

// idleRate starts the worker of side on an empty Redis, lets it settle and
// counts the Redis commands it sends (INFO commandstats, script-internal
// ones included, less the driver's own) over d: what a worker waiting for
// work costs Redis, a second.
func (e *env) idleRate(ctx context.Context, side string, d time.Duration) (float64, error) {
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		return 0, err
	}
	logPath := filepath.Join(e.tmp, side+"-idle.log")
	p, err := e.startWorker(side, 50, logPath, profiles{})
	if err != nil {
		return 0, err
	}
	defer p.stop()
	if err := e.sleep(ctx, p, idleSettle); err != nil {
		return 0, fmt.Errorf("%s: %w (log: %s)", side, err, logPath)
	}
	before, err := readStats(ctx, e.rdb)
	if err != nil {
		return 0, err
	}
	e.own.reset()
	start := time.Now()
	if err := e.sleep(ctx, p, d); err != nil {
		return 0, fmt.Errorf("%s: %w (log: %s)", side, err, logPath)
	}
	after, err := readStats(ctx, e.rdb)
	if err != nil {
		return 0, err
	}
	w := diffStats(before, after, e.own)
	if err := p.stop(); err != nil {
		return 0, fmt.Errorf("%s did not stop cleanly: %w (log: %s)", side, err, logPath)
	}
	return float64(w.commands) / time.Since(start).Seconds(), nil
}

// sleep waits d, failing if the worker exits meanwhile.
func (e *env) sleep(ctx context.Context, p *workerProc, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-p.exited:
		return fmt.Errorf("the worker exited")
	case <-time.After(d):
		return nil
	}
}

// idleFigure takes the idle figure runs times per worker.
func (e *env) idleFigure(ctx context.Context, d time.Duration, runs int, res *results) error {
	res.idle = d
	fmt.Printf("\n== idle worker: Redis commands a second over %s, concurrency 50, empty queues\n", d)
	for i := range runs {
		for _, side := range order(i) {
			r, err := e.idleRate(ctx, side, d)
			if err != nil {
				return err
			}
			res.idleRates[side] = append(res.idleRates[side], r)
			fmt.Printf("run %d %-8s %6.1f commands/s\n", i+1, side, r)
		}
	}
	return nil
}
