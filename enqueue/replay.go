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
// cause of its failure is fixed, and marks the dead letter's record as
// replayed (outcome.Store.MarkReplayed); the new task's record will name it
// (ReplayOf). A dead letter that was replayed before gives
// Result.Duplicate with the task ID of that replay (and is marked, should
// an earlier run have stopped in between); one whose request no longer
// validates gives a *tasks.ValidationError. The dead letter's task, if
// asynq's archive still holds it, is removed from the archive.
func (e *Enqueuer) Replay(ctx context.Context, rec outcome.Record, queue string) (Result, error) {
	if rec.ReplayedAs != "" {
		return Result{TaskID: rec.ReplayedAs, Queue: queue, Duplicate: true}, nil
	}
	r, err := replayable(rec)
	if err != nil {
		return Result{}, err
	}
	now := e.opts.Clock.Now().UTC()
	r.EnqueuedAt, r.ReplayOf = now, rec.TaskID
	task, err := tasks.NewTask(r)
	if err != nil {
		return Result{}, err
	}
	res, err := e.enqueueClaimed(ctx, e.replayKey(rec), ReplayKeep, false, false, task, Result{TaskID: e.newID(), Queue: queue})
	if err != nil {
		return res, err
	}
	if _, _, err := e.outcomes.MarkReplayed(ctx, rec, res.TaskID, now); err != nil {
		return res, fmt.Errorf("replayed as %s, but the dead letter is not marked replayed (a second run marks it): %w", res.TaskID, err)
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
	if rec.ReplayedAs != "" {
		return Result{TaskID: rec.ReplayedAs, Queue: queue, Duplicate: true}, nil
	}
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

// ErrNoSelection is the error of a replay or purge that selects no dead
// letter in particular and does not say all.
var ErrNoSelection = errors.New("select dead letters by a filter (code, reason, project_id, batch_id, username, since, until), by task IDs, or all of them")

// Selection selects dead letters: by a filter, by task IDs, or all of them.
type Selection struct {
	// Filter selects the dead letters (its Status and Cursor are set by the
	// walk). Required, unless TaskIDs or All is set.
	Filter outcome.Filter
	// TaskIDs selects these dead letters, in this order; not with a filter.
	TaskIDs []string
	// All selects every dead letter: a deliberate choice, never a default.
	All bool
}

// Check reports what is wrong with the selection before any work:
// ErrNoSelection, or a filter that is invalid or mixed with task IDs.
func (sel Selection) Check() error {
	f := sel.Filter
	filtered := f.Username != "" || f.ProjectID != "" || f.Reason != "" || f.Code != "" || f.BatchID != "" || f.State != "" || !f.Since.IsZero() || !f.Until.IsZero()
	switch {
	case len(sel.TaskIDs) > 0 && (filtered || sel.All):
		return errors.New("task IDs select dead letters by themselves: give no filter and not all with them")
	case !filtered && !sel.All && len(sel.TaskIDs) == 0:
		return ErrNoSelection
	}
	return f.Validate()
}

// String says what sel selects, for an audit log line: a username in it is
// masked.
func (sel Selection) String() string {
	if len(sel.TaskIDs) > 0 {
		return "task IDs " + strings.Join(sel.TaskIDs, ",")
	}
	if sel.All {
		return "all dead letters"
	}
	f := sel.Filter
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("username", tasks.MaskEmail(f.Username))
	add("project_id", f.ProjectID)
	add("reason", string(f.Reason))
	add("code", f.Code)
	add("batch_id", f.BatchID)
	add("state", string(f.State))
	if !f.Since.IsZero() {
		add("since", f.Since.UTC().Format(time.RFC3339))
	}
	if !f.Until.IsZero() {
		add("until", f.Until.UTC().Format(time.RFC3339))
	}
	return strings.Join(parts, " ")
}

// each calls fn with every dead letter sel selects: the records of its task
// IDs (an ID of no record, or of a record that is not a dead letter, is an
// error naming it, before any call), or page by page of the outcome
// records, newest first. Records fn adds or changes do not move the walk:
// its cursor is a position, not an offset.
func (e *Enqueuer) each(ctx context.Context, sel Selection, fn func(outcome.Record) error) error {
	if len(sel.TaskIDs) > 0 {
		recs := make([]outcome.Record, 0, len(sel.TaskIDs))
		for _, id := range sel.TaskIDs {
			rec, ok, err := e.outcomes.Get(ctx, id)
			switch {
			case err != nil:
				return err
			case !ok:
				return &NotDeadLetterError{TaskID: id}
			case rec.Status != outcome.StatusDeadLetter:
				return &NotDeadLetterError{TaskID: id, Status: rec.Status}
			}
			recs = append(recs, rec)
		}
		for _, rec := range recs {
			if err := fn(rec); err != nil {
				return err
			}
		}
		return nil
	}
	f := sel.Filter
	f.Status, f.Cursor, f.Limit = outcome.StatusDeadLetter, "", outcome.MaxLimit
	for {
		page, err := e.outcomes.List(ctx, f)
		if err != nil {
			return err
		}
		for _, rec := range page.Records {
			if err := fn(rec); err != nil {
				return err
			}
		}
		if page.NextCursor == "" {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		f.Cursor = page.NextCursor
	}
}

// NotDeadLetterError is the error of a task ID given to select a dead
// letter that has no outcome record, or one of another status.
type NotDeadLetterError struct {
	TaskID string
	Status outcome.Status // empty: no record
}

func (e *NotDeadLetterError) Error() string {
	if e.Status == "" {
		return fmt.Sprintf("task %s: no outcome record (not finished, or past its retention)", e.TaskID)
	}
	return fmt.Sprintf("task %s is %s, not a dead letter", e.TaskID, e.Status)
}

// ReplayOptions select the dead letters ReplayDeadLetters replays.
type ReplayOptions struct {
	Selection
	// Queue is where the new tasks go: tasks.QueueBulk (default) or
	// tasks.QueueSignup, to jump the line.
	Queue string
	// DryRun only counts what a replay would do (CheckReplay per dead letter).
	DryRun bool
	// Progress, when set, is called after each dead letter with the
	// summary so far.
	Progress func(ReplaySummary)
}

// Check reports what is wrong with the options before any work:
// ErrNoSelection, an unknown queue, or a bad filter.
func (o ReplayOptions) Check() error {
	if o.Queue != "" && o.Queue != tasks.QueueBulk && o.Queue != tasks.QueueSignup {
		return fmt.Errorf("queue %q: want %s or %s", o.Queue, tasks.QueueBulk, tasks.QueueSignup)
	}
	return o.Selection.Check()
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
	// Superseded counts those whose user was sent an email since, has a
	// newer open dead letter, or a replay or resend on its way: replaying
	// them could send a second email.
	Superseded int `json:"superseded"`
	// StillInvalid counts those whose request does not validate.
	StillInvalid int `json:"still_invalid"`
	// DryRun is true when nothing was enqueued.
	DryRun bool `json:"dry_run"`
}

// String is the summary as an audit log line says it.
func (s ReplaySummary) String() string {
	return fmt.Sprintf("replayed %d, already replayed %d, superseded %d, still invalid %d, of %d matched",
		s.Replayed, s.AlreadyReplayed, s.Superseded, s.StillInvalid, s.Matched)
}

// ReplayDeadLetters replays every dead letter opts select (Replay, or
// CheckReplay in a dry run), newest first, at most once each and at most
// one per user: a dead letter already replayed is counted, not replayed; so
// is one superseded by another record of its user (superseded). Replays are new tasks, so they never
// show up in the pages still to come. On an error, the summary says how far
// it got.
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
	err := e.each(ctx, opts.Selection, func(rec outcome.Record) error {
		sum.Matched++
		defer func() {
			if opts.Progress != nil {
				opts.Progress(sum)
			}
		}()
		if rec.ReplayedAs != "" {
			sum.AlreadyReplayed++
			return nil
		}
		// A replay that stopped between its enqueue and its mark: finish
		// it (the duplicate path marks the record).
		claimed, err := e.rdb.Exists(ctx, e.replayKey(rec)).Result()
		if err != nil {
			return fmt.Errorf("replay check: %w", err)
		}
		if claimed == 1 {
			if _, err := act(ctx, rec, queue); err != nil {
				return err
			}
			sum.AlreadyReplayed++
			return nil
		}
		superseded, err := e.superseded(ctx, rec)
		if err != nil {
			return err
		}
		if superseded {
			sum.Superseded++
			return nil
		}
		res, err := act(ctx, rec, queue)
		var ve *tasks.ValidationError
		switch {
		case errors.As(err, &ve):
			sum.StillInvalid++
		case err != nil:
			return err
		case res.Duplicate:
			sum.AlreadyReplayed++
		default:
			sum.Replayed++
		}
		return nil
	})
	return sum, err
}

// userDepth is how many of a user's newest records superseded looks at.
const userDepth = 100

// superseded reports whether replaying the dead letter rec could send its
// user a second email: the user (in rec's project) has a record sent after
// rec failed; another dead letter newer than rec, still open and
// replayable (the one to replay, if any); a replay, or a resend of any
// spelling of the address (the dedup claim), still on its way. Only the
// newest open dead letter of a user is replayed, whatever order they are
// selected in, and nothing is held in memory from one dead letter to the
// next.
func (e *Enqueuer) superseded(ctx context.Context, rec outcome.Record) (bool, error) {
	page, err := e.outcomes.List(ctx, outcome.Filter{Username: rec.Username, ProjectID: rec.ProjectID, Limit: userDepth})
	if err != nil {
		return false, err
	}
	for _, r := range page.Records {
		if r.TaskID == rec.TaskID {
			continue
		}
		newer := r.FinishedAt.After(rec.FinishedAt) || r.FinishedAt.Equal(rec.FinishedAt) && r.TaskID > rec.TaskID
		switch {
		case r.Status == outcome.StatusSent && newer:
			return true, nil
		case r.Status == outcome.StatusDeadLetter && r.ReplayedAs == "" && newer:
			if _, err := replayable(r); err == nil {
				return true, nil
			}
		case r.ReplayedAs != "":
			if on, err := e.onItsWay(ctx, r.ReplayedAs); on || err != nil {
				return on, err
			}
		}
	}
	held, err := e.rdb.Get(ctx, e.dedupKey(tasks.Resend{ProjectID: rec.ProjectID, Username: rec.Username})).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("replay check: %w", err)
	}
	return e.onItsWay(ctx, strings.TrimPrefix(held, pendingMark))
}

// onItsWay reports whether the task taskID may still send its email: it
// has no outcome record yet and is still in a queue (not deleted, not
// archived). A replay deleted or purged before it finished is not.
func (e *Enqueuer) onItsWay(ctx context.Context, taskID string) (bool, error) {
	if _, finished, err := e.outcomes.Get(ctx, taskID); err != nil || finished {
		return false, err
	}
	for _, q := range resendQueues {
		info, err := e.ins.GetTaskInfo(q, taskID)
		if err == nil && info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted {
			return true, nil
		}
	}
	return false, nil
}

// PurgeOptions select the dead letters PurgeDeadLetters removes.
type PurgeOptions struct {
	Selection
	// DryRun only counts them.
	DryRun bool
	// Progress, when set, is called after each page with the summary so far.
	Progress func(PurgeSummary)
}

// PurgeSummary counts what a purge did (in a dry run: would do).
type PurgeSummary struct {
	// Matched counts the dead letters selected.
	Matched int `json:"matched"`
	// Purged counts the outcome records removed.
	Purged int `json:"purged"`
	// Archived counts the tasks removed from asynq's archive with them.
	Archived int `json:"archived"`
	// DryRun is true when nothing was removed.
	DryRun bool `json:"dry_run"`
}

// String is the summary as an audit log line says it.
func (s PurgeSummary) String() string {
	return fmt.Sprintf("purged %d records and %d archived tasks, of %d matched", s.Purged, s.Archived, s.Matched)
}

// purgePage is how many dead letters a purge removes per step.
const purgePage = 500

// PurgeDeadLetters removes every dead letter opts select: its outcome
// record (outcome.Store.Delete) and its task in asynq's archive, if the
// archive still holds it. On an error, the summary says how far it got;
// running the same purge again finishes it.
func (e *Enqueuer) PurgeDeadLetters(ctx context.Context, opts PurgeOptions) (PurgeSummary, error) {
	sum := PurgeSummary{DryRun: opts.DryRun}
	if err := opts.Check(); err != nil {
		return sum, err
	}
	var batch []outcome.Record
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		ids := make([]string, len(batch))
		for i, rec := range batch {
			ids[i] = rec.TaskID
			err := e.ins.DeleteTask(rec.Queue, rec.TaskID)
			switch {
			case err == nil:
				sum.Archived++
			case !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound):
				return fmt.Errorf("purge task %s from asynq's archive: %w", rec.TaskID, err)
			}
		}
		n, err := e.outcomes.Delete(ctx, ids)
		sum.Purged += n
		batch = batch[:0]
		if opts.Progress != nil {
			opts.Progress(sum)
		}
		return err
	}
	err := e.each(ctx, opts.Selection, func(rec outcome.Record) error {
		sum.Matched++
		if opts.DryRun {
			if opts.Progress != nil && sum.Matched%purgePage == 0 {
				opts.Progress(sum)
			}
			return nil
		}
		if batch = append(batch, rec); len(batch) == purgePage {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return sum, err
}
