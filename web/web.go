// Package web is the HTTP surface of a worker process: the asynq web UI
// (asynqmon) under /monitoring/, Prometheus metrics, health and readiness
// probes, and a JSON API: enqueue resends and look them up, read the
// outcome records and the fleet's flow control.
//
//	/healthz                   liveness: 200 while the process runs
//	/readyz                    readiness: 200 when Redis answers PING (every master of a cluster), else 503 and why
//	/monitoring/               asynqmon, read-only unless Options.UIWrite
//	/metrics                   Prometheus text format (Options.Metrics)
//	GET /api/v1/outcomes       outcome records, newest first, with filters and a cursor
//	GET /api/v1/outcomes/stats outcome counts by status, reason and error code
//	GET /api/v1/outcomes/{id}  one task's outcome record and attempt history
//	GET /api/v1/flow           the fleet's flow control per Login project: open circuits, pauses, learned rates
//	GET /api/v1/dead-letters   dead letters, newest first, with the outcomes' filters (state=open|replayed)
//	GET /api/v1/dead-letters/stats          dead letters open and replayed, by code, reason and project
//	POST /api/v1/dead-letters/replay|purge  replay or purge the dead letters a JSON selector names (write access: UIWrite)
//	POST /api/v1/resends       enqueue one resend (Idempotency-Key honoured)
//	POST /api/v1/resends:batch enqueue up to 1000 resends together
//	GET /api/v1/resends/{id}   where a resend stands: pending, scheduled, active, retrying, sent, dead_letter
//	/support/                  the support page: a user's resends; dead letters by code (replay, purge with UIWrite)
//	/                          redirects to /monitoring/
//
// api/openapi.yaml describes the API. Every API error is JSON:
// {"error":{"code":"...","message":"...","field":"..."}}.
//
// The UI and the API show users' email addresses. With Options.Token set,
// every path but /healthz and /readyz requires "Authorization: Bearer
// <token>" or HTTP Basic with the token as the password (any user name), so
// that a browser can open the UI; anything else gets 401 and nothing more.
// Options.ProducerToken, when set, reaches only the three resend
// endpoints (403 elsewhere).
// Requests that change state and come from another origin are refused
// (http.CrossOriginProtection), so a page elsewhere cannot drive the UI
// through a browser's cached credentials.
package web

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynqmon"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/outcome"
)

// UIPath is where the asynq web UI is mounted.
const UIPath = "/monitoring/"

// DefaultReadyTimeout bounds the Redis PING of /readyz when
// Options.ReadyTimeout is zero.
const DefaultReadyTimeout = 2 * time.Second

// Outcomes is the outcome store as the JSON API reads it; *outcome.Store is one.
type Outcomes interface {
	List(ctx context.Context, f outcome.Filter) (outcome.Page, error)
	Stats(ctx context.Context) (outcome.Stats, error)
	DeadLetters(ctx context.Context) (outcome.DeadLetterStats, error)
	// Timeline returns a task's record and attempt history, and false
	// when it has neither.
	Timeline(ctx context.Context, taskID string) (outcome.Timeline, bool, error)
}

// Options configure New. Redis and Outcomes are required; zero values of the
// others are their documented defaults.
type Options struct {
	// Redis holds the asynq queues; the UI and /readyz use it. It is shared,
	// never closed by the handler. A single Redis or a Redis Cluster
	// (*redis.ClusterClient). Required.
	Redis redis.UniversalClient
	// Outcomes serves /api/v1/outcomes. Required.
	Outcomes Outcomes
	// Metrics is served on /metrics. Default: none, and /metrics answers 404.
	Metrics prometheus.Gatherer
	// Enqueuer serves the resend endpoints. Default: an Enqueuer on Redis
	// with the default options.
	Enqueuer *enqueue.Enqueuer
	// Token, when set, is required on every path but /healthz and /readyz.
	// Default: none, no authentication (for loopback listeners only; the
	// command refuses to listen elsewhere without one).
	Token string
	// ProducerToken, when set, may only enqueue resends and look them up
	// (POST /api/v1/resends, POST /api/v1/resends:batch, GET
	// /api/v1/resends/{task_id}). It needs Token: without one, every path
	// is open anyway.
	ProducerToken string
	// UIWrite lets the UI delete, run, archive and cancel tasks and pause
	// queues, and the API replay and purge dead letters. Default false: the
	// UI is read-only and its API refuses anything but GET; the dead-letter
	// POSTs answer 403 but for a dry run.
	UIWrite bool
	// Log receives failures of the API, of /metrics and of /readyz.
	// Default: logrus.StandardLogger().
	Log logrus.FieldLogger
	// ReadyTimeout bounds the Redis PING of /readyz. Default 2s.
	ReadyTimeout time.Duration
	// Clock is the clock of the API's relative "since" and "until". Default:
	// the real clock.
	Clock clockwork.Clock
}

// New assembles the HTTP surface described in the package documentation.
func New(opts Options) (http.Handler, error) {
	if opts.Redis == nil {
		return nil, errors.New("web: Options.Redis is required")
	}
	if opts.Outcomes == nil {
		return nil, errors.New("web: Options.Outcomes is required")
	}
	if opts.ProducerToken != "" && opts.Token == "" {
		return nil, errors.New("web: Options.ProducerToken needs Options.Token: without it every path is open")
	}
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	if opts.Enqueuer == nil {
		opts.Enqueuer = enqueue.New(opts.Redis, enqueue.Options{})
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}

	private := http.NewServeMux()
	private.Handle(UIPath, asynqmon.New(asynqmon.Options{
		RootPath:         strings.TrimSuffix(UIPath, "/"),
		RedisConnOpt:     sharedRedis{opts.Redis},
		ReadOnly:         !opts.UIWrite,
		PayloadFormatter: asynqmon.PayloadFormatterFunc(formatBytes),
		ResultFormatter:  asynqmon.ResultFormatterFunc(formatBytes),
	}))
	if opts.Metrics != nil {
		private.Handle("GET /metrics", promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{
			ErrorLog:      promLogger{opts.Log},
			ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	api := &outcomesAPI{store: opts.Outcomes, log: opts.Log, clock: opts.Clock}
	private.HandleFunc("GET /api/v1/outcomes", api.list)
	private.HandleFunc("GET /api/v1/outcomes/stats", api.stats)
	dl := &deadLettersAPI{outcomesAPI: api, enq: opts.Enqueuer, write: opts.UIWrite}
	private.HandleFunc("GET /api/v1/dead-letters", dl.list)
	private.HandleFunc("GET /api/v1/dead-letters/stats", dl.stats)
	private.HandleFunc("POST /api/v1/dead-letters/replay", dl.replay)
	private.HandleFunc("POST /api/v1/dead-letters/purge", dl.purge)
	support := &supportPage{dl}
	private.HandleFunc("GET "+SupportPath+"{$}", support.user)
	private.HandleFunc("POST "+SupportPath+"replay", support.replayOne)
	private.HandleFunc("GET "+SupportPath+"dead-letters", support.deadLetters)
	private.HandleFunc("POST "+SupportPath+"dead-letters/{action}", support.codeAction)
	private.HandleFunc("GET "+SupportPath+"batches", support.batch)
	private.HandleFunc("POST "+SupportPath+"batches/cancel", support.cancelBatch)
	private.HandleFunc("GET /api/v1/outcomes/{task_id}", api.show)
	private.Handle("GET /api/v1/flow", flowAPI{rdb: opts.Redis, log: opts.Log})
	resends := &resendsAPI{enq: opts.Enqueuer, group: opts.Enqueuer.NewGrouper(), log: opts.Log}
	private.HandleFunc("POST /api/v1/resends", resends.create)
	private.HandleFunc("POST /api/v1/resends:batch", resends.batch)
	private.HandleFunc("GET /api/v1/resends/{task_id}", resends.get)
	private.HandleFunc("/api/", apiNotFound)
	private.Handle("GET /{$}", http.RedirectHandler(UIPath, http.StatusFound))

	public := http.NewServeMux()
	public.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	public.Handle("GET /readyz", ready{rdb: opts.Redis, timeout: opts.ReadyTimeout, log: opts.Log})
	public.Handle("/", noStore(requireToken(opts.Token, opts.ProducerToken, private)))
	return http.NewCrossOriginProtection().Handler(public), nil
}

// apiNotFound answers, in JSON, requests to the API that match no endpoint.
func apiNotFound(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	allow := ""
	switch {
	case p == "/api/v1/outcomes" || p == "/api/v1/flow" || resendPath(p) || outcomePath(p):
		allow = "GET, HEAD"
	case p == "/api/v1/resends" || p == "/api/v1/resends:batch":
		allow = "POST"
	}
	if allow != "" {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, codeMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, p, allow))
		return
	}
	writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("no API endpoint %s %s; see api/openapi.yaml", r.Method, p))
}

// sharedRedis hands asynqmon the worker's Redis client instead of a new
// connection pool. asynqmon closes its client only in HTTPHandler.Close,
// which is never called. A *redis.ClusterClient gets asynqmon's cluster
// view of Redis (its nodes, and the slot and node of each queue).
type sharedRedis struct{ rdb redis.UniversalClient }

// MakeRedisClient returns the shared client.
func (s sharedRedis) MakeRedisClient() interface{} { return s.rdb }

// ready answers /readyz: 200 when Redis answers PING in time, else 503
// with the reason.
type ready struct {
	rdb     redis.UniversalClient
	timeout time.Duration
	log     logrus.FieldLogger
}

func (h ready) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	if err := ping(ctx, h.rdb); err != nil {
		h.log.WithError(err).Warn("readyz: redis does not answer")
		writeText(w, http.StatusServiceUnavailable, "not ready: redis: "+reason(err))
		return
	}
	writeText(w, http.StatusOK, "ok")
}

// ping checks that Redis answers: every master of a Redis Cluster (a
// worker serves queues on each, and a PING of the cluster client reaches
// only one node, at random), else the one Redis.
func ping(ctx context.Context, rdb redis.UniversalClient) error {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return rdb.Ping(ctx).Err()
	}
	return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		return node.Ping(ctx).Err()
	})
}

// reason says why Redis did not answer without naming its address: the
// probe is open to anyone who reaches the port.
func reason(err error) string {
	var op *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer in time"
	case errors.As(err, &op) && op.Err != nil:
		return op.Op + ": " + op.Err.Error()
	default:
		return err.Error()
	}
}

// noStore keeps browsers and proxies from storing API answers, which show
// users' email addresses.
func noStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/api/") || r.URL.Path == "/metrics" {
			w.Header().Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

// promLogger passes promhttp's errors (a collector failing) to the log.
type promLogger struct{ log logrus.FieldLogger }

func (l promLogger) Println(v ...interface{}) {
	l.log.Warn("metrics: " + strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}
