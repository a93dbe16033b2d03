package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/resendq/resendq/loginapi"
	"github.com/resendq/resendq/metrics"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/worker"
)

// workerFlags configure a worker: `resendq worker` and the worker inside `resendq dev`.
type workerFlags struct {
	apiBase          string
	concurrency      int
	maxAttempts      int
	httpTimeout      time.Duration
	backoffInitial   time.Duration
	backoffMax       time.Duration
	rateLimitMaxWait time.Duration
	retention        time.Duration
	queueWeights     string
	apiRate          int
	apiRateProjects  []string
	apiRateMax       int
	apiRateAdaptive  bool
	pauseMax         time.Duration
	outageProbe      time.Duration
	outageMaxWait    time.Duration
	outageWindow     time.Duration
	outageThreshold  float64
	outageMinFails   int
}

func (w *workerFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&w.apiBase, "api-base", loginapi.DefaultBaseURL, "base URL of the Login API")
	fs.IntVar(&w.concurrency, "concurrency", worker.DefaultConcurrency, "calls to the Login API in flight at once (a fifth more tasks wait ready)")
	fs.IntVar(&w.maxAttempts, "max-attempts", worker.DefaultMaxAttempts, fmt.Sprintf("calls ending in 5xx, 408, timeout or connection error before a task is dead-lettered as exhausted (1-%d); 429s do not count", tasks.MaxRetry))
	fs.DurationVar(&w.httpTimeout, "http-timeout", loginapi.DefaultTimeout, "timeout of one call to the Login API")
	fs.DurationVar(&w.backoffInitial, "backoff-initial", time.Second, "first retry delay; doubled on each retry, with jitter")
	fs.DurationVar(&w.backoffMax, "backoff-max", 5*time.Minute, "longest retry delay")
	fs.DurationVar(&w.rateLimitMaxWait, "rate-limit-max-wait", worker.DefaultRateLimitMaxWait, "a task whose own 429s ask for more waits than this in total is dead-lettered as rate_limited; time held back by its project's pause, rate or outage (the fleet's to wait out) does not count")
	fs.DurationVar(&w.retention, "outcome-retention", outcome.DefaultRetention, "how long outcome records are kept")
	fs.StringVar(&w.queueWeights, "queue-weights", worker.FormatQueues(worker.DefaultQueues()), "queues served and their weights")
	fs.DurationVar(&w.pauseMax, "rate-limit-pause-max", worker.DefaultPauseMax, "longest pause of a project's calls on every worker after a 429 (its Retry-After or backoff, capped at this; 0: a 429 delays only its own task)")
	fs.IntVar(&w.apiRate, "api-rate", 0, "a fixed rate for every project: most calls per second to the Login API for one project, across every worker on this Redis (0: none; each project's rate adapts)")
	fs.StringArrayVar(&w.apiRateProjects, "api-rate-project", nil, "a fixed rate for one project, as PROJECT_ID=N calls per second (repeatable); the others adapt")
	fs.IntVar(&w.apiRateMax, "api-rate-max", 0, "most calls per second an adaptive rate may grow to (0: no cap)")
	fs.BoolVar(&w.apiRateAdaptive, "api-rate-adaptive", true, "learn each project's rate from its 429s (AIMD) unless it has a fixed one; false: no rate but the fixed ones")
	fs.DurationVar(&w.outageProbe, "outage-probe", ratelimit.DefaultProbeInterval, "while a project's calls fail (its circuit open), one probe call every this long, fleet-wide; the other resends wait without spending an attempt (0: no circuit)")
	fs.DurationVar(&w.outageMaxWait, "outage-max-wait", worker.DefaultOutageMaxWait, "a resend held back by outages longer than this in total is dead-lettered as outage")
	fs.DurationVar(&w.outageWindow, "outage-window", ratelimit.DefaultOutageWindow, "how far back the fleet's calls count when the circuit decides")
	fs.Float64Var(&w.outageThreshold, "outage-threshold", ratelimit.DefaultOutageThreshold, "share of transient failures (5xx, 408, timeouts, connection errors) among the window's calls that opens a project's circuit")
	fs.IntVar(&w.outageMinFails, "outage-min-failures", ratelimit.DefaultOutageMinFailures, "transient failures the window must hold before a project's circuit may open")
}

func (w *workerFlags) validate() error {
	switch {
	case w.concurrency < 1:
		return fmt.Errorf("--concurrency %d: must be at least 1", w.concurrency)
	case w.maxAttempts < 1 || w.maxAttempts > tasks.MaxRetry:
		return fmt.Errorf("--max-attempts %d: must be between 1 and %d", w.maxAttempts, tasks.MaxRetry)
	case w.httpTimeout <= 0:
		return fmt.Errorf("--http-timeout %s: must be positive", w.httpTimeout)
	case w.backoffInitial <= 0 || w.backoffMax < w.backoffInitial:
		return fmt.Errorf("--backoff-initial %s / --backoff-max %s: both positive, max at least initial", w.backoffInitial, w.backoffMax)
	case w.rateLimitMaxWait <= 0:
		return fmt.Errorf("--rate-limit-max-wait %s: must be positive", w.rateLimitMaxWait)
	case w.pauseMax < 0:
		return fmt.Errorf("--rate-limit-pause-max %s: must not be negative (0 turns the pauses off)", w.pauseMax)
	case w.apiRate < 0:
		return fmt.Errorf("--api-rate %d: must be 0 (none) or more", w.apiRate)
	case w.apiRateMax < 0:
		return fmt.Errorf("--api-rate-max %d: must be 0 (no cap) or more", w.apiRateMax)
	case w.outageProbe < 0:
		return fmt.Errorf("--outage-probe %s: must not be negative (0 turns the circuit off)", w.outageProbe)
	case w.outageMaxWait <= 0:
		return fmt.Errorf("--outage-max-wait %s: must be positive", w.outageMaxWait)
	case w.outageWindow < time.Second:
		return fmt.Errorf("--outage-window %s: must be at least 1s", w.outageWindow)
	case w.outageThreshold <= 0 || w.outageThreshold > 1:
		return fmt.Errorf("--outage-threshold %g: must be above 0 and at most 1", w.outageThreshold)
	case w.outageMinFails < 1:
		return fmt.Errorf("--outage-min-failures %d: must be at least 1", w.outageMinFails)
	case w.retention < time.Hour:
		return fmt.Errorf("--outcome-retention %s: must be at least 1h", w.retention)
	}
	if _, err := worker.ParseProjectRates(w.apiRateProjects); err != nil {
		return fmt.Errorf("--api-rate-project: %w", err)
	}
	_, err := worker.ParseQueues(w.queueWeights)
	return err
}

// workerProc is an assembled worker process and its metrics.
type workerProc struct {
	*worker.Worker
	rdb     redis.UniversalClient
	metrics *procMetrics
}

// build assembles a worker on rdb.
func (w *workerFlags) build(a *app, rdb redis.UniversalClient) (*workerProc, error) {
	queues, err := worker.ParseQueues(w.queueWeights)
	if err != nil {
		return nil, usageErr(err)
	}
	rates, err := worker.ParseProjectRates(w.apiRateProjects)
	if err != nil {
		return nil, usageErr(fmt.Errorf("--api-rate-project: %w", err))
	}
	m, err := newProcMetrics(a, rdb)
	if err != nil {
		return nil, err
	}
	wk, err := worker.New(rdb, worker.Options{
		APIBase: w.apiBase, UserAgent: "resendq/" + version, HTTPTimeout: w.httpTimeout,
		Concurrency: w.concurrency, Queues: queues,
		MaxAttempts: w.maxAttempts, Backoff: worker.Backoff{Initial: w.backoffInitial, Max: w.backoffMax},
		RateLimitMaxWait: w.rateLimitMaxWait, PauseMax: w.pauseMax,
		APIRate: w.apiRate, APIRateProjects: rates, APIRateMax: w.apiRateMax, NoAdaptiveRate: !w.apiRateAdaptive,
		OutageProbe: w.outageProbe, OutageMaxWait: w.outageMaxWait, OutageWindow: w.outageWindow,
		OutageThreshold: w.outageThreshold, OutageMinFailures: w.outageMinFails,
		Retention: w.retention, Observer: m.observer, Log: a.log,
	})
	if err != nil {
		if errors.Is(err, loginapi.ErrProxy) {
			return nil, usageErr(err)
		}
		return nil, usageErr(fmt.Errorf("--api-base: %w", err))
	}
	if err := m.registry.Register(metrics.NewFlowCollector(wk.Limiter.Local)); err != nil {
		return nil, err
	}
	return &workerProc{Worker: wk, rdb: rdb, metrics: m}, nil
}

func newWorkerCmd(a *app) *cobra.Command {
	var rf redisFlags
	var wf workerFlags
	var hf httpFlags
	var pf profileFlags
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Process resend tasks: call the Login API, retry, dead-letter and record outcomes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := wf.validate(); err != nil {
				return usageErr(err)
			}
			if err := hf.validate(); err != nil {
				return usageErr(err)
			}
			if hf.idempotency > wf.retention {
				// A repeat under a key whose first try never finished finds
				// that try's task by its outcome record.
				return usageErr(fmt.Errorf("--idempotency-window %s: must not outlast --outcome-retention %s", hf.idempotency, wf.retention))
			}
			stopProfiles, err := pf.start()
			if err != nil {
				return err
			}
			defer func() {
				if err := stopProfiles(); err != nil {
					a.log.WithError(err).Error("profile not written")
				}
			}()
			ctx := cmd.Context()
			rdb, err := rf.connect(ctx, wf.concurrency+worker.Prefetch(wf.concurrency)+16)
			if err != nil {
				return err
			}
			defer rdb.Close()
			proc, err := wf.build(a, rdb)
			if err != nil {
				return err
			}
			httpSrv, err := hf.serve(a, proc.surface(), false)
			if err != nil {
				return err
			}
			defer httpSrv.stop()
			a.log.WithField("concurrency", wf.concurrency).WithField("queues", wf.queueWeights).
				WithField("api_base", redactURL(wf.apiBase)).Info("worker started")
			err = proc.Run(ctx)
			a.log.Info("worker stopped")
			return err
		},
	}
	rf.register(cmd.Flags())
	wf.register(cmd.Flags())
	hf.register(cmd.Flags(), "")
	pf.register(cmd.Flags())
	return cmd
}
