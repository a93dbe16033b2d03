package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// row is one line of the results table.
type row struct {
	figure, ours, naive, ratio, goal string
}

// table is the results as a Markdown table: medians of the runs, and the
// median of the per-run ratios.
func (r *results) table() string {
	var rows []row
	for _, spec := range r.drains {
		z := r.drain[spec.key]
		rate := func(d drainResult) float64 { return d.rate }
		o, n := medianOf(z[ours], rate), medianOf(z[naive], rate)
		ratio := medianRatio(z[ours], z[naive], rate)
		rw := row{
			figure: "worker throughput, tasks/s: " + spec.String(),
			ours:   fmt.Sprintf("%.0f", o), naive: fmt.Sprintf("%.0f", n), ratio: fmt.Sprintf("%.2f", ratio),
		}
		if spec.bulk {
			rw.figure = "bulk drain, tasks/s from process start to empty queue: " + spec.String()
		}
		switch spec.key {
		case "zero":
			rw.goal = verdict(ratio >= 1, "≥ 1.0× naive")
		case "c400", "bulkc400":
			rw.goal = verdict(ratio > 1, "ahead of naive")
		case "bulk", "bulk100k":
			rw.goal = verdict(ratio >= 1.2, "≥ 1.2× naive")
		}
		rows = append(rows, rw)
		if l := spec.limit(); l > 0 {
			lr := row{
				figure: fmt.Sprintf("… as a share of the Little's-law limit (%d / %s = %.0f tasks/s)", spec.concurrency, ms(spec.latency), l),
				ours:   fmt.Sprintf("%.3f", o/l), naive: fmt.Sprintf("%.3f", n/l), // three decimals: 0.945 is not 0.95
			}
			switch spec.key {
			case "c100":
				lr.goal = verdict(o/l >= 0.9, "≥ 0.90")
			case "bulkc400":
				lr.goal = verdict(o/l >= 0.95, "≥ 0.95")
			}
			rows = append(rows, lr)
		}
		if spec.key == "bulkc400" {
			// What the worker shared the two cores with: the figure is
			// CPU-bound on a small machine.
			idle := func(d drainResult) float64 { return d.idle }
			cores := func(d drainResult) float64 {
				if d.rate <= 0 {
					return 0
				}
				return d.driverCPU / (float64(spec.tasks) / d.rate)
			}
			rows = append(rows,
				row{figure: "… machine idle over the drain, share of all cores (/proc/stat)",
					ours: fmt.Sprintf("%.2f", medianOf(z[ours], idle)), naive: fmt.Sprintf("%.2f", medianOf(z[naive], idle))},
				row{figure: "… the bench driver's own CPU over the drain (its API double, its polling), cores",
					ours: fmt.Sprintf("%.2f", medianOf(z[ours], cores)), naive: fmt.Sprintf("%.2f", medianOf(z[naive], cores))})
		}
	}
	if z, ok := r.drain["c400"]; ok {
		hwm := func(d drainResult) float64 { return float64(d.hwmKB) / 1024 }
		ratio := medianRatio(z[ours], z[naive], hwm)
		rows = append(rows, row{
			figure: "peak resident memory (VmHWM) of the worker, MiB, concurrency 400 under load",
			ours:   fmt.Sprintf("%.1f", medianOf(z[ours], hwm)), naive: fmt.Sprintf("%.1f", medianOf(z[naive], hwm)),
			ratio: fmt.Sprintf("%.2f", ratio), goal: verdict(ratio <= 1.2, "≤ 1.20× naive"),
		})
	}
	if spec, ok := r.spec("zero"); ok {
		z := r.drain["zero"]
		n := float64(spec.tasks)
		for _, f := range []struct {
			name   string
			format string
			get    func(drainResult) float64
		}{
			{"Redis commands per task (INFO commandstats, script-internal ones included)", "%.1f", func(d drainResult) float64 { return float64(d.redis.commands) / n }},
			{"… of which script calls (EVALSHA/EVAL) per task", "%.2f", func(d drainResult) float64 { return float64(d.redis.scripts) / n }},
			{"Redis read events per task (total_reads_processed: about one per round trip)", "%.2f", func(d drainResult) float64 { return float64(d.redis.reads) / n }},
			{"Redis CPU per task, µs (used_cpu_user+sys)", "%.1f", func(d drainResult) float64 { return d.redis.cpu / n * 1e6 }},
			{"worker process CPU per task, µs (utime+stime)", "%.0f", func(d drainResult) float64 { return d.cpu / n * 1e6 }},
		} {
			rows = append(rows, row{
				figure: f.name + ", zero-latency drain",
				ours:   fmt.Sprintf(f.format, medianOf(z[ours], f.get)), naive: fmt.Sprintf(f.format, medianOf(z[naive], f.get)),
				ratio: fmt.Sprintf("%.2f", medianRatio(z[ours], z[naive], f.get)),
			})
		}
	}
	if r.idle > 0 {
		get := func(f float64) float64 { return f }
		rows = append(rows, row{
			figure: fmt.Sprintf("idle worker, Redis commands a second (script-internal ones included), empty queues, concurrency 50, over %s", r.idle),
			ours:   fmt.Sprintf("%.1f", medianOf(r.idleRates[ours], get)), naive: fmt.Sprintf("%.1f", medianOf(r.idleRates[naive], get)),
			ratio: fmt.Sprintf("%.2f", medianRatio(r.idleRates[ours], r.idleRates[naive], get)),
		})
	}
	if r.latency != nil {
		for _, q := range []struct {
			name string
			q    float64
		}{{"p50", 0.5}, {"p99", 0.99}} {
			get := func(l latencyResult) float64 { return msf(l.quantile(q.q)) }
			rw := row{
				figure: fmt.Sprintf("signup latency, ms, %s: %s", q.name, r.latency),
				ours:   fmt.Sprintf("%.1f", medianOf(r.latencies[ours], get)), naive: fmt.Sprintf("%.1f", medianOf(r.latencies[naive], get)),
				ratio: fmt.Sprintf("%.2f", medianRatio(r.latencies[ours], r.latencies[naive], get)),
			}
			if q.name == "p99" {
				rw.goal = verdict(medianOf(r.latencies[ours], get) <= 1000, "≤ 1000 ms")
			}
			rows = append(rows, rw)
		}
	}
	if len(r.enqueue[ours]) > 0 || r.enqErr != "" {
		rw := row{figure: fmt.Sprintf("batch enqueue, rows/s, %s-row CSV: `resendq enqueue --file` vs a plain `Client.Enqueue` loop", count(r.rows))}
		if len(r.enqueue[ours]) == 0 {
			rw.ours, rw.ratio = "pending", "–"
			rw.naive = fmt.Sprintf("%.0f", median(r.enqueue[naive]))
		} else {
			rw.ours, rw.naive = fmt.Sprintf("%.0f", median(r.enqueue[ours])), fmt.Sprintf("%.0f", median(r.enqueue[naive]))
			ratios := make([]float64, len(r.enqueue[ours]))
			for i := range ratios {
				ratios[i] = r.enqueue[ours][i] / r.enqueue[naive][i]
			}
			rw.ratio = fmt.Sprintf("%.2f", median(ratios))
		}
		rows = append(rows, rw)
	}
	var b strings.Builder
	if r.quick {
		b.WriteString("A -quick run: it checks that the suite works; its figures are too small to mean anything.\n\n")
		for i := range rows {
			rows[i].goal = ""
		}
	}
	b.WriteString("| figure | resendq | naive asynq | resendq / naive | goal |\n| --- | ---: | ---: | ---: | --- |\n")
	for _, rw := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", rw.figure, rw.ours, rw.naive, or(rw.ratio, "–"), rw.goal)
	}
	return b.String()
}

// fleetTable is the flow-control figures as a Markdown table: medians of
// the runs.
func (r *results) fleetTable() string {
	if len(r.fleet) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("| figure | achieved / limit | calls answered 429 | dead letters | calls/s during the outage | first send after it | goal |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, spec := range r.fleet {
		runs := r.fleetRuns[spec.id()]
		if len(runs) == 0 {
			continue
		}
		share := medianOf(runs, func(f fleetResult) float64 { return f.share(spec.limit) })
		limited := medianOf(runs, func(f fleetResult) float64 { return 100 * f.limitedShare() })
		dead := medianOf(runs, func(f fleetResult) float64 { return float64(f.dead) })
		worstDead := 0.0
		for _, f := range runs {
			worstDead = max(worstDead, float64(f.dead))
		}
		name := spec.String()
		if runs[0].stopped {
			name += fmt.Sprintf(" (stopped after %s: the share is what it sent by then)", spec.stop)
		}
		row := fmt.Sprintf("| %s | %.2f | %.1f%% |", name, share, limited)
		goal := ""
		switch spec.key {
		case "fixed":
			goal = verdict(share >= 0.95 && limited <= 1, "≥ 0.95 of the limit, ≤ 1% 429")
		case "adaptive":
			goal = verdict(share >= 0.9 && limited <= 3, "≥ 0.90 of the limit, ≤ 3% 429")
		}
		if spec.outage > 0 {
			during := medianOf(runs, func(f fleetResult) float64 { return f.duringRate })
			first := medianOf(runs, func(f fleetResult) float64 { return f.firstSend.Seconds() })
			row += fmt.Sprintf(" %.0f (worst %.0f) | %.2f | %.2f s |", dead, worstDead, during, first)
			goal = verdict(worstDead == 0 && during <= 2 && first <= 2, "0 dead letters, ≤ 2 calls/s, first send within one probe (2 s)")
		} else if spec.side == ours {
			row += fmt.Sprintf(" %.0f | – | – |", dead)
		} else {
			row += " – | – | – |"
		}
		if r.quick {
			goal = ""
		}
		b.WriteString(row + " " + goal + " |\n")
	}
	return b.String()
}

// runsTable lists every run, so that the spread behind each median shows.
func (r *results) runsTable() string {
	var b strings.Builder
	b.WriteString("| figure | run | resendq | naive | ratio |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, spec := range r.drains {
		z := r.drain[spec.key]
		for i := range z[ours] {
			fmt.Fprintf(&b, "| tasks/s, %s | %d | %.0f | %.0f | %.2f |\n", spec, i+1, z[ours][i].rate, z[naive][i].rate, z[ours][i].rate/z[naive][i].rate)
		}
	}
	for i := range r.idleRates[ours] {
		o, n := r.idleRates[ours][i], r.idleRates[naive][i]
		fmt.Fprintf(&b, "| idle worker, Redis commands/s | %d | %.1f | %.1f | %.2f |\n", i+1, o, n, o/n)
	}
	for i := range r.latencies[ours] {
		o, n := msf(r.latencies[ours][i].quantile(0.99)), msf(r.latencies[naive][i].quantile(0.99))
		fmt.Fprintf(&b, "| signup latency p99, ms | %d | %.1f | %.1f | %.2f |\n", i+1, o, n, o/n)
	}
	for i := range r.enqueue[ours] {
		fmt.Fprintf(&b, "| rows/s, batch enqueue | %d | %.0f | %.0f | %.2f |\n", i+1, r.enqueue[ours][i], r.enqueue[naive][i], r.enqueue[ours][i]/r.enqueue[naive][i])
	}
	for _, spec := range r.fleet {
		for i, f := range r.fleetRuns[spec.id()] {
			fmt.Fprintf(&b, "| %s: s to drain, share of the limit, %% 429", spec)
			if spec.outage > 0 {
				b.WriteString(", dead letters, calls/s during the outage, s to the first send after it")
			}
			fmt.Fprintf(&b, " | %d | %.1f s, %.2f, %.1f%%", i+1, f.elapsed.Seconds(), f.share(spec.limit), 100*f.limitedShare())
			if spec.outage > 0 {
				fmt.Fprintf(&b, ", %d, %.2f, %.2f s", f.dead, f.duringRate, f.firstSend.Seconds())
			}
			b.WriteString(" | – | – |\n")
		}
	}
	return b.String()
}

func (r *results) spec(key string) (drainSpec, bool) {
	for _, s := range r.drains {
		if s.key == key {
			return s, true
		}
	}
	return drainSpec{}, false
}

func verdict(ok bool, goal string) string {
	if ok {
		return goal + ": met"
	}
	return goal + ": **not met**"
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianOf[T any](rs []T, f func(T) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return median(v)
}

// medianRatio is the median over runs of ours/naive, each ratio taken
// within one run.
func medianRatio[T any](o, n []T, f func(T) float64) float64 {
	v := make([]float64, 0, len(o))
	for i := range min(len(o), len(n)) {
		if d := f(n[i]); d != 0 {
			v = append(v, f(o[i])/d)
		}
	}
	return median(v)
}

// Markers of the part of the Markdown file that the driver writes.
const (
	docBegin = "<!-- begin: written by `make bench` (bench/report.go); edits between these markers are overwritten -->"
	docEnd   = "<!-- end: written by `make bench` -->"
)

// markdown is the generated part of docs/BENCHMARKS.md.
func (r *results) markdown() string {
	var b strings.Builder
	b.WriteString(docBegin + "\n")
	b.WriteString("## Worker: results\n\n")
	m := r.machine
	fmt.Fprintf(&b, "Measured %s with `make bench` on %d cores (%s), %s of memory, %s; %s, %s. "+
		"Load average before the runs: %s%s (a shared machine: compare the ratios, not the absolute figures). "+
		"Each figure is the median of %d runs, the two workers alternating which goes first; "+
		"each ratio is the median of the ratios taken within one run.\n\n",
		m.date, m.cpus, m.model, m.memory, m.kernel, m.goVer, m.redis, m.load, m.neighbourText(), r.runs)
	b.WriteString(r.table())
	if ft := r.fleetTable(); ft != "" {
		fmt.Fprintf(&b, "\n## Flow control: results\n\n"+
			"Worker processes drain a backlog in the `bulk` queue through the Login API double (`loginapi/fake`: %s per call, "+
			"a global limit with a burst of a fifth of a second's calls, answering 429 with `Retry-After: 1` beyond it), every worker at "+
			"`--concurrency 20`. Timed as an operator sees it: from the start of the worker processes to the API's last 204. "+
			"Each figure is the median of %d runs.\n\n", ms(fleetLatency), len(r.fleetRuns[r.fleet[0].id()]))
		b.WriteString(ft)
	}
	b.WriteString("\n<details><summary>Every run</summary>\n\n")
	b.WriteString(r.runsTable())
	b.WriteString("\n</details>\n")
	if len(r.profiles) > 0 {
		fmt.Fprintf(&b, "\n## Worker: profiles\n\n"+
			"One zero-latency drain of %s tasks per worker, profiled (`--cpuprofile`/`--memprofile` of `resendq worker`, "+
			"`-cpuprofile`/`-memprofile` of bench/naive); the head of `go tool pprof -top` (allocations: "+
			"`-sample_index=alloc_space`). Longer listings: [profiles/](profiles/).\n", count(r.profiles[0].tasks))
		for _, p := range r.profiles {
			kind := map[string]string{"cpu": "CPU", "alloc": "allocations (bytes)"}[p.kind]
			fmt.Fprintf(&b, "\n### %s: %s\n\n```text\n%s\n```\n", p.side, kind, p.text)
		}
	}
	b.WriteString(docEnd + "\n")
	return b.String()
}

// writeDoc puts block, which begins with begin and ends with end, into the
// Markdown file at path: in place of an earlier block between the same
// markers, else (the main block) after the file's title or (another) at
// the end, else into a new file. Everything else in the file is kept as
// it is.
func writeDoc(path, begin, end, block string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(path, []byte(spliceDoc(string(old), begin, end, block)), 0o644)
}

func spliceDoc(doc, begin, end, block string) string {
	if i := strings.Index(doc, begin); i >= 0 {
		if j := strings.Index(doc[i:], end); j >= 0 {
			stop := i + j + len(end)
			if stop < len(doc) && doc[stop] == '\n' {
				stop++
			}
			return doc[:i] + block + doc[stop:]
		}
	}
	if strings.TrimSpace(doc) == "" {
		return "# Benchmarks\n\n" + block
	}
	if begin != docBegin {
		return strings.TrimRight(doc, "\n") + "\n\n" + block
	}
	if strings.HasPrefix(doc, "# ") {
		nl := strings.IndexByte(doc, '\n')
		if nl < 0 {
			return doc + "\n\n" + block
		}
		return doc[:nl+1] + "\n" + block + "\n" + strings.TrimLeft(doc[nl+1:], "\n")
	}
	return block + "\n" + doc
}
