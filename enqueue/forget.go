package enqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// ForgetSummary says what Forget deleted.
type ForgetSummary struct {
	// Records counts the outcome records deleted (with their attempt
	// histories and index entries).
	Records int `json:"records"`
	// Tasks counts the asynq tasks deleted with them (dead letters still in
	// the archive, and tasks of the user still waiting under those IDs).
	Tasks int `json:"tasks"`
	// Claims counts the dedup claims and replay markers deleted.
	Claims int `json:"claims"`
	// Running counts tasks of the user running right now, which could not
	// be deleted: their records appear when they finish; forget again then.
	Running int `json:"running"`
}

// String is the summary as an audit log line says it.
func (s ForgetSummary) String() string {
	return fmt.Sprintf("deleted %d records, %d tasks, %d claims; %d running", s.Records, s.Tasks, s.Claims, s.Running)
}

// Forget deletes what resendq keeps of a user, for a privacy request: the
// outcome records of username (of projectID only, when given) with their
// histories, the asynq tasks of those records still in Redis (dead letters
// in the archive), the user's latest task if it still waits in a queue (the
// one its dedup claim names), the user's dedup claims and the replay
// markers of the records. The username matches as the dedup window matches it (an email
// address in any case); records match it exactly.
func (e *Enqueuer) Forget(ctx context.Context, projectID, username string) (ForgetSummary, error) {
	var sum ForgetSummary
	username = strings.TrimSpace(username)
	if username == "" {
		return sum, fmt.Errorf("%w: username is empty", outcome.ErrInvalid)
	}
	projects := map[string]bool{}
	if projectID != "" {
		projects[projectID] = true
	}
	f := outcome.Filter{Username: username, ProjectID: projectID, Limit: outcome.MaxLimit}
	var ids, keys []string
	for {
		page, err := e.outcomes.List(ctx, f)
		if err != nil {
			return sum, err
		}
		for _, rec := range page.Records {
			ids = append(ids, rec.TaskID)
			projects[rec.ProjectID] = true
			keys = append(keys, e.replayKey(rec))
			if rec.ReplayedAs != "" { // its replay, if still queued, would write to the user
				sum.deleteQueued(e, rec.ReplayedAs)
			}
			switch err := e.ins.DeleteTask(rec.Queue, rec.TaskID); {
			case err == nil:
				sum.Tasks++
			case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			case strings.Contains(err.Error(), "active"):
				sum.Running++
			default:
				return sum, fmt.Errorf("forget: delete task %s: %w", rec.TaskID, err)
			}
		}
		if page.NextCursor == "" {
			break
		}
		f.Cursor = page.NextCursor
	}
	for p := range projects {
		claim := e.dedupKey(tasks.Resend{ProjectID: p, Username: username})
		keys = append(keys, claim)
		// The claim names the user's latest task, which may still wait in
		// a queue with no record yet.
		held, err := e.rdb.Get(ctx, claim).Result()
		if err != nil {
			continue
		}
		sum.deleteQueued(e, strings.TrimPrefix(held, pendingMark))
	}
	n, err := e.outcomes.Delete(ctx, ids)
	sum.Records = n
	if err != nil {
		return sum, err
	}
	if len(keys) > 0 {
		deleted, err := e.del(ctx, keys...)
		if err != nil {
			return sum, fmt.Errorf("forget: delete claims: %w", err)
		}
		sum.Claims = int(deleted)
	}
	return sum, nil
}

// deleteQueued deletes the task id from whichever queue holds it, counting
// it as deleted, or as running when a worker has it.
func (s *ForgetSummary) deleteQueued(e *Enqueuer, id string) {
	for _, q := range resendQueues {
		switch err := e.ins.DeleteTask(q, id); {
		case err == nil:
			s.Tasks++
		case strings.Contains(err.Error(), "active"):
			s.Running++
		}
	}
}
