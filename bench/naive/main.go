// Command naive is the baseline of the worker benchmarks (`make bench`): a
// bare asynq server whose handler does what any asynq tutorial would for a
// resend task and nothing else. It decodes the payload, POSTs
// {"username":...} to {api-base}/user/resend_confirmation_link?projectId=...
// and writes the status as the task's result with ResultWriter.
//
// It takes asynq's default Config except what must match the resendq worker
// it is compared with: Concurrency, Queues (signup=8,bulk=1),
// TaskCheckInterval (100ms) and DelayedTaskCheckInterval (500ms). Its Redis
// pool is asynq's default. Its HTTP client keeps up to -concurrency idle
// connections to the API (net/http's default of 2 would make it open a new
// connection for most calls, a straw man rather than a baseline).
//
//	naive -redis-url redis://127.0.0.1:6379/0 -api-base http://127.0.0.1:8089/api -concurrency 50 [-cpuprofile F] [-memprofile F]
//
// SIGTERM or SIGINT stops it gracefully (asynq's own signal handling).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"time"

	"github.com/hibiken/asynq"
)

func main() {
	redisURL := flag.String("redis-url", "redis://127.0.0.1:6379/0", "Redis to use")
	apiBase := flag.String("api-base", "http://127.0.0.1:8089/api", "base URL of the Login API")
	concurrency := flag.Int("concurrency", 50, "tasks processed at once")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memProfile := flag.String("memprofile", "", "write an allocation profile of the whole run to this file on exit")
	flag.Parse()
	if err := run(*redisURL, *apiBase, *concurrency, *cpuProfile, *memProfile); err != nil {
		log.Fatal(err)
	}
}

func run(redisURL, apiBase string, concurrency int, cpuProfile, memProfile string) error {
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		return err
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if memProfile != "" {
		defer writeAllocs(memProfile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = concurrency
	h := &handler{
		endpoint: apiBase + "/user/resend_confirmation_link?projectId=",
		client:   &http.Client{Transport: tr, Timeout: 10 * time.Second},
	}
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:              concurrency,
		Queues:                   map[string]int{"signup": 8, "bulk": 1},
		TaskCheckInterval:        100 * time.Millisecond,
		DelayedTaskCheckInterval: 500 * time.Millisecond,
	})
	mux := asynq.NewServeMux()
	mux.Handle("resendq:resend_confirmation", h)
	return srv.Run(mux)
}

// writeAllocs writes the allocation profile of the run so far to path.
func writeAllocs(path string) {
	f, err := os.Create(path)
	if err != nil {
		log.Print(err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		log.Print(err)
	}
}

type handler struct {
	endpoint string
	client   *http.Client
}

// payload is the part of the resend task the call needs.
type payload struct {
	ProjectID string `json:"project_id"`
	Username  string `json:"username"`
}

func (h *handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("decode payload: %v: %w", err, asynq.SkipRetry)
	}
	body, err := json.Marshal(map[string]string{"username": p.Username})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.endpoint+url.QueryEscape(p.ProjectID), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("login api answered %d", resp.StatusCode)
	}
	_, err = t.ResultWriter().Write([]byte(fmt.Sprintf(`{"status":%d}`, resp.StatusCode)))
	return err
}
