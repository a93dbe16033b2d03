package enqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

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
	if rec.Status != outcome.StatusDeadLetter {
		return Result{}, fmt.Errorf("replay %s: it is %s, not a dead letter", rec.TaskID, rec.Status)
	}
	r := tasks.Resend{ProjectID: rec.ProjectID, Username: rec.Username, LoginURL: rec.LoginURL, Payload: rec.Payload, BatchID: rec.BatchID}.Normalize()
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	r.EnqueuedAt = e.opts.Now().UTC()
	task, err := tasks.NewTask(r)
	if err != nil {
		return Result{}, err
	}
	res, err := e.enqueueClaimed(ctx, e.opts.KeyPrefix+"replayed:"+rec.TaskID, ReplayKeep, task, Result{TaskID: e.newID(), Queue: queue})
	if err != nil || res.Duplicate {
		return res, err
	}
	ins := asynq.NewInspectorFromRedisClient(e.rdb)
	if err := ins.DeleteTask(rec.Queue, rec.TaskID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		return res, fmt.Errorf("replayed as %s, but the old dead letter stays in the archive: %w", res.TaskID, err)
	}
	return res, nil
}
