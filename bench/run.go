package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

type options struct {
	ours, naive   string
	quick         bool
	runs          int
	only          string
	doc           string
	profiles      string
	keep          bool
	verbose       bool
	vs            string
	profileFigure string
	fleetOnly     string
	fleetTasks    int
	fleetLimit    float64
	neighbour     float64 // share of one core a busy neighbour takes, when set
}

// The figures of the suite, full size and quick.
var (
	fullDrains = []drainSpec{
		{key: "zero", tasks: 20_000, concurrency: 50},
		{key: "c100", tasks: 5_000, concurrency: 100, latency: 100 * time.Millisecond},
		{key: "c400", tasks: 20_000, concurrency: 400, latency: 100 * time.Millisecond},
		{key: "bulk", tasks: 20_000, concurrency: 50, bulk: true},
		{key: "bulk100k", tasks: 100_000, concurrency: 50, bulk: true},
		{key: "bulkc400", tasks: 40_000, concurrency: 400, latency: 100 * time.Millisecond, bulk: true},
	}
	quickDrains = []drainSpec{
		{key: "zero", tasks: 2_000, concurrency: 50},
		{key: "c100", tasks: 300, concurrency: 100, latency: 100 * time.Millisecond},
		{key: "c400", tasks: 1_200, concurrency: 400, latency: 100 * time.Millisecond},
		{key: "bulk", tasks: 2_000, concurrency: 50, bulk: true},
		{key: "bulkc400", tasks: 1_200, concurrency: 400, latency: 100 * time.Millisecond, bulk: true},
	}
	fullIdle, quickIdle = 10 * time.Second, 2 * time.Second
	fullEnqueueRows     = 100_000
	quickEnqueueRows    = 2_000
	fullClusterRows     = 20_000
	quickClusterRows    = 1_000
	fullLatency         = latencySpec{backlog: 100_000, signups: 60, concurrency: 50}
	quickLatency        = latencySpec{backlog: 5_000, signups: 10, concurrency: 50}
)

// results are every run of every figure.
type results struct {
	machine   machine
	runs      int
	drains    []drainSpec
	drain     map[string]map[string][]drainResult // spec key → side → runs
	rows      int
	enqueue   map[string][]float64       // side → rows/s per run
	enqErr    string                     // why the batch enqueue row is missing
	http      map[string][]float64       // HTTP figure: side → resends/s per run
	httpN     int                        // resends per side and run of the HTTP figure
	idle      time.Duration              // how long the idle figure watched, when run
	idleRates map[string][]float64       // side → Redis commands/s of an idle worker, per run
	latency   *latencySpec               // the signup-latency figure, when run
	latencies map[string][]latencyResult // side → runs
	fleet     []fleetSpec                // the flow-control figures, when run
	fleetRuns map[string][]fleetResult   // spec id → runs
	profiles  []profileTop
	quick     bool // a -quick run: too small for its figures to mean anything
	// The Redis Cluster figure, when run: side (one node, cluster) → runs.
	cluster     map[string][]clusterRun
	clusterRows int
}

func run(ctx context.Context, o options) error {
	if o.runs < 1 {
		return fmt.Errorf("-runs %d: want at least 1", o.runs)
	}
	drains, rows := fullDrains, fullEnqueueRows
	if o.quick {
		drains, rows, o.runs = quickDrains, quickEnqueueRows, 1
	}
	want := func(key string) bool {
		return o.only == "" || slices.Contains(strings.Split(o.only, ","), key)
	}
	e, cleanup, err := setup(o)
	if err != nil {
		return err
	}
	defer cleanup()
	if o.neighbour != 0 {
		stop, err := startNeighbour(o.neighbour)
		if err != nil {
			return err
		}
		defer stop()
	}
	res := &results{
		machine: describeMachine(ctx, e.rdb), runs: o.runs, quick: o.quick,
		drain: map[string]map[string][]drainResult{}, enqueue: map[string][]float64{}, rows: rows,
		latencies: map[string][]latencyResult{}, idleRates: map[string][]float64{}, fleetRuns: map[string][]fleetResult{}, http: map[string][]float64{},
	}
	res.machine.neighbour = o.neighbour
	fmt.Println(res.machine.text())
	for _, spec := range drains {
		if !want(spec.key) {
			continue
		}
		if err := e.drainFigure(ctx, spec, o, res); err != nil {
			return err
		}
	}
	if want("idle") {
		d := fullIdle
		if o.quick {
			d = quickIdle
		}
		if err := e.idleFigure(ctx, d, min(o.runs, 3), res); err != nil {
			return err
		}
	}
	if want("latency") {
		spec := fullLatency
		if o.quick {
			spec = quickLatency
		}
		if err := e.latencyFigure(ctx, spec, o.runs, res); err != nil {
			return err
		}
	}
	if want("fleet") {
		runs := min(o.runs, 3) // each run drains for half a minute or more
		if err := e.fleetFigures(ctx, fleetSpecs(o), runs, res); err != nil {
			return err
		}
	}
	if want("enqueue") {
		fmt.Printf("\n== batch enqueue: %s rows\n", count(rows))
		if err := e.enqueueFigure(ctx, o.runs, rows, res); err != nil {
			return err
		}
	}
	if want("http") {
		res.httpN = fullHTTP
		if o.quick {
			res.httpN = quickHTTP
		}
		fmt.Printf("\n== enqueue over HTTP: %s resends, %d clients\n", count(res.httpN), httpClients)
		if err := e.httpFigure(ctx, o.runs, res.httpN, res); err != nil {
			return err
		}
	}
	if want("cluster") {
		rows := fullClusterRows
		if o.quick {
			rows = quickClusterRows
		}
		fmt.Printf("\n== one Redis node and a %d-master Redis Cluster: a batch of %s rows, then its drain\n", clusterMasters, count(rows))
		if err := e.clusterFigure(ctx, o.runs, rows, res); err != nil {
			return err
		}
	}
	if o.profiles != "" && !o.quick && want("profiles") {
		spec := drains[0]
		for _, s := range drains {
			if s.key == o.profileFigure {
				spec = s
			}
		}
		fmt.Printf("\n== profiles of a drain: %s\n", spec)
		if res.profiles, err = e.profile(ctx, spec, o.profiles); err != nil {
			return err
		}
	}
	fmt.Println()
	fmt.Println(res.table())
	fmt.Println(res.fleetTable())
	if res.cluster != nil {
		fmt.Println(res.clusterMarkdown())
	}
	if o.doc != "" && !o.quick {
		// Each part of the file is rewritten only by a run of its figures.
		if o.only == "" || slices.ContainsFunc(strings.Split(o.only, ","), func(k string) bool { return k != "http" && k != "profiles" && k != "cluster" }) {
			if err := writeDoc(o.doc, docBegin, docEnd, res.markdown()); err != nil {
				return err
			}
		}
		if want("http") {
			if err := writeDoc(o.doc, httpDocBegin, httpDocEnd, res.httpMarkdown()); err != nil {
				return err
			}
		}
		if want("cluster") {
			if err := writeDoc(o.doc, clusterDocBegin, clusterDocEnd, res.clusterMarkdown()); err != nil {
				return err
			}
		}
		fmt.Printf("wrote %s\n", o.doc)
	}
	return nil
}

// drainFigure takes one throughput figure o.runs times per worker.
func (e *env) drainFigure(ctx context.Context, spec drainSpec, o options, res *results) error {
	res.drains = append(res.drains, spec)
	z := map[string][]drainResult{}
	res.drain[spec.key] = z
	fmt.Printf("\n== worker throughput: %s\n", spec)
	n := float64(spec.tasks)
	for i := range o.runs {
		for _, side := range order(i) {
			r, err := e.drain(ctx, side, spec, profiles{})
			if err != nil {
				return err
			}
			z[side] = append(z[side], r)
			if spec.latency > 0 {
				fmt.Printf("run %d %-8s first call %.0f ms after the start, mean call at the API %.1f ms, mean calls in flight %.0f; driver CPU %.2f s, machine idle %.0f%%\n", i+1, side, msf(r.firstCall), msf(r.apiLatency), r.inFlight, r.driverCPU, 100*r.idle)
			}
			fmt.Printf("run %d %-8s %6.0f tasks/s  peak RSS %5.1f MiB  worker CPU %4.0f µs/task  Redis per task: %4.1f commands, %4.2f scripts, %4.2f reads, %5.1f µs CPU\n",
				i+1, side, r.rate, float64(r.hwmKB)/1024, r.cpu/n*1e6,
				float64(r.redis.commands)/n, float64(r.redis.scripts)/n, float64(r.redis.reads)/n, r.redis.cpu/n*1e6)
			if o.verbose {
				fmt.Print(r.redis.perTask(spec.tasks))
			}
		}
		fmt.Printf("run %d ratio    %6.2f\n", i+1, z[ours][i].rate/z[naive][i].rate)
	}
	return nil
}

// order alternates which worker goes first, to spread drifting noise.
func order(run int) []string {
	if run%2 == 0 {
		return []string{ours, naive}
	}
	return []string{naive, ours}
}

func setup(o options) (*env, func(), error) {
	for _, bin := range []string{o.ours, o.naive} {
		if _, err := os.Stat(bin); err != nil {
			return nil, nil, fmt.Errorf("%s: %w (scripts/bench.sh builds it)", bin, err)
		}
	}
	bin, err := redisBinary()
	if err != nil {
		return nil, nil, fmt.Errorf("redis-server not found (set RESENDQ_REDIS_SERVER or install it): %w", err)
	}
	tmp, err := os.MkdirTemp("", "resendq-bench-")
	if err != nil {
		return nil, nil, err
	}
	srv, err := startRedis(bin, tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, nil, err
	}
	a, err := startAPI()
	if err != nil {
		srv.stop()
		os.RemoveAll(tmp)
		return nil, nil, err
	}
	own := &ownCommands{}
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr})
	rdb.AddHook(own)
	oursAbs, _ := filepath.Abs(o.ours)
	naiveAbs, _ := filepath.Abs(o.naive)
	e := &env{redis: srv, rdb: rdb, own: own, api: a, ours: oursAbs, naive: naiveAbs, tmp: tmp, verbose: o.verbose}
	if o.vs != "" {
		e.vs, _ = filepath.Abs(o.vs)
	}
	return e, func() {
		rdb.Close()
		a.close()
		srv.stop()
		if o.keep {
			fmt.Println("kept", tmp)
		} else {
			os.RemoveAll(tmp)
		}
	}, nil
}

// count writes 20000 as "20k".
func count(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
