package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// fleetSpec is one figure of flow control: a fleet of worker processes
// draining a backlog through the Login API double with a global limit of
// limit calls a second, perhaps through an outage.
type fleetSpec struct {
	key     string // fixed, adaptive, naive, outage
	side    string // ours or naive
	workers int
	tasks   int
	limit   float64
	apiRate int           // --api-rate, for fixed
	outage  time.Duration // the API answers 503 to every call for this long...
	after   int           // ...once this many resends were sent
	stop    time.Duration // the naive worker's run stops after this long
}

func (s fleetSpec) String() string {
	what := map[string]string{
		"fixed":    fmt.Sprintf("resendq --api-rate %d", s.apiRate),
		"adaptive": "resendq, adaptive rate",
		"naive":    "naive asynq worker",
		"outage":   fmt.Sprintf("resendq, adaptive rate, a %s outage of 503s after %d sent", s.outage, s.after),
	}[s.key]
	return fmt.Sprintf("%s, %d workers, %s tasks, API limit %.0f/s", what, s.workers, count(s.tasks), s.limit)
}

// fleetResult is what one fleet run measured.
type fleetResult struct {
	elapsed    time.Duration // from the workers' start to the last send
	stopped    bool          // the run was stopped before the last send (the naive worker, after spec.stop)
	sent       int
	calls      int64
	limited    int64         // calls answered 429
	dead       int64         // dead letters (resendq only)
	duringRate float64       // calls a second while the outage lasted
	firstSend  time.Duration // from the end of the outage to the first send
}

// share is the achieved rate as a share of the limit.
func (r fleetResult) share(limit float64) float64 {
	return float64(r.sent) / r.elapsed.Seconds() / limit
}

// limitedShare is the share of calls answered 429.
func (r fleetResult) limitedShare() float64 {
	if r.calls == 0 {
		return 0
	}
	return float64(r.limited) / float64(r.calls)
}

// The Login API double of the fleet figures: every call takes fleetLatency,
// and the global limit allows a burst of a fifth of a second's calls.
const (
	fleetLatency  = 20 * time.Millisecond
	fleetBurstDiv = 5
)

// fleetAPI serves the Login API double with its limit and outage switch.
type fleetAPI struct {
	api  *fake.API
	srv  *http.Server
	base string
}

func startFleetAPI() (*fleetAPI, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &fleetAPI{api: fake.New(), base: "http://" + ln.Addr().String() + "/api"}
	a.srv = &http.Server{Handler: a.api, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = a.srv.Serve(ln) }()
	return a, nil
}

func (a *fleetAPI) close() { _ = a.srv.Close() }

// fleetRun fills the bulk queue with spec.tasks resends, starts the fleet
// and times it from the start of its processes to the API's last 204, as
// an operator sees a backlog drain.
func (e *env) fleetRun(ctx context.Context, fa *fleetAPI, spec fleetSpec, run int) (fleetResult, error) {
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		return fleetResult{}, err
	}
	if err := fill(ctx, e.redis.addr, tasks.QueueBulk, spec.tasks); err != nil {
		return fleetResult{}, fmt.Errorf("fill the queue: %w", err)
	}
	fa.api.Reset()
	fa.api.SetDefault(fake.Behavior{Latency: fleetLatency})
	fa.api.SetRateLimit(spec.limit, max(1, int(spec.limit/fleetBurstDiv)))
	var procs []*workerProc
	defer func() {
		for _, p := range procs {
			_ = p.stop()
		}
	}()
	start := time.Now()
	for i := range spec.workers {
		logPath := filepath.Join(e.tmp, fmt.Sprintf("fleet-%s-%d-run%d-w%d.log", spec.key, spec.workers, run, i))
		p, err := startProcess(e.fleetCmd(spec, fa.base), logPath)
		if err != nil {
			return fleetResult{}, err
		}
		procs = append(procs, p)
	}
	var res fleetResult
	outageDone := spec.outage == 0
	var outageEnd time.Time
	var callsAtOutage int64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		select {
		case <-ctx.Done():
			return fleetResult{}, ctx.Err()
		case <-tick.C:
		}
		for _, p := range procs {
			select {
			case <-p.exited:
				return fleetResult{}, fmt.Errorf("%s: a worker exited (logs in %s)", spec, e.tmp)
			default:
			}
		}
		if time.Now().After(deadline) {
			return fleetResult{}, fmt.Errorf("%s: not drained after 10 minutes", spec)
		}
		total, limited, sent := fa.api.Total(), fa.api.RateLimited(), int(fa.api.Answered(http.StatusNoContent))
		switch {
		case !outageDone && outageEnd.IsZero() && sent >= spec.after:
			fa.api.SetOutage("", http.StatusServiceUnavailable)
			callsAtOutage = fa.api.Total()
			outageEnd = time.Now().Add(spec.outage)
		case !outageDone && !outageEnd.IsZero() && time.Now().After(outageEnd):
			fa.api.EndOutage("")
			res.duringRate = float64(fa.api.Total()-callsAtOutage) / spec.outage.Seconds()
			outageDone = true
		}
		stop := spec.stop > 0 && time.Since(start) > spec.stop
		if outageDone && sent >= spec.tasks || stop {
			res.elapsed, res.sent, res.calls, res.limited, res.stopped = time.Since(start), sent, total, limited, stop
			break
		}
	}
	time.Sleep(50 * time.Millisecond) // a second send of a task would show now
	// A run stopped early still has its workers sending meanwhile: only
	// more sends than tasks would be wrong then.
	if sent := int(fa.api.Answered(http.StatusNoContent)); !res.stopped && sent != spec.tasks || res.stopped && sent > spec.tasks {
		return fleetResult{}, fmt.Errorf("%s: %d sends for %d tasks", spec, sent, spec.tasks)
	}
	if spec.outage > 0 {
		for _, c := range fa.api.Calls() {
			if c.Status == http.StatusNoContent && c.At.After(outageEnd) {
				res.firstSend = c.At.Sub(outageEnd)
				break
			}
		}
	}
	if e.verbose {
		perSecond := map[int][2]int{}
		for _, c := range fa.api.Calls() {
			sec := int(c.At.Sub(start).Seconds())
			v := perSecond[sec]
			if c.Status == http.StatusNoContent {
				v[0]++
			} else {
				v[1]++
			}
			perSecond[sec] = v
		}
		fmt.Print("sends (and other answers) per second from the start:")
		for sec := 0; sec <= int(res.elapsed.Seconds()); sec++ {
			fmt.Printf(" %d", perSecond[sec][0])
			if perSecond[sec][1] > 0 {
				fmt.Printf("(%d)", perSecond[sec][1])
			}
		}
		fmt.Println()
	}
	if spec.side == ours {
		st, err := outcome.NewStore(e.rdb, outcome.Options{}).Stats(ctx)
		if err != nil {
			return fleetResult{}, err
		}
		res.dead = st.DeadLetter
	}
	return res, nil
}

// fleetCmd is the command of one worker process of the fleet.
func (e *env) fleetCmd(spec fleetSpec, apiBase string) *exec.Cmd {
	const concurrency = "20"
	if spec.side == naive {
		return exec.Command(e.naive, "-redis-url", e.redis.url, "-api-base", apiBase, "-concurrency", concurrency)
	}
	args := []string{"worker", "--redis-url", e.redis.url, "--api-base", apiBase, "--concurrency", concurrency}
	if spec.apiRate > 0 {
		args = append(args, "--api-rate", strconv.Itoa(spec.apiRate))
	}
	if spec.outage > 0 {
		// The flags of the outage that dead-lettered most of a batch
		// before the circuit.
		args = append(args, "--max-attempts", "5", "--backoff-initial", "200ms", "--backoff-max", "2s")
	}
	return exec.Command(e.ours, args...)
}

// fleetFigures takes every fleet figure runs times.
func (e *env) fleetFigures(ctx context.Context, specs []fleetSpec, runs int, res *results) error {
	fa, err := startFleetAPI()
	if err != nil {
		return err
	}
	defer fa.close()
	res.fleet = specs
	for _, spec := range specs {
		fmt.Printf("\n== fleet: %s\n", spec)
		for i := range runs {
			r, err := e.fleetRun(ctx, fa, spec, i)
			if err != nil {
				return err
			}
			res.fleetRuns[spec.id()] = append(res.fleetRuns[spec.id()], r)
			fmt.Printf("run %d  %5.1fs  %.2f of the limit  %d of %d calls answered 429 (%.1f%%)", i+1, r.elapsed.Seconds(), r.share(spec.limit), r.limited, r.calls, 100*r.limitedShare())
			if r.stopped {
				fmt.Printf("  stopped after %s with %d of %d sent", spec.stop, r.sent, spec.tasks)
			}
			if spec.outage > 0 {
				fmt.Printf("  %d dead letters  %.1f calls/s during the outage  first send %.2fs after it", r.dead, r.duringRate, r.firstSend.Seconds())
			}
			fmt.Println()
		}
	}
	return nil
}

// id names a spec among the fleet figures.
func (s fleetSpec) id() string { return fmt.Sprintf("%s-%d", s.key, s.workers) }

// fleetSpecs are the fleet figures: full size, or quick, as o selects.
func fleetSpecs(o options) []fleetSpec {
	limit := 50.0
	// The naive worker retries a 429 after asynq's default delay (15s and
	// more) and would take many minutes to drain: its run stops, and its
	// figure is what it sent by then.
	n, outage, after, naiveStop := 2000, 25*time.Second, 300, 2*time.Minute
	if o.quick {
		n, outage, after, naiveStop = 300, 3*time.Second, 50, 10*time.Second
	}
	if o.fleetTasks > 0 {
		n = o.fleetTasks
	}
	if o.fleetLimit > 0 {
		limit = o.fleetLimit
	}
	var specs []fleetSpec
	for _, w := range []int{2, 4} {
		specs = append(specs,
			fleetSpec{key: "fixed", side: ours, workers: w, tasks: n, limit: limit, apiRate: int(limit) - 1},
			fleetSpec{key: "adaptive", side: ours, workers: w, tasks: n, limit: limit},
		)
	}
	specs = append(specs, fleetSpec{key: "naive", side: naive, workers: 2, tasks: n, limit: limit, stop: naiveStop})
	for _, w := range []int{2, 4} {
		specs = append(specs, fleetSpec{key: "outage", side: ours, workers: w, tasks: n, limit: limit, outage: outage, after: after})
	}
	if o.fleetOnly == "" {
		return specs
	}
	var picked []fleetSpec
	for _, s := range specs {
		if slices.Contains(strings.Split(o.fleetOnly, ","), s.id()) {
			picked = append(picked, s)
		}
	}
	return picked
}
