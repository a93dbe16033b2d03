package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/tasks"
)

// The HTTP enqueue figure: producers enqueue distinct users from httpClients
// concurrent clients through `resendq serve` on loopback, one resend per
// request (POST /api/v1/resends) and httpBatch per request (POST
// /api/v1/resends:batch), against the Go enqueue API (enqueue.Enqueuer,
// one Enqueue per resend) from as many goroutines, in the same run.
const (
	httpClients = 50
	httpBatch   = 100
	fullHTTP    = 20_000
	quickHTTP   = 1_000
)

// Sides of the HTTP figure.
const (
	sideGo     = "Go API"
	sideSingle = "HTTP, one per request"
	sideBatch  = "HTTP batch of 100"
)

var httpSides = []string{sideGo, sideSingle, sideBatch}

// httpFigure runs the HTTP figure runs times: resends per second, timed as
// the producers see it, from the first request to the last answer.
func (e *env) httpFigure(ctx context.Context, runs, n int, res *results) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(ctx, e.ours, "serve", "--redis-url", e.redis.url, "--http-addr", addr, "--log-level", "warn")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: httpClients, MaxConnsPerHost: httpClients}}
	base := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := client.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("resendq serve did not answer: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.redis.addr, PoolSize: httpClients + 10})
	defer rdb.Close()
	enq := enqueue.New(rdb, enqueue.Options{})
	body := func(from, to int) []byte {
		var b bytes.Buffer
		if to-from > 1 {
			b.WriteString(`{"items":[`)
		}
		for i := from; i < to; i++ {
			if i > from {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"project_id":%q,"username":"user%d@example.com"}`, benchProject, i)
		}
		if to-from > 1 {
			b.WriteString(`]}`)
		}
		return b.Bytes()
	}
	post := func(path string, data []byte, want int) error {
		resp, err := client.Post(base+path, "application/json", bytes.NewReader(data))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want || bytes.Contains(got, []byte(`"error"`)) {
			return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, got)
		}
		return nil
	}
	for i := range runs {
		rates := map[string]float64{}
		for _, side := range rotate(httpSides, i) {
			if err := e.rdb.FlushAll(ctx).Err(); err != nil {
				return err
			}
			var jobs int
			var do func(j int) error
			switch side {
			case sideGo:
				jobs, do = n, func(j int) error {
					_, err := enq.Enqueue(ctx, tasks.Resend{ProjectID: benchProject, Username: fmt.Sprintf("user%d@example.com", j)})
					return err
				}
			case sideSingle:
				jobs, do = n, func(j int) error { return post("/api/v1/resends", body(j, j+1), http.StatusAccepted) }
			case sideBatch:
				jobs, do = n/httpBatch, func(j int) error {
					return post("/api/v1/resends:batch", body(j*httpBatch, (j+1)*httpBatch), http.StatusOK)
				}
			}
			took, err := load(jobs, httpClients, do)
			if err != nil {
				return fmt.Errorf("%s: %w", side, err)
			}
			if q, err := e.rdb.LLen(ctx, "asynq:{"+tasks.QueueSignup+"}:pending").Result(); err != nil || q != int64(n) {
				return fmt.Errorf("%s enqueued %d of %d resends (%v)", side, q, n, err)
			}
			rates[side] = float64(n) / took.Seconds()
			res.http[side] = append(res.http[side], rates[side])
			fmt.Printf("run %d %-22s %8.0f resends/s\n", i+1, side, rates[side])
		}
		fmt.Printf("run %d HTTP/Go %.2f  batch/HTTP %.2f\n", i+1, rates[sideSingle]/rates[sideGo], rates[sideBatch]/rates[sideSingle])
	}
	return nil
}

// rotate is sides starting at run's place, so that each goes first in turn.
func rotate(sides []string, run int) []string {
	k := run % len(sides)
	return append(append([]string{}, sides[k:]...), sides[:k]...)
}

// load calls do for jobs 0..jobs-1 from clients goroutines and returns the
// time from the first call to the last answer, or the first error.
func load(jobs, clients int, do func(j int) error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				j := int(next.Add(1)) - 1
				if j >= jobs {
					return
				}
				if err := do(j); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(jobs))
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), first
}

// Markers of the HTTP figure's part of the Markdown file.
const (
	httpDocBegin = "<!-- begin: the HTTP enqueue figure, written by `make bench` (bench/http.go) -->"
	httpDocEnd   = "<!-- end: the HTTP enqueue figure -->"
)

// httpMarkdown is the HTTP figure's part of docs/BENCHMARKS.md.
func (r *results) httpMarkdown() string {
	var b strings.Builder
	b.WriteString(httpDocBegin + "\n")
	b.WriteString("## Enqueue over HTTP: results\n\n")
	fmt.Fprintf(&b, "Measured %s on the machine above. %s distinct users enqueued from %d concurrent clients: "+
		"through `resendq serve` on loopback (keep-alive connections), one resend per request and %d per batch request, "+
		"and with the Go enqueue API (`enqueue.Enqueuer.Enqueue`) from %d goroutines, against the same Redis in the same run, "+
		"the three taking turns at going first. Timed as the producers see it: from the first request to the last answer. "+
		"Each figure is the median of %d runs; each ratio the median of the ratios taken within one run.\n\n",
		r.machine.date, count(r.httpN), httpClients, httpBatch, httpClients, len(r.http[sideGo]))
	b.WriteString("| figure | resends/s | ratio | goal |\n| --- | ---: | ---: | --- |\n")
	g, s, bt := median(r.http[sideGo]), median(r.http[sideSingle]), median(r.http[sideBatch])
	same := func(f float64) float64 { return f }
	single, batch := medianRatio(r.http[sideSingle], r.http[sideGo], same), medianRatio(r.http[sideBatch], r.http[sideSingle], same)
	fmt.Fprintf(&b, "| Go enqueue API (baseline) | %.0f | – | |\n", g)
	fmt.Fprintf(&b, "| POST /api/v1/resends | %.0f | %.2f × Go API | %s |\n", s, single, verdict(single >= 0.7, "≥ 0.7× the Go API"))
	fmt.Fprintf(&b, "| POST /api/v1/resends:batch (%d items) | %.0f | %.2f × one per request | %s |\n", httpBatch, bt, batch, verdict(batch >= 3, "≥ 3× one per request"))
	b.WriteString("\n<details><summary>Every run</summary>\n\n| run | Go API | one per request | batch |\n| ---: | ---: | ---: | ---: |\n")
	for i := range r.http[sideGo] {
		fmt.Fprintf(&b, "| %d | %.0f | %.0f | %.0f |\n", i+1, r.http[sideGo][i], r.http[sideSingle][i], r.http[sideBatch][i])
	}
	b.WriteString("\n</details>\n")
	b.WriteString(httpDocEnd + "\n")
	return b.String()
}
