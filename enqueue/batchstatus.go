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

// BatchStatus is where a batch stands.
type BatchStatus struct {
	BatchID string `json:"batch_id"`
	// Enqueued counts the batch's tasks: waiting, running and finished.
	Enqueued int64 `json:"enqueued"`
	// Waiting counts the tasks still queued: pending, scheduled or waiting
	// for a retry; Running those being worked on.
	Waiting int64 `json:"waiting"`
	Running int64 `json:"running"`
	outcome.BatchCounts
	// PerSecond is how many of the batch's tasks finished a second over the
	// last minute; DoneIn is how long the waiting and running ones take at
	// that pace (0 when none finished in the last minute, or none is left).
	PerSecond float64       `json:"per_second"`
	DoneIn    time.Duration `json:"done_in_ns"`
}

// resendQueues are the queues a resend task may wait in.
var resendQueues = []string{tasks.QueueSignup, tasks.QueueBulk}

// scanBatch calls fn with the ID and state of every task of batchID still
// in Redis (pending, scheduled, retry, active), reading asynq's lists and
// sets 5,000 IDs at a time: a batch's tasks have IDs that start with its ID
// and a colon (BatchTaskID).
func (e *Enqueuer) scanBatch(ctx context.Context, batchID string, fn func(queue, id, state string) error) error {
	prefix := batchID + ":"
	const page = 5000
	for _, q := range resendQueues {
		for _, state := range []string{"pending", "active", "scheduled", "retry"} {
			key := "asynq:{" + q + "}:" + state
			for start := int64(0); ; start += page {
				var ids []string
				var err error
				if state == "pending" || state == "active" {
					ids, err = e.rdb.LRange(ctx, key, start, start+page-1).Result()
				} else {
					ids, err = e.rdb.ZRange(ctx, key, start, start+page-1).Result()
				}
				if err != nil && !errors.Is(err, redis.Nil) {
					return fmt.Errorf("batch %s: read %s: %w", batchID, key, err)
				}
				for _, id := range ids {
					if strings.HasPrefix(id, prefix) {
						if err := fn(q, id, state); err != nil {
							return err
						}
					}
				}
				if len(ids) < page {
					break
				}
			}
		}
	}
	return nil
}

// BatchStatus says where the batch batchID stands: its tasks still in
// Redis, its finished ones by outcome, and when it will be done at its pace
// of the last minute.
func (e *Enqueuer) BatchStatus(ctx context.Context, batchID string) (BatchStatus, error) {
	if err := CheckBatchID(batchID); err != nil {
		return BatchStatus{}, err
	}
	st := BatchStatus{BatchID: batchID}
	err := e.scanBatch(ctx, batchID, func(_, _, state string) error {
		if state == "active" {
			st.Running++
		} else {
			st.Waiting++
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	if st.BatchCounts, err = e.outcomes.Batch(ctx, batchID); err != nil {
		return st, err
	}
	st.Enqueued = st.Waiting + st.Running + st.Sent + st.DeadLetter
	st.PerSecond = float64(st.LastMinute) / 60
	if left := st.Waiting + st.Running; left > 0 && st.PerSecond > 0 {
		st.DoneIn = time.Duration(float64(left) / st.PerSecond * float64(time.Second))
	}
	return st, nil
}

// CancelSummary says what CancelBatch did.
type CancelSummary struct {
	// Cancelled counts the tasks removed from their queue, each recorded as
	// a dead letter of reason cancelled (which a replay may send later).
	Cancelled int `json:"cancelled"`
	// Running counts those being worked on, left to finish.
	Running int `json:"running"`
}

// CancelBatch removes the tasks of batchID that have not been sent yet
// (pending, scheduled, waiting for a retry) and records each as a dead
// letter of reason cancelled; tasks running right now finish. A task that
// a worker takes between its record and its removal is sent and its sent
// record stays. Running it again finishes a cancel that stopped part way.
func (e *Enqueuer) CancelBatch(ctx context.Context, batchID string) (CancelSummary, error) {
	var sum CancelSummary
	if err := CheckBatchID(batchID); err != nil {
		return sum, err
	}
	type task struct{ queue, id string }
	var waiting []task
	err := e.scanBatch(ctx, batchID, func(q, id, state string) error {
		if state == "active" {
			sum.Running++
		} else {
			waiting = append(waiting, task{q, id})
		}
		return nil
	})
	if err != nil {
		return sum, err
	}
	now := e.opts.Clock.Now()
	for _, t := range waiting {
		info, err := e.ins.GetTaskInfo(t.queue, t.id)
		if errors.Is(err, asynq.ErrTaskNotFound) {
			continue // done meanwhile
		}
		if err != nil {
			return sum, fmt.Errorf("cancel batch %s: %w", batchID, err)
		}
		r, err := tasks.Decode(info.Payload)
		if err != nil {
			r = tasks.Resend{BatchID: batchID}
		}
		rec := outcome.Record{
			TaskID: t.id, ProjectID: r.ProjectID, Username: r.Username, LoginURL: r.LoginURL, Payload: r.Payload,
			Queue: t.queue, BatchID: batchID, ReplayOf: r.ReplayOf, Status: outcome.StatusDeadLetter,
			Reason: outcome.ReasonCancelled, Attempts: info.Retried, EnqueuedAt: r.EnqueuedAt, FinishedAt: now,
			ErrorDescription: "batch cancelled before it was sent",
		}
		if info.State == asynq.TaskStateActive {
			sum.Running++
			continue
		}
		if _, err := e.outcomes.Finish(ctx, rec); err != nil {
			return sum, fmt.Errorf("cancel batch %s: %w", batchID, err)
		}
		switch err := e.ins.DeleteTask(t.queue, t.id); {
		case err == nil:
			sum.Cancelled++
		case errors.Is(err, asynq.ErrTaskNotFound):
		case strings.Contains(err.Error(), "active"):
			// Taken by a worker since: it goes on, so the cancelled record
			// goes (unless the worker's own outcome replaced it already),
			// lest a replay of the cancelled send it a second time.
			sum.Running++
			if cur, ok, err := e.outcomes.Get(ctx, t.id); err == nil && ok && cur.Reason == outcome.ReasonCancelled {
				if _, err := e.outcomes.Delete(ctx, []string{t.id}); err != nil {
					return sum, fmt.Errorf("cancel batch %s: %w", batchID, err)
				}
			}
		default:
			return sum, fmt.Errorf("cancel batch %s: delete task %s: %w", batchID, t.id, err)
		}
	}
	return sum, nil
}

// String is the summary as an audit log line says it.
func (s CancelSummary) String() string {
	return fmt.Sprintf("cancelled %d, %d running left to finish", s.Cancelled, s.Running)
}
