package main

import (
	"fmt"
	"strings"
	"time"
)

// timeline is what a drain's polls saw, kept with -v: the tasks processed
// and the calls at the API, printed per tenth of a second so that a stall
// (a pause of the worker, a slow start or end) shows where it is.
type timeline struct {
	start   time.Time
	samples []sample
}

type sample struct {
	at        time.Duration
	processed int64
	active    int64
}

func (t *timeline) add(now time.Time, processed, active int64) {
	t.samples = append(t.samples, sample{now.Sub(t.start), processed, active})
}

// print writes one line per 100 ms: tasks done in it, and the least, mean
// and most calls at the API over its polls.
func (t *timeline) print(side string, spec drainSpec) {
	const step = 100 * time.Millisecond
	var b strings.Builder
	fmt.Fprintf(&b, "timeline of %s, %s: ms from start, tasks done, calls at the API min/mean/max\n", side, spec.key)
	prev, i := int64(0), 0
	for end := step; i < len(t.samples); end += step {
		lo, hi, sum, n := int64(-1), int64(0), int64(0), 0
		last := prev
		for ; i < len(t.samples) && t.samples[i].at < end; i++ {
			s := t.samples[i]
			if lo < 0 || s.active < lo {
				lo = s.active
			}
			hi, sum, n, last = max(hi, s.active), sum+s.active, n+1, s.processed
		}
		if n == 0 {
			continue
		}
		fmt.Fprintf(&b, "%6d %6d %4d %6.1f %4d\n", end.Milliseconds(), last-prev, lo, float64(sum)/float64(n), hi)
		prev = last
	}
	fmt.Print(b.String())
}
