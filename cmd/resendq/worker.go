package main

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/time/rate"

	"github.com/resendq/resendq/loginapi"
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
	pauseMax         time.Duration
}

func (w *workerFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&w.apiBase, "api-base", loginapi.DefaultBaseURL, "base URL of the Login API")
	fs.IntVar(&w.concurrency, "concurrency", worker.DefaultConcurrency, "calls to the Login API in flight at once (a tenth more tasks wait ready)")
	fs.IntVar(&w.maxAttempts, "max-attempts", worker.DefaultMaxAttempts, fmt.Sprintf("calls ending in 5xx, 408, timeout or connection error before a task is dead-lettered as exhausted (1-%d); 429s do not count", tasks.MaxRetry))
	fs.DurationVar(&w.httpTimeout, "http-timeout", loginapi.DefaultTimeout, "timeout of one call to the Login API")
	fs.DurationVar(&w.backoffInitial, "backoff-initial", time.Second, "first retry delay; doubled on each retry, with jitter")
	fs.DurationVar(&w.backoffMax, "backoff-max", 5*time.Minute, "longest retry delay")
	fs.DurationVar(&w.rateLimitMaxWait, "rate-limit-max-wait", worker.DefaultRateLimitMaxWait, "total time a task may wait on 429s before it is dead-lettered as rate_limited")
	fs.DurationVar(&w.retention, "outcome-retention", outcome.DefaultRetention, "how long outcome records are kept")
	fs.StringVar(&w.queueWeights, "queue-weights", worker.FormatQueues(worker.DefaultQueues()), "queues served and their weights")
	fs.DurationVar(&w.pauseMax, "rate-limit-pause-max", ratelimit.DefaultMaxCoolDown, "longest pause of a project's calls on every worker after a 429 (its Retry-After or backoff, capped at this; 0: a 429 delays only its own task)")
	fs.IntVar(&w.apiRate, "api-rate", 0, "most calls per second to the Login API for one project, across every worker on this Redis (0: no limit)")
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
		return fmt.Errorf("--api-rate %d: must be 0 (no limit) or more", w.apiRate)
	case w.retention < time.Hour:
		return fmt.Errorf("--outcome-retention %s: must be at least 1h", w.retention)
	}
	_, err := worker.ParseQueues(w.queueWeights)
	return err
}

// workerProc is an assembled worker process.
type workerProc struct {
	server  *worker.Server
	store   *outcome.Store
	limiter *ratelimit.Limiter
	rdb     redis.UniversalClient
	metrics *procMetrics
}

// build assembles a worker on rdb.
func (w *workerFlags) build(a *app, rdb redis.UniversalClient) (*workerProc, error) {
	queues, err := worker.ParseQueues(w.queueWeights)
	if err != nil {
		return nil, usageErr(err)
	}
	api, err := loginapi.New(loginapi.Options{
		BaseURL:    w.apiBase,
		UserAgent:  "resendq/" + version,
		HTTPClient: loginapi.NewHTTPClient(w.httpTimeout),
	})
	if err != nil {
		return nil, usageErr(fmt.Errorf("--api-base: %w", err))
	}
	hot := streamed(rdb)
	store := outcome.NewStore(hot, outcome.Options{Retention: w.retention})
	m, err := newProcMetrics(a, rdb)
	if err != nil {
		return nil, err
	}
	redisTrouble := rate.Sometimes{Interval: 10 * time.Second}
	pauseMax := w.pauseMax
	if pauseMax == 0 {
		pauseMax = -1 // the flag's 0 means off; the library's 0 means default
	}
	limiter := ratelimit.New(hot, ratelimit.Options{
		Rate:        w.apiRate,
		MaxCoolDown: pauseMax,
		OnError: func(err error) {
			redisTrouble.Do(func() { a.log.WithError(err).Warn("rate limiting: Redis failed; calls go ahead") })
		},
	})
	h := &worker.Handler{
		API:              api,
		Outcomes:         store,
		Log:              a.log,
		Backoff:          worker.Backoff{Initial: w.backoffInitial, Max: w.backoffMax},
		MaxAttempts:      w.maxAttempts,
		RateLimitMaxWait: w.rateLimitMaxWait,
		Observer:         m.observer,
		Limiter:          limiter,
	}
	srv := worker.NewServer(hot, h, worker.Config{
		Concurrency: w.concurrency,
		Queues:      queues,
		// A call may take the HTTP timeout, its outcome write up to 5s more.
		ShutdownTimeout: w.httpTimeout + 10*time.Second,
		Logger:          a.log,
	})
	return &workerProc{server: srv, store: store, limiter: limiter, rdb: rdb, metrics: m}, nil
}

// streamed returns the client the worker's hot path runs on (asynq's
// server and the outcome store): go-redis' autopipeliner over rdb in
// full-duplex mode, which streams the commands of every task in flight
// (asynq's dequeue and done scripts, the outcome writes) over one
// connection, so that the worker and Redis each read and write many
// commands per system call instead of one. Each command still waits for its
// own reply, in order. It stops when rdb is closed. A client it cannot
// stream on (Redis Cluster) is used as it is. See docs/BENCHMARKS.md.
func streamed(rdb redis.UniversalClient) redis.UniversalClient {
	c, ok := rdb.(*redis.Client)
	if !ok {
		return rdb
	}
	opt := redis.DefaultBlockingAutoPipelineOptions()
	opt.FullDuplex = true
	ap, err := c.AutoPipelineWithOptions(opt)
	if err != nil {
		return rdb
	}
	if !ap.Config().FullDuplex {
		// Without a pipeline pool the autopipeliner batches by rounds
		// instead, which holds asynq's one-at-a-time dequeue back.
		_ = ap.Close()
		return rdb
	}
	return ap
}

// run processes tasks until ctx is done, trimming outcome records past
// their retention and hearing of other workers' rate-limit pauses on the
// side.
func (p *workerProc) run(ctx context.Context, a *app) error {
	// Before any task: a worker started during a rate-limit pause keeps it.
	if err := p.limiter.Start(ctx); err != nil {
		return err
	}
	go p.store.RunRetention(ctx, time.Hour, func(removed int, err error) {
		switch {
		case err != nil:
			a.log.WithError(err).Warn("outcome retention: trim failed")
		case removed > 0:
			a.log.WithField("removed", removed).Info("outcome retention: removed records past their retention")
		}
	})
	return p.server.Run(ctx)
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
			httpSrv, err := hf.serve(a, proc, false)
			if err != nil {
				return err
			}
			defer httpSrv.stop()
			a.log.WithField("concurrency", wf.concurrency).WithField("queues", wf.queueWeights).
				WithField("api_base", redactURL(wf.apiBase)).Info("worker started")
			err = proc.run(ctx, a)
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
