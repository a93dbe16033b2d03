package enqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/outcome"
)

// States of a resend as Lookup tells them.
const (
	StatePending    = "pending"     // waits for a worker
	StateScheduled  = "scheduled"   // waits for its time
	StateActive     = "active"      // a worker is calling the Login API for it
	StateRetrying   = "retrying"    // an attempt failed, or was held back; the next is due at NextAttemptAt
	StateSent       = "sent"        // the Login API accepted it: the email is on its way
	StateDeadLetter = "dead_letter" // given up: see Reason and ErrorCode
)

// ErrNotFound is Lookup's error for a task ID it knows nothing of: never
// enqueued, or done longer ago than the outcome records are kept.
var ErrNotFound = errors.New("no resend with this task ID")

// TaskStatus is where a resend stands. It names no user: whoever asks knows
// whom they enqueued it for.
type TaskStatus struct {
	TaskID string `json:"task_id"`
	Queue  string `json:"queue"`
	State  string `json:"state"`
	// Attempts counts the calls made to the Login API so far (retrying) or
	// in all (sent, dead_letter).
	Attempts int `json:"attempts"`
	// LastError is the last failed attempt's error (retrying).
	LastError string `json:"last_error,omitempty"`
	// NextAttemptAt is when the task runs next (scheduled, retrying).
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	// Reason, ErrorCode, HTTPStatus and ErrorDescription describe a dead
	// letter (see the outcome table in the README).
	Reason           outcome.Reason `json:"reason,omitempty"`
	ErrorCode        string         `json:"error_code,omitempty"`
	HTTPStatus       int            `json:"http_status,omitempty"`
	ErrorDescription string         `json:"error_description,omitempty"`
	// FinishedAt is when it was sent or dead-lettered.
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Lookup tells where the resend of task ID id stands: its outcome record
// once it has one, else its state in asynq (in the Enqueuer's queue, the
// signup queue or the bulk queue). A task ID nobody knows is ErrNotFound.
func (e *Enqueuer) Lookup(ctx context.Context, id string) (TaskStatus, error) {
	if id == "" {
		return TaskStatus{}, ErrNotFound
	}
	rec, ok, err := e.outcomes.Get(ctx, id)
	if err != nil {
		return TaskStatus{}, fmt.Errorf("look up task %s: %w", id, err)
	}
	if ok {
		return statusOf(rec), nil
	}
	for _, q := range e.lookupQueues() {
		info, err := e.ins.GetTaskInfo(q, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			continue
		case err != nil:
			return TaskStatus{}, fmt.Errorf("look up task %s: %w", id, err)
		}
		return e.taskStatus(ctx, info)
	}
	// The task may have finished meanwhile: asynq deletes it only after
	// its outcome is recorded.
	if rec, ok, err := e.outcomes.Get(ctx, id); err != nil {
		return TaskStatus{}, fmt.Errorf("look up task %s: %w", id, err)
	} else if ok {
		return statusOf(rec), nil
	}
	return TaskStatus{}, ErrNotFound
}

func (e *Enqueuer) lookupQueues() []string {
	qs := []string{e.opts.Queue}
	for _, q := range resendQueues {
		if q != e.opts.Queue {
			qs = append(qs, q)
		}
	}
	return qs
}

// taskStatus is the status of a task asynq holds.
func (e *Enqueuer) taskStatus(ctx context.Context, info *asynq.TaskInfo) (TaskStatus, error) {
	st := TaskStatus{TaskID: info.ID, Queue: info.Queue, Attempts: info.Retried}
	switch info.State {
	case asynq.TaskStatePending:
		st.State = StatePending
	case asynq.TaskStateActive:
		st.State = StateActive
	case asynq.TaskStateScheduled:
		st.State = StateScheduled
		st.NextAttemptAt = timePtr(info.NextProcessAt)
	case asynq.TaskStateRetry:
		st.State, st.LastError = StateRetrying, info.LastErr
		st.NextAttemptAt = timePtr(info.NextProcessAt)
	case asynq.TaskStateArchived, asynq.TaskStateCompleted:
		// Its outcome is being written, or was lost (the archive sweep
		// records it): read it once more.
		rec, ok, err := e.outcomes.Get(ctx, info.ID)
		if err != nil {
			return TaskStatus{}, fmt.Errorf("look up task %s: %w", info.ID, err)
		}
		if ok {
			return statusOf(rec), nil
		}
		st.State, st.LastError = StateDeadLetter, info.LastErr
		if info.State == asynq.TaskStateCompleted {
			st.State, st.LastError = StateSent, ""
		}
	default:
		st.State = info.State.String()
	}
	return st, nil
}

// statusOf is the status of a task with an outcome record.
func statusOf(rec outcome.Record) TaskStatus {
	st := TaskStatus{
		TaskID: rec.TaskID, Queue: rec.Queue, State: StateSent, Attempts: rec.Attempts,
		FinishedAt: timePtr(rec.FinishedAt),
	}
	if rec.Status == outcome.StatusDeadLetter {
		st.State, st.Reason, st.ErrorCode, st.HTTPStatus, st.ErrorDescription =
			StateDeadLetter, rec.Reason, rec.ErrorCode, rec.HTTPStatus, rec.ErrorDescription
	}
	return st
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
