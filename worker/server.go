package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// Defaults of Config.
const (
	DefaultConcurrency     = 20
	DefaultPollInterval    = 100 * time.Millisecond
	DefaultForwardInterval = 500 * time.Millisecond
	DefaultShutdownTimeout = 15 * time.Second
)

// DefaultQueues serves signups eight times as often as bulk resends.
func DefaultQueues() map[string]int { return map[string]int{tasks.QueueSignup: 8, tasks.QueueBulk: 1} }

// Config is the asynq side of a worker process. Zero values are defaults.
type Config struct {
	// Concurrency is the most calls to the Login API in flight at once.
	// Default 20. The worker holds Prefetch(Concurrency) tasks more, ready
	// to go.
	Concurrency int
	// Queues maps queue names to their weights. Default DefaultQueues().
	Queues map[string]int
	// PollInterval is how long an idle worker waits before looking for new
	// tasks again (asynq's TaskCheckInterval). Default 100ms, so a new
	// signup is picked up at once; asynq's own default is 1s.
	PollInterval time.Duration
	// ForwardInterval is how often due retries and scheduled tasks are moved
	// to their queue (asynq's DelayedTaskCheckInterval of the first asynq
	// server; the others do it every minute). Default 500ms: a retry's due
	// time is rounded up to a whole second (RetryDelayFunc), so a retry due
	// in 1s runs within 2.5s; asynq's own default is 5s.
	ForwardInterval time.Duration
	// ShutdownTimeout is how long in-flight calls may finish on shutdown
	// before their tasks are handed back to the queue. Default 15s: longer
	// than the default HTTP timeout, so calls finish rather than repeat.
	ShutdownTimeout time.Duration
	// Logger receives asynq's own messages (warnings and up). Default logrus.StandardLogger().
	Logger *logrus.Logger
	// Processors is how many asynq servers share the Concurrency slots.
	// Default ProcessorsFor(Concurrency).
	Processors int
	// SweepInterval is how often the fleet looks for tasks asynq archived
	// without telling the worker (see Server.sweep) and records their
	// outcome. Default 15s; negative: never.
	SweepInterval time.Duration
	// KeyPrefix prefixes the worker's own Redis key (the sweep's lock,
	// KeyPrefix+"sweep-lock:{"+queue+"}", one key per command: on a Redis
	// Cluster it lies in its queue's slot). Default "resendq:".
	KeyPrefix string
}

// Server is a worker process: asynq servers running Handler on the resend
// task type.
//
// An asynq slot holds its task from the round trip that takes it from Redis
// to the one that marks it done, and one asynq server takes one task at a
// time; at 400 slots of 100 ms calls that is 4,000 round trips a second in a
// row. So a Server keeps its calls busy three ways (docs/BENCHMARKS.md):
//   - Its slots are shared among a few asynq servers (ProcessorsFor), each
//     taking tasks for its own share. Each polls an empty queue that many
//     times less often, and only the first forwards due retries at the
//     ForwardInterval, so an idle worker costs Redis what one server would,
//     and a new task is still picked up as soon. asynqmon lists each as a
//     server of the same host and PID.
//   - It has Prefetch(Concurrency) slots more than calls: the tasks in them
//     wait for a call to end rather than a call for a task.
//   - A task whose email went out gives its slot up before its outcome
//     record is written; asynq's ack of it waits for the record (ackGate),
//     for at most HeldAcks(Concurrency) tasks at once.
type Server struct {
	srvs    []*asynq.Server
	dequeue *dequeuer // what the asynq servers take tasks on
	mux     *asynq.ServeMux
	h       *Handler
	once    sync.Once // closes h.stop

	cfg           Config
	rdb           redis.UniversalClient
	ins           *asynq.Inspector
	sweepInterval time.Duration
	sweepLock     string
	sweepStop     chan struct{} // closed by Shutdown: stops the sweep and the held tasks' check
	sweepDone     chan struct{}
	holdDone      chan struct{}
}

// NewServer assembles a worker on rdb, which it shares and does not close.
// h is the Server's own: NewServer sets how many calls it makes at once, and
// it must not be processing tasks yet.
func NewServer(rdb redis.UniversalClient, h *Handler, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	level := asynq.WarnLevel
	if cfg.Logger.IsLevelEnabled(logrus.DebugLevel) {
		level = asynq.InfoLevel
	}
	calls := orInt(cfg.Concurrency, DefaultConcurrency)
	h.calls = make(chan struct{}, calls)
	h.stop = make(chan struct{})
	s := &Server{
		mux: asynq.NewServeMux(), h: h, cfg: cfg, rdb: rdb, ins: asynq.NewInspectorFromRedisClient(rdb),
		sweepInterval: orDur(cfg.SweepInterval, DefaultSweepInterval),
		sweepLock:     cmp.Or(cfg.KeyPrefix, "resendq:") + "sweep-lock",
		sweepStop:     make(chan struct{}), sweepDone: make(chan struct{}), holdDone: make(chan struct{}),
	}
	s.mux.Handle(tasks.TypeResend, h)
	poll := orDur(cfg.PollInterval, DefaultPollInterval)
	s.dequeue = newDequeuer(rdb, min(emptyQueueRecheck, poll), poll/2, dequeueBatch)
	if _, ok := h.Outcomes.(GroupOutcomes); ok {
		h.acks = newAckGate(rdb, HeldAcks(calls), func(err error) {
			cfg.Logger.WithError(err).Warn("a task's ack failed after its outcome was written; asynq runs it again once its lease expires, and that run finds the email sent")
		})
		s.dequeue.acks = h.acks
	}
	for _, c := range asynqConfigs(h, cfg, calls, level) {
		s.srvs = append(s.srvs, asynq.NewServerFromRedisClient(s.dequeue, c))
	}
	return s
}

// idleForwardInterval is how often the asynq servers of a Server other than
// the first move due retries: the first does it every ForwardInterval, and
// one is enough.
const idleForwardInterval = time.Minute

// asynqConfigs are the configurations of a Server's asynq servers: calls
// plus Prefetch(calls) slots shared among them, one forwarding due retries
// every ForwardInterval.
func asynqConfigs(h *Handler, cfg Config, calls int, level asynq.LogLevel) []asynq.Config {
	slots := calls + Prefetch(calls)
	n := min(orInt(cfg.Processors, ProcessorsFor(calls)), slots)
	configs := make([]asynq.Config, n)
	for i := range configs {
		forward := idleForwardInterval
		if i == 0 {
			forward = orDur(cfg.ForwardInterval, DefaultForwardInterval)
		}
		configs[i] = asynq.Config{
			Concurrency:              slots/n + btoi(i < slots%n),
			Queues:                   orQueues(cfg.Queues),
			TaskCheckInterval:        time.Duration(n) * orDur(cfg.PollInterval, DefaultPollInterval),
			DelayedTaskCheckInterval: forward,
			ShutdownTimeout:          orDur(cfg.ShutdownTimeout, DefaultShutdownTimeout),
			RetryDelayFunc:           RetryDelayFunc(h.clock(), h.Backoff),
			IsFailure:                IsFailure,
			ErrorHandler:             asynq.ErrorHandlerFunc(h.HandleError),
			Logger:                   asynqLogger{cfg.Logger},
			LogLevel:                 level,
		}
	}
	return configs
}

// ProcessorsFor is the default Config.Processors: one asynq server per 12
// of the concurrency, at least 1 and at most 4 (docs/BENCHMARKS.md).
func ProcessorsFor(concurrency int) int {
	return min(maxProcessors, max(1, concurrency/slotsPerProcessor))
}

// Prefetch is how many tasks a worker holds beyond its Concurrency: a
// fifth, at least one. They wait for a call to finish, so that the next
// call starts at once instead of after a round trip to Redis, and a stall
// of the slots' turnover (a slow round trip, a busy core) is absorbed for
// the time a fifth of the calls take to end (docs/BENCHMARKS.md); the Login
// API never sees more than Concurrency calls at once.
func Prefetch(concurrency int) int { return max(1, concurrency/5) }

// HeldAcks is how many sent tasks at most a worker lets give their slots up
// before their outcome records are written (ackGate): a tenth of its
// Concurrency, at least one. After a crash, asynq runs them again with the
// tasks of its slots, so the calls a crash can repeat are at most
// Concurrency + Prefetch + HeldAcks.
func HeldAcks(concurrency int) int { return max(1, concurrency/10) }

const (
	slotsPerProcessor = 12
	maxProcessors     = 4
)

// Start starts processing, and sweeping for lost dead letters, in the
// background.
func (s *Server) Start() error {
	for i, srv := range s.srvs {
		if err := srv.Start(s.mux); err != nil {
			shutdownAll(s.srvs[:i])
			return err
		}
	}
	go func() {
		defer close(s.holdDone)
		s.releaseStale(s.sweepStop)
	}()
	if s.cfg.SweepInterval < 0 {
		close(s.sweepDone)
		return nil
	}
	go func() {
		defer close(s.sweepDone)
		s.runSweeps(s.sweepStop)
	}()
	return nil
}

// Shutdown stops taking tasks, lets in-flight calls finish within the
// shutdown timeout and hands the rest back to their queue; tasks that have
// not called yet (those held ready) go back at once, due a second later.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		close(s.h.stop)
		close(s.sweepStop)
	})
	shutdownAll(s.srvs)
	if s.h.acks != nil {
		// Records still being written get the grace calls in flight had.
		ctx, cancel := context.WithTimeout(context.Background(), orDur(s.cfg.ShutdownTimeout, DefaultShutdownTimeout))
		if err := s.h.acks.wait(ctx); err != nil {
			s.cfg.Logger.WithField("held", s.h.acks.heldCount()).
				Error("shutdown: outcome records of sent resends still not written; their tasks run again once their leases expire")
		}
		cancel()
	}
	<-s.sweepDone
	<-s.holdDone
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if n, err := s.dequeue.release(ctx, 0); err != nil {
		s.cfg.Logger.WithError(err).Warn("tasks taken ahead could not go back to their queue: they go to another worker when their lease expires")
	} else if n > 0 {
		s.cfg.Logger.WithField("tasks", n).Debug("tasks taken ahead went back to their queue")
	}
}

// releaseTimeout bounds how long Shutdown tries to put the tasks taken ahead
// back.
const releaseTimeout = 5 * time.Second

// releaseStale puts tasks taken ahead that no asynq server asked for within
// holdMax back in their queue, every second, until stop is closed. While
// Redis fails, it tries again every second, and logs the first failure and
// the return.
func (s *Server) releaseStale(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
			n, err := s.dequeue.release(ctx, holdMax)
			cancel()
			switch {
			case err != nil && !failing:
				s.cfg.Logger.WithError(err).Warn("tasks taken ahead cannot go back to their queue: trying again every second")
			case err == nil && failing:
				s.cfg.Logger.WithField("tasks", n).Info("tasks taken ahead went back to their queue")
			}
			failing = err != nil
		}
	}
}

// shutdownAll shuts the servers down side by side, so that their in-flight
// calls share one shutdown timeout.
func shutdownAll(srvs []*asynq.Server) {
	var wg sync.WaitGroup
	for _, srv := range srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Shutdown()
		}()
	}
	wg.Wait()
}

// Run processes tasks until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	s.Shutdown()
	return nil
}

// HandleError is the asynq ErrorHandler: it records the final outcome of a
// task that asynq archives for a reason of its own (a deadline, an error
// the handler did not make, or a retry the handler asked for when the task
// has no retry left) so that no dead letter goes unrecorded. asynq does
// not call it for a task whose worker died (its recoverer archives such a
// task at its MaxRetry on its own): the Server's sweep records those.
func (h *Handler) HandleError(ctx context.Context, t *asynq.Task, err error) {
	h.recordArchived(ctx, attemptOf(ctx), t.Payload(), err)
}

// recordArchived records the final outcome of attempt a, which ended with
// err, when asynq archives its task without the handler having recorded
// it: asynq archives a task once its retry count reaches its MaxRetry,
// whatever the error (a 429 or a hold-back counts no retry, but a task
// enqueued elsewhere with MaxRetry 0 has none to begin with).
func (h *Handler) recordArchived(ctx context.Context, a attempt, payload []byte, err error) {
	var re *retryError
	var de *deadLetterError
	switch {
	case errors.As(err, &de):
		return // the handler decided, and recorded it
	case a.retried < a.maxRetry && !errors.Is(err, asynq.SkipRetry):
		return // asynq retries it
	}
	a.task, _ = tasks.Decode(payload)
	reason := outcome.ReasonExhausted
	if errors.As(err, &re) {
		reason = re.reason
		err = fmt.Errorf("%w; no retry left (MaxRetry %d)", err, a.maxRetry)
	}
	h.finish(ctx, h.record(a, outcome.StatusDeadLetter, reason, 0, err), nil)
}

// ParseQueues parses queue weights written as "signup=8,bulk=1".
func ParseQueues(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(strings.TrimSpace(w))
		name = strings.TrimSpace(name)
		if !ok || name == "" || err != nil || n < 1 {
			return nil, fmt.Errorf("queue weights %q: want name=weight pairs with weights ≥ 1, e.g. signup=8,bulk=1", s)
		}
		out[name] = n
	}
	return out, nil
}

// ParseProjectRates parses fixed rates of projects written as
// "PROJECT_ID=N" (calls per second, N ≥ 1), one a string.
func ParseProjectRates(specs []string) (map[string]int, error) {
	out := map[string]int{}
	for _, spec := range specs {
		id, v, ok := strings.Cut(strings.TrimSpace(spec), "=")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		id = strings.TrimSpace(id)
		switch {
		case !ok || err != nil || n < 1:
			return nil, fmt.Errorf("%q: want PROJECT_ID=N with N ≥ 1 calls per second", spec)
		case !tasks.IsUUID(id):
			return nil, fmt.Errorf("%q: %q is not a project ID (a UUID)", spec, id)
		}
		out[id] = n
	}
	return out, nil
}

// FormatQueues writes queue weights the way ParseQueues reads them.
func FormatQueues(q map[string]int) string {
	names := make([]string, 0, len(q))
	for n := range q {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return q[names[i]] > q[names[j]] || q[names[i]] == q[names[j]] && names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, q[n])
	}
	return strings.Join(parts, ",")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func orInt(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func orDur(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

func orQueues(q map[string]int) map[string]int {
	if len(q) == 0 {
		return DefaultQueues()
	}
	return q
}
