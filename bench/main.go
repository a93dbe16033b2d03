// Command bench is the driver of `make bench` and `make bench-quick`
// (scripts/bench.sh): it measures the resendq worker binary against a naive
// asynq worker (bench/naive) on the same throw-away Redis in the same run,
// and prints the table of medians and ratios, which `make bench` also writes
// to docs/BENCHMARKS.md.
//
//	go run ./bench -ours bin/resendq -naive bin/naive [-quick] [-runs 5] [-doc docs/BENCHMARKS.md] [-profiles docs/profiles]
//
// Every figure is taken -runs times, the two workers alternating which goes
// first; the table shows medians, and each ratio is the median of the ratios
// of the runs (ours / naive within one run). Both workers are separate
// processes draining a queue filled before they start, calling a 204 API
// served by this driver (optionally with a latency); see docs/BENCHMARKS.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	var o options
	flag.StringVar(&o.ours, "ours", "bin/resendq", "the resendq binary")
	flag.StringVar(&o.naive, "naive", "bin/naive", "the naive asynq worker (bench/naive)")
	flag.BoolVar(&o.quick, "quick", false, "a small run of every figure, once, to check that the suite works (seconds; figures are not meaningful)")
	flag.IntVar(&o.runs, "runs", 5, "runs of each figure")
	flag.StringVar(&o.only, "only", "", "comma-separated figures to run: zero, c100, c400, bulk, bulk100k, bulkc400, idle, latency, fleet, enqueue, http, cluster, profiles (default: all)")
	flag.StringVar(&o.doc, "doc", "", "write the results into this Markdown file (its generated section only)")
	flag.StringVar(&o.profiles, "profiles", "", "profile a zero-latency drain of each worker and keep the pprof -top text in this folder")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary folder (worker logs, raw profiles) and print its path")
	flag.BoolVar(&o.verbose, "v", false, "print the Redis commands of each run, per task, with the Redis time they took, and each drain's timeline: tasks done and calls at the API per 100 ms")
	flag.StringVar(&o.vs, "vs", "", "measure a change: run this resendq build in place of the naive worker (its figures show in the naive column)")
	flag.StringVar(&o.profileFigure, "profile-figure", "zero", "the figure whose drain -profiles profiles: zero, c100 or c400")
	flag.StringVar(&o.fleetOnly, "fleet-only", "", "comma-separated fleet figures to run, as KEY-WORKERS: fixed-2, adaptive-4, naive-2, outage-2, ... (default: all)")
	flag.IntVar(&o.fleetTasks, "fleet-tasks", 0, "tasks of each fleet figure (default 2000; 300 with -quick)")
	flag.Float64Var(&o.fleetLimit, "fleet-limit", 0, "the API's limit in the fleet figures, calls per second (default 50)")
	flag.Float64Var(&o.neighbour, "neighbour", 0, "run every figure beside a busy neighbour: a process keeping this share of one core busy (0.5: busy 5 ms in every 10 ms)")
	busyShare := flag.Float64("busy", 0, "be the busy neighbour of -neighbour (internal)")
	flag.Parse()
	if *busyShare > 0 {
		busy(*busyShare)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
