package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// The two workers compared.
const (
	ours  = "resendq"
	naive = "naive"
)

// benchProject is the Login project ID of every benchmark task.
const benchProject = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"

// drainSpec is one throughput figure: a queue of tasks drained by a worker
// with the given concurrency against the API with the given latency.
type drainSpec struct {
	key         string
	tasks       int
	concurrency int
	latency     time.Duration
	// bulk: the tasks wait in the bulk queue, where batches put them, and
	// the drain is timed from the worker process's start to its last task
	// done, as an operator sees a batch go. Otherwise they wait in the
	// signup queue, where single enqueues go, and the drain is timed from
	// the first task done to the last.
	bulk bool
}

// queue is where the spec's tasks wait.
func (s drainSpec) queue() string {
	if s.bulk {
		return tasks.QueueBulk
	}
	return tasks.QueueSignup
}

func (s drainSpec) String() string {
	return fmt.Sprintf("%s tasks in %s, %s API latency, concurrency %d", count(s.tasks), s.queue(), ms(s.latency), s.concurrency)
}

// limit is the Little's-law bound on throughput: concurrency / latency.
func (s drainSpec) limit() float64 {
	if s.latency <= 0 {
		return 0
	}
	return float64(s.concurrency) / s.latency.Seconds()
}

// drainResult is what one drain measured.
type drainResult struct {
	rate float64 // tasks/s: from the first completion to the last, or (bulk) from the process's start
	// apiLatency is the mean time a call spent at the API, as the API timed
	// it (its latency plus the machine's scheduling delays), and inFlight
	// the mean number of calls at the API from the worker's start to its
	// last task done.
	apiLatency time.Duration
	inFlight   float64
	firstCall  time.Duration // from the worker's start to the API's first call
	hwmKB      int64         // peak resident memory of the worker (VmHWM), KiB
	cpu        float64       // CPU time of the worker process, seconds
	redis      redisWork     // Redis's work, minus the driver's own polling
	// driverCPU is the CPU time of this driver (the API double, its
	// polling) and idle the machine's idle share, both from the worker's
	// start to its last task done: what the worker under test shared the
	// machine with.
	driverCPU float64
	idle      float64
}

// env is what every run shares: one Redis, one API, the binaries.
type env struct {
	verbose bool
	redis   *redisServer
	rdb     *redis.Client // the driver's own client: polling and INFO
	own     *ownCommands
	api     *api
	ours    string // path of bin/resendq
	naive   string // path of the naive worker
	vs      string // when set, a resendq build run in place of the naive worker
	tmp     string
}

// profiles are the files a profiled drain writes; empty fields: none.
type profiles struct{ cpu, mem string }

// drain fills the queue with spec.tasks tasks, starts the worker of side as
// a process and waits until it has completed all of them.
func (e *env) drain(ctx context.Context, side string, spec drainSpec, prof profiles) (drainResult, error) {
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		return drainResult{}, err
	}
	if err := fill(ctx, e.redis.addr, spec.queue(), spec.tasks); err != nil {
		return drainResult{}, fmt.Errorf("fill the queue: %w", err)
	}
	e.api.latency.Store(int64(spec.latency))
	e.api.calls.Store(0)
	e.api.bad.Store(0)
	e.api.peak.Store(0)
	e.api.busy.Store(0)
	e.api.first.Store(0)

	before, err := readStats(ctx, e.rdb)
	if err != nil {
		return drainResult{}, err
	}
	e.own.reset()
	cpu0, idle0 := selfCPU(), machineIdle()
	logPath := filepath.Join(e.tmp, fmt.Sprintf("%s-%s.log", side, spec.key))
	start := time.Now()
	p, err := e.startWorker(side, spec.concurrency, logPath, prof)
	if err != nil {
		return drainResult{}, err
	}
	defer p.stop()
	var tl *timeline
	if e.verbose {
		tl = &timeline{start: start}
	}
	first, last, done0, err := e.waitDrained(ctx, p, spec.queue(), spec.tasks, tl)
	if tl != nil {
		tl.print(side, spec)
	}
	if err != nil {
		return drainResult{}, fmt.Errorf("%s: %w (log: %s)", side, err, logPath)
	}
	res := drainResult{driverCPU: selfCPU() - cpu0}
	if busy, idle := machineIdle().sub(idle0); busy+idle > 0 {
		res.idle = idle / (busy + idle)
	}
	if spec.bulk {
		first, done0 = start, 0
	}
	after, err := readStats(ctx, e.rdb)
	if err != nil {
		return drainResult{}, err
	}
	res.redis = diffStats(before, after, e.own)
	if last.After(first) {
		res.rate = float64(int64(spec.tasks)-done0) / last.Sub(first).Seconds()
	}
	if calls := e.api.calls.Load(); calls > 0 {
		res.apiLatency = time.Duration(e.api.busy.Load() / calls)
		res.inFlight = float64(e.api.busy.Load()) / float64(last.Sub(start))
		res.firstCall = time.Unix(0, e.api.first.Load()).Sub(start)
	}
	res.hwmKB, res.cpu = p.usage()
	if err := p.stop(); err != nil {
		return drainResult{}, fmt.Errorf("%s did not stop cleanly: %w (log: %s)", side, err, logPath)
	}
	if err := e.check(ctx, side, spec, logPath); err != nil {
		return drainResult{}, err
	}
	return res, nil
}

// check makes sure the run did the work it was timed for: one API call per
// task, never more calls at once than the concurrency, and for resendq one
// outcome record and one log line per task.
func (e *env) check(ctx context.Context, side string, spec drainSpec, logPath string) error {
	n := spec.tasks
	if calls, bad := e.api.calls.Load(), e.api.bad.Load(); calls != int64(n) || bad != 0 {
		return fmt.Errorf("%s: the API got %d good calls and %d bad ones for %d tasks", side, calls, bad, n)
	}
	if peak := e.api.peak.Load(); peak > int64(spec.concurrency) {
		return fmt.Errorf("%s: the API got %d calls at once, over the concurrency of %d", side, peak, spec.concurrency)
	}
	if side != ours {
		return nil
	}
	st, err := outcome.NewStore(e.rdb, outcome.Options{}).Stats(ctx)
	if err != nil || st.Sent != int64(n) {
		return fmt.Errorf("resendq: %d outcome records counted as sent for %d tasks (%v)", st.Sent, n, err)
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		return err
	}
	if lines := strings.Count(string(log), "confirmation email sent"); lines != n {
		return fmt.Errorf("resendq: %d log lines of sent outcomes for %d tasks (log: %s)", lines, n, logPath)
	}
	return nil
}

// waitDrained polls asynq's processed counter of queue every 2ms until
// it reaches n, and returns when it was first seen above zero, when it
// reached n, and its value when first seen. The drain rate is then
// (n - done0) / (last - first): the tasks completed after the first sign of
// life over the time they took, so that the first wave of a high-latency
// drain, which completes all at once, does not inflate it.
func (e *env) waitDrained(ctx context.Context, p *workerProc, queue string, n int, tl *timeline) (first, last time.Time, done0 int64, err error) {
	key := processedKey(queue)
	seen, progress := int64(0), time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return first, last, 0, ctx.Err()
		case <-p.exited:
			return first, last, 0, fmt.Errorf("the worker exited after %d of %d tasks", seen, n)
		case now := <-tick.C:
			got, err := e.rdb.Get(ctx, key).Int64()
			if err != nil && err != redis.Nil {
				return first, last, 0, err
			}
			if tl != nil {
				tl.add(now, got, e.api.active.Load())
			}
			if got > 0 && first.IsZero() {
				first, done0 = now, got
			}
			if got >= int64(n) {
				return first, now, done0, nil
			}
			if got != seen {
				seen, progress = got, now
			} else if now.Sub(progress) > 60*time.Second {
				return first, last, 0, fmt.Errorf("no progress for a minute after %d of %d tasks", seen, n)
			}
		}
	}
}

// processedKey is asynq's counter of the tasks of queue processed so far.
func processedKey(queue string) string { return "asynq:{" + queue + "}:processed" }

// workerProc is a running worker process.
type workerProc struct {
	cmd      *exec.Cmd
	exited   chan struct{}
	stopOnce sync.Once
	stopErr  error
}

func (e *env) startWorker(side string, concurrency int, logPath string, prof profiles) (*workerProc, error) {
	c := strconv.Itoa(concurrency)
	var cmd *exec.Cmd
	bin := e.ours
	if side == naive && e.vs != "" {
		side, bin = ours, e.vs
	}
	switch side {
	case ours:
		args := []string{"worker", "--redis-url", e.redis.url, "--api-base", e.api.base, "--concurrency", c}
		if prof.cpu != "" {
			args = append(args, "--cpuprofile", prof.cpu)
		}
		if prof.mem != "" {
			args = append(args, "--memprofile", prof.mem)
		}
		cmd = exec.Command(bin, args...)
	case naive:
		args := []string{"-redis-url", e.redis.url, "-api-base", e.api.base, "-concurrency", c}
		if prof.cpu != "" {
			args = append(args, "-cpuprofile", prof.cpu)
		}
		if prof.mem != "" {
			args = append(args, "-memprofile", prof.mem)
		}
		cmd = exec.Command(e.naive, args...)
	default:
		return nil, fmt.Errorf("unknown worker %q", side)
	}
	return startProcess(cmd, logPath)
}

// startProcess starts a worker's command with its output going to logPath.
// The worker runs with its defaults, as a user would start it: no
// RESENDQ_* variable of the caller's environment leaks in.
func startProcess(cmd *exec.Cmd, logPath string) (*workerProc, error) {
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RESENDQ_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &workerProc{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// stop sends SIGTERM and waits for the process to exit (SIGKILL after 30s).
func (p *workerProc) stop() error {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			if !p.cmd.ProcessState.Success() {
				p.stopErr = fmt.Errorf("exit status %v", p.cmd.ProcessState)
			}
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			p.stopErr = fmt.Errorf("killed after 30s")
		}
	})
	return p.stopErr
}

// usage reads the peak resident memory (KiB) and the CPU time (seconds) of
// the running process from /proc.
func (p *workerProc) usage() (hwmKB int64, cpu float64) {
	pid := strconv.Itoa(p.cmd.Process.Pid)
	if b, err := os.ReadFile("/proc/" + pid + "/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				hwmKB, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			}
		}
	}
	if b, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil {
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b)[i+1:])
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = float64(ut+st) / clockTicks
			}
		}
	}
	return hwmKB, cpu
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on Linux.
const clockTicks = 100

// fill enqueues n resend tasks on queue, the way the enqueue package builds
// them, from 32 goroutines on an autopipelined client.
func fill(ctx context.Context, addr, queue string, n int) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 32})
	defer rdb.Close()
	ap, err := rdb.AutoPipeline()
	if err != nil {
		return err
	}
	client := asynq.NewClientFromRedisClient(ap)
	now := time.Now().UTC()
	var wg sync.WaitGroup
	errc := make(chan error, 32)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				t, err := tasks.NewTask(tasks.Resend{
					ProjectID: benchProject, Username: fmt.Sprintf("user%d@example.com", i), EnqueuedAt: now,
				})
				if err == nil {
					_, err = client.EnqueueContext(ctx, t, asynq.Queue(queue), asynq.MaxRetry(tasks.MaxRetry))
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}
