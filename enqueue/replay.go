package enqueue

import (
	"cmp"
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
	res, err := e.enqueueClaimed(ctx, e.replayKey(rec), ReplayKeep, false, false, task, Result{TaskID: e.newID(), Queue: queue})
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

// ErrNoSelection is the error of a replay that selects no dead letter in
// particular and does not say all.
var ErrNoSelection = errors.New("a replay needs a filter (code, reason, project_id, batch_id, username, since, until) or all dead letters")

// ReplayOptions select the dead letters ReplayDeadLetters replays.
type ReplayOptions struct {
	// Filter selects the dead letters (its Status and Cursor are set by the
	// replay). Required, unless All is set.
	Filter outcome.Filter
	// All replays every dead letter: a deliberate choice, never a default.
	All bool
	// Queue is where the new tasks go: tasks.QueueBulk (default) or
	// tasks.QueueSignup, to jump the line.
	Queue string
	// DryRun only counts what a replay would do (CheckReplay per dead letter).
	DryRun bool
}

// Check reports what is wrong with the options before any work:
// ErrNoSelection, or an unknown queue.
func (o ReplayOptions) Check() error {
	f := o.Filter
	if !o.All && f.Username == "" && f.ProjectID == "" && f.Reason == "" && f.Code == "" && f.BatchID == "" && f.Since.IsZero() && f.Until.IsZero() {
		return ErrNoSelection
	}
	if o.Queue != "" && o.Queue != tasks.QueueBulk && o.Queue != tasks.QueueSignup {
		return fmt.Errorf("queue %q: want %s or %s", o.Queue, tasks.QueueBulk, tasks.QueueSignup)
	}
	if err := f.Validate(); err != nil {
		return err
	}
	return nil
}

// ReplaySummary counts what a replay did (in a dry run: would do); its
// counts add up to Matched.
type ReplaySummary struct {
	// Matched counts the dead letters selected.
	Matched int `json:"matched"`
	// Replayed counts those enqueued again (in a dry run: that would be).
	Replayed int `json:"replayed"`
	// AlreadyReplayed counts those replayed by an earlier run.
	AlreadyReplayed int `json:"already_replayed"`
	// StillInvalid counts those whose request does not validate.
	StillInvalid int `json:"still_invalid"`
	// DryRun is true when nothing was enqueued.
	DryRun bool `json:"dry_run"`
}

// ReplayDeadLetters replays every dead letter opts select (Replay, or
// CheckReplay in a dry run), page by page of the outcome records, newest
// first. Replays are new tasks, so they never show up in the pages still to
// come. On an error, the summary says how far it got.
func (e *Enqueuer) ReplayDeadLetters(ctx context.Context, opts ReplayOptions) (ReplaySummary, error) {
	sum := ReplaySummary{DryRun: opts.DryRun}
	if err := opts.Check(); err != nil {
		return sum, err
	}
	queue := cmp.Or(opts.Queue, tasks.QueueBulk)
	act := e.Replay
	if opts.DryRun {
		act = e.CheckReplay
	}
	f := opts.Filter
	f.Status, f.Cursor = outcome.StatusDeadLetter, ""
	for {
		page, err := e.outcomes.List(ctx, f)
		if err != nil {
			return sum, err
		}
		for _, rec := range page.Records {
			res, err := act(ctx, rec, queue)
			var ve *tasks.ValidationError
			switch {
			case errors.As(err, &ve):
				sum.StillInvalid++
			case err != nil:
				return sum, err
			case res.Duplicate:
				sum.AlreadyReplayed++
			default:
				sum.Replayed++
			}
			sum.Matched++
		}
		if page.NextCursor == "" {
			return sum, nil
		}
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		f.Cursor = page.NextCursor
	}
}
