package enqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// ReplayKeep is how long a replay is remembered, so that replaying the same
// dead letters twice sends nobody a second email.
const ReplayKeep = 90 * 24 * time.Hour

// Replay enqueues a dead letter again, as a new task in queue, once the
// cause of its failure is fixed. A dead letter that was replayed before
// gives Result.Duplicate with the task ID of that replay; one whose request
// no longer validates gives a *tasks.ValidationError. The dead letter's
// task, if asynq's archive still holds it, is removed from the archive.
func (e *Enqueuer) Replay(ctx context.Context, rec outcome.Record, queue string) (Result, error) {
	r, err := replayable(rec)
	if err != nil {
		return Result{}, err
	}
	r.EnqueuedAt = e.opts.Clock.Now().UTC()
	task, err := tasks.NewTask(r)
	if err != nil {
		return Result{}, err
	}
	res, err := e.enqueueClaimed(ctx, e.replayKey(rec), ReplayKeep, false, task, Result{TaskID: e.newID(), Queue: queue})
	if err != nil || res.Duplicate {
		return res, err
	}
	if err := e.ins.DeleteTask(rec.Queue, rec.TaskID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		return res, fmt.Errorf("replayed as %s, but the old dead letter stays in the archive: %w", res.TaskID, err)
	}
	return res, nil
}

// CheckReplay says what Replay would do with rec, changing nothing: a
// *tasks.ValidationError, a duplicate naming the earlier replay, or a
// result without a task ID for a dead letter that would be replayed.
func (e *Enqueuer) CheckReplay(ctx context.Context, rec outcome.Record, queue string) (Result, error) {
	if _, err := replayable(rec); err != nil {
		return Result{}, err
	}
	held, err := e.rdb.Get(ctx, e.replayKey(rec)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return Result{Queue: queue}, nil
	case err != nil:
		return Result{}, fmt.Errorf("replay check: %w", err)
	}
	return Result{TaskID: strings.TrimPrefix(held, pendingMark), Queue: queue, Duplicate: true}, nil
}

// replayable is the request of a dead letter, if it can be sent again.
func replayable(rec outcome.Record) (tasks.Resend, error) {
	if rec.Status != outcome.StatusDeadLetter {
		return tasks.Resend{}, fmt.Errorf("replay %s: it is %s, not a dead letter", rec.TaskID, rec.Status)
	}
	r := tasks.Resend{ProjectID: rec.ProjectID, Username: rec.Username, LoginURL: rec.LoginURL, Payload: rec.Payload, BatchID: rec.BatchID}.Normalize()
	return r, r.Validate()
}

// replayKey remembers the replay of one dead letter.
func (e *Enqueuer) replayKey(rec outcome.Record) string {
	return e.opts.KeyPrefix + "replayed:" + rec.TaskID
}
