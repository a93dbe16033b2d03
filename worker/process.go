package worker

import (
	"context"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/resendq/resendq/loginapi"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
)

// DefaultPauseMax is the default Options.PauseMax.
const DefaultPauseMax = ratelimit.DefaultMaxCoolDown

// shutdownMargin is what a call's shutdown allows beyond its HTTP timeout:
// one try to write its outcome record (outcomeWriteTry) and some slack.
const shutdownMargin = outcomeWriteTry + 5*time.Second

// Options configure a worker process (New): its Login API client, its
// handler, the fleet's flow control, the outcome records and the asynq
// servers. Zero values are the documented defaults, except where a field
// says that 0 turns something off, as its command-line flag does.
type Options struct {
	// API is the Login API. Default: a loginapi.Client for APIBase, with
	// HTTPTimeout per call (tests pass a double).
	API API
	// APIBase is the base URL of the Login API. Default
	// loginapi.DefaultBaseURL.
	APIBase string
	// UserAgent is the User-Agent of the calls, e.g. "resendq/1.2.0".
	// Default "resendq/dev".
	UserAgent string
	// HTTPTimeout bounds one call to the API. Default loginapi.DefaultTimeout (10s).
	HTTPTimeout time.Duration

	// Concurrency is the most calls in flight at once. Default
	// DefaultConcurrency (20).
	Concurrency int
	// Queues maps the queues served to their weights. Default DefaultQueues().
	Queues map[string]int
	// MaxAttempts, Backoff and RateLimitMaxWait: see Handler.
	MaxAttempts      int
	Backoff          Backoff
	RateLimitMaxWait time.Duration
	// PauseMax caps the pause of a project's calls on every worker after a
	// 429 (its Retry-After, or the task's backoff). 0: no pauses, a 429
	// delays only its own task. DefaultPauseMax is 5m.
	PauseMax time.Duration
	// APIRate is a fixed rate for every project: the most calls per second
	// for one project across every worker on the Redis. 0: none, and each
	// project's rate adapts (AIMD) unless NoAdaptiveRate.
	APIRate int
	// APIRateProjects are fixed rates of some projects; the others adapt.
	APIRateProjects map[string]int
	// APIRateMax caps an adaptive rate, in calls per second. 0: no cap.
	APIRateMax int
	// NoAdaptiveRate turns the adaptive rates off: a project without a
	// fixed rate has none (only the pauses after a 429).
	NoAdaptiveRate bool
	// OutageProbe is how often a project's open circuit lets one call
	// through, fleet-wide. 0: no circuit (a failure during an outage counts
	// against its task). ratelimit.DefaultProbeInterval is 2s.
	OutageProbe time.Duration
	// OutageMaxWait caps the time a task may be held back by outages of its
	// project, in total. Default DefaultOutageMaxWait (24h).
	OutageMaxWait time.Duration
	// OutageWindow, OutageThreshold and OutageMinFailures decide when a
	// project's circuit opens: when the transient failures of the fleet's
	// calls in the last OutageWindow are at least OutageMinFailures and at
	// least OutageThreshold of the calls. Defaults: see ratelimit.Options.
	OutageWindow      time.Duration
	OutageThreshold   float64
	OutageMinFailures int
	// Retention is how long outcome records are kept. Default
	// outcome.DefaultRetention (30 days).
	Retention time.Duration
	// ShutdownTimeout is how long calls in flight may finish on shutdown
	// before their tasks go back to the queue. Default HTTPTimeout + 10s: a
	// call may take the HTTP timeout and the write of its outcome 5s more,
	// so that calls finish rather than repeat.
	ShutdownTimeout time.Duration

	// Observer is told of calls, retries and outcomes (metrics). Default: none.
	Observer Observer
	// Log receives the worker's log lines and asynq's. Default
	// logrus.StandardLogger().
	Log *logrus.Logger
	// Clock is the worker's clock. Default: the real one.
	Clock clockwork.Clock
}

// Worker is an assembled worker process: asynq servers running a Handler,
// the fleet's flow control, and the outcome records, all on the worker's
// hot-path Redis client (see streamed).
type Worker struct {
	// Outcomes is the worker's outcome store, for the HTTP surface.
	Outcomes *outcome.Store
	// Limiter is the worker's flow control, for its metrics.
	Limiter *ratelimit.Limiter
	server  *Server
	log     *logrus.Logger
}

// New assembles a worker on rdb, which it shares and does not close. Only
// an APIBase that is not a URL fails it.
func New(rdb redis.UniversalClient, opts Options) (*Worker, error) {
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	httpTimeout := orDur(opts.HTTPTimeout, loginapi.DefaultTimeout)
	api := opts.API
	if api == nil {
		c, err := loginapi.New(loginapi.Options{
			BaseURL: opts.APIBase, UserAgent: opts.UserAgent, Timeout: httpTimeout, Clock: opts.Clock,
		})
		if err != nil {
			return nil, err
		}
		api = c
	}
	hot := streamed(rdb)
	store := outcome.NewStore(hot, outcome.Options{Retention: opts.Retention, Clock: opts.Clock})
	pauseMax, probe := opts.PauseMax, opts.OutageProbe
	if pauseMax == 0 {
		pauseMax = -1 // ratelimit's zero is its default
	}
	if probe == 0 {
		probe = -1
	}
	trouble := rate.Sometimes{Interval: 10 * time.Second}
	limiter := ratelimit.New(hot, ratelimit.Options{
		Rate: opts.APIRate, ProjectRates: opts.APIRateProjects, MaxRate: opts.APIRateMax, NoAdaptive: opts.NoAdaptiveRate,
		MaxCoolDown:   pauseMax,
		ProbeInterval: probe, OutageWindow: opts.OutageWindow,
		OutageThreshold: opts.OutageThreshold, OutageMinFailures: opts.OutageMinFailures,
		Clock: opts.Clock,
		OnError: func(err error) {
			trouble.Do(func() { opts.Log.WithError(err).Warn("flow control: Redis failed; calls go ahead") })
		},
		OnEvent: flowLog(opts.Log, opts.Observer),
	})
	h := &Handler{
		API: api, Outcomes: store, Log: opts.Log, Observer: opts.Observer, Limiter: limiter, Clock: opts.Clock,
		Backoff: opts.Backoff, MaxAttempts: opts.MaxAttempts, RateLimitMaxWait: opts.RateLimitMaxWait,
		OutageMaxWait: opts.OutageMaxWait,
	}
	srv := NewServer(hot, h, Config{
		Concurrency:     opts.Concurrency,
		Queues:          opts.Queues,
		ShutdownTimeout: orDur(opts.ShutdownTimeout, httpTimeout+shutdownMargin),
		Logger:          opts.Log,
	})
	return &Worker{Outcomes: store, Limiter: limiter, server: srv, log: opts.Log}, nil
}

// flowLog logs the changes of flow control this worker makes, once each
// fleet-wide, and tells the observer.
func flowLog(log *logrus.Logger, obs Observer) func(ratelimit.Event) {
	return func(e ratelimit.Event) {
		if obs != nil {
			obs.Flow(e)
		}
		f := logrus.Fields{"project_id": e.Project}
		switch e.Kind {
		case ratelimit.CircuitOpened:
			f["failures"], f["calls"] = e.Failures, e.Calls
			log.WithFields(f).Warn("Login API outage: calls for the project held back on every worker, one probe at a time")
		case ratelimit.CircuitClosed:
			f["open_for"] = e.Open.Round(time.Millisecond).String()
			log.WithFields(f).Warn("Login API outage over: a probe succeeded; held resends go out again")
		case ratelimit.RateChanged:
			f["rate"], f["was"] = round2(e.Rate), round2(e.Was)
			log.WithFields(f).Info("Login API rate for the project adapted across the fleet (calls per second)")
		}
	}
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// Run processes tasks until ctx is done, then shuts down gracefully. On the
// side it hears of other workers' rate-limit pauses and trims outcome
// records past their retention, every hour.
func (w *Worker) Run(ctx context.Context) error {
	// Before any task: a worker started during a rate-limit pause keeps it.
	if err := w.Limiter.Start(ctx); err != nil {
		return err
	}
	go w.Outcomes.RunRetention(ctx, time.Hour, func(removed int, err error) {
		switch {
		case err != nil:
			w.log.WithError(err).Warn("outcome retention: trim failed")
		case removed > 0:
			w.log.WithField("removed", removed).Info("outcome retention: removed records past their retention")
		}
	})
	return w.server.Run(ctx)
}

// streamed returns the client the worker's hot path runs on (asynq's
// servers, the outcome store and the rate limiter): go-redis' autopipeliner
// over rdb in full-duplex mode, which streams the commands of every task in
// flight (asynq's dequeue and done scripts, the outcome writes) over one
// connection, so that the worker and Redis each read and write many
// commands per system call instead of one. Each command still waits for its
// own reply, in order. It stops when rdb is closed. On a Redis Cluster it
// streams over one connection per master, each command to the master of its
// slot, and the client it returns unwraps to rdb (rkey.IsCluster). A client
// it cannot stream on is used as it is. See docs/BENCHMARKS.md.
func streamed(rdb redis.UniversalClient) redis.UniversalClient {
	opt := redis.DefaultBlockingAutoPipelineOptions()
	opt.FullDuplex = true
	var ap *redis.AutoPipeliner
	var err error
	switch c := rdb.(type) {
	case *redis.Client:
		ap, err = c.AutoPipelineWithOptions(opt)
	case *redis.ClusterClient:
		ap, err = c.AutoPipelineWithOptions(opt)
	default:
		return rdb
	}
	if err != nil {
		return rdb
	}
	if !ap.Config().FullDuplex {
		// Without a pipeline pool the autopipeliner batches by rounds
		// instead, which holds asynq's one-at-a-time dequeue back.
		_ = ap.Close()
		return rdb
	}
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return clusterStream{ap, rdb}
	}
	return ap
}

// clusterStream is the autopipeliner of a cluster client, which tells what
// it streams over.
type clusterStream struct {
	*redis.AutoPipeliner
	cluster redis.UniversalClient
}

// Unwrap returns the cluster client.
func (s clusterStream) Unwrap() redis.UniversalClient { return s.cluster }
