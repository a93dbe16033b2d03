package worker

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// Defaults of the sweep for lost dead letters.
const (
	// DefaultSweepInterval is how often a Server looks for them.
	DefaultSweepInterval = 15 * time.Second
	// sweepLookback is how far back each sweep looks in the archive.
	sweepLookback = 3 * time.Minute
	// sweepPage is how many archived tasks one round trip lists, and
	// sweepPages how many pages of a queue one sweep looks at at most.
	sweepPage  = 100
	sweepPages = 10
)

// errLeaseExpired is the error text of a task asynq's recoverer archived.
var errLeaseExpired = asynq.ErrLeaseExpired.Error()

// sweep records the final outcome of resend tasks that asynq archived
// without calling the ErrorHandler, so that no dead letter goes unrecorded.
// asynq v0.26's recoverer does that to a task whose worker died (its lease
// expired) once the task has no retry left: it archives the task with
// "asynq: task lease expired" and tells nobody. A sweep looks at the tasks
// archived in the last few minutes of each queue served, newest first, and
// records those that have no outcome record as dead letters, reason
// exhausted. One worker of the fleet sweeps a queue per interval (a Redis
// lock per queue: workers may serve different queues); writing a record
// twice is harmless anyway. It returns how many it recorded.
func (s *Server) sweep(ctx context.Context) (int, error) {
	cutoff := s.h.clock().Now().Add(-sweepLookback)
	existing, err := s.ins.Queues() // a queue that never held a task does not exist yet
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for q := range orQueues(s.cfg.Queues) {
		if !slices.Contains(existing, q) {
			continue
		}
		ok, err := s.rdb.SetNX(ctx, s.sweepLock+":{"+q+"}", "1", s.sweepInterval).Result()
		if err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		found, err := s.sweepQueue(ctx, q, cutoff)
		n += found
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

// sweepQueue records the lost dead letters of one queue archived since
// cutoff. The archive is in the order tasks were archived; a task's
// LastFailedAt is when it was archived for the tasks of interest only
// (not for one archived by hand), so the sweep stops at the first lost
// task older than cutoff, or after sweepPages.
func (s *Server) sweepQueue(ctx context.Context, queue string, cutoff time.Time) (int, error) {
	info, err := s.ins.GetQueueInfo(queue)
	if err != nil || info.Archived == 0 {
		return 0, err
	}
	n := 0
	last := (info.Archived + sweepPage - 1) / sweepPage
	for page := last; page >= 1 && page > last-sweepPages; page-- {
		archived, err := s.ins.ListArchivedTasks(queue, asynq.PageSize(sweepPage), asynq.Page(page))
		if err != nil {
			return n, err
		}
		lost, older := lostOf(archived, cutoff)
		found, err := s.recordLost(ctx, lost)
		n += found
		if err != nil || older {
			return n, err
		}
	}
	return n, nil
}

// lostOf returns the resend tasks of a page of the archive that asynq
// archived when their lease expired, since cutoff, newest first; older:
// the page holds one archived before cutoff, so older pages need no look.
func lostOf(archived []*asynq.TaskInfo, cutoff time.Time) (lost []*asynq.TaskInfo, older bool) {
	for i := len(archived) - 1; i >= 0; i-- { // newest first
		t := archived[i]
		if t.Type != tasks.TypeResend || t.LastErr != errLeaseExpired {
			continue // a dead letter the handler recorded, or a task archived by hand
		}
		if t.LastFailedAt.Before(cutoff) {
			return lost, true
		}
		lost = append(lost, t)
	}
	return lost, false
}

// recordLost records those of ts that have no outcome record.
func (s *Server) recordLost(ctx context.Context, ts []*asynq.TaskInfo) (int, error) {
	if len(ts) == 0 {
		return 0, nil
	}
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.ID
	}
	exist, err := s.h.Outcomes.Exist(ctx, ids)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, t := range ts {
		if exist[i] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
		a := attempt{taskID: t.ID, queue: t.Queue, retried: t.Retried, maxRetry: t.MaxRetry}
		a.task, _ = tasks.Decode(t.Payload)
		rec := s.h.record(a, outcome.StatusDeadLetter, outcome.ReasonExhausted, 0, errors.New(t.LastErr+" (its worker stopped with no retry left)"))
		rec.FinishedAt = t.LastFailedAt
		_ = s.h.finish(ctx, rec, nil)
		n++
	}
	return n, nil
}

// runSweeps sweeps every sweepInterval until stop is closed, and reports
// failures to the log.
func (s *Server) runSweeps(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-stop; cancel() }()
	t := s.h.clock().NewTicker(s.sweepInterval)
	defer t.Stop()
	for {
		if _, err := s.sweep(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, redis.ErrClosed) {
			s.cfg.Logger.WithError(err).Warn("sweep for lost dead letters failed")
		}
		select {
		case <-stop:
			return
		case <-t.Chan():
		}
	}
}
