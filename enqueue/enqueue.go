// Package enqueue is the producer side of resendq: the Go API that signup
// services import to ask for a confirmation-email resend, with a dedup
// window so that one user is not sent two emails by a double click or a
// retried request (Enqueuer.Enqueue, queue "signup"), and batch resends of
// many users read from CSV or JSON Lines (Enqueuer.EnqueueBatch, queue
// "bulk"), idempotent per batch ID and grouped into Redis pipelines.
package enqueue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/tasks"
)

// DefaultDedupWindow is how long an enqueued resend for a project+username
// makes a new one for the same user return the existing task instead.
const DefaultDedupWindow = 10 * time.Minute

// Options configure an Enqueuer. Zero values are defaults.
type Options struct {
	// DedupWindow: a second resend for the same project and username within
	// this window returns the first task's ID and sends no second email.
	// Default DefaultDedupWindow; negative disables the check.
	DedupWindow time.Duration
	// Queue single enqueues go to. Default tasks.QueueSignup.
	Queue string
	// KeyPrefix of resendq's own Redis keys. Default "resendq:".
	KeyPrefix string
	// Now is the clock that stamps EnqueuedAt. Default time.Now.
	Now func() time.Time
}

// Enqueuer enqueues resend tasks. It is safe for concurrent use.
type Enqueuer struct {
	rdb    redis.UniversalClient
	client *asynq.Client
	opts   Options
	newID  func() string
}

// Result says what became of one enqueue.
type Result struct {
	// TaskID is the asynq task ID: the new task's, or the earlier one's for a duplicate.
	TaskID string `json:"task_id"`
	// Queue is the queue the task went to.
	Queue string `json:"queue"`
	// Duplicate is true when a task for the same user was enqueued within
	// the dedup window; nothing new was enqueued.
	Duplicate bool `json:"duplicate"`
	// Warnings list what was accepted but looks like a mistake.
	Warnings []string `json:"warnings,omitempty"`
}

// New returns an Enqueuer on rdb, which it shares and does not close.
func New(rdb redis.UniversalClient, opts Options) *Enqueuer {
	if opts.DedupWindow == 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.Queue == "" {
		opts.Queue = tasks.QueueSignup
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "resendq:"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Enqueuer{rdb: rdb, client: asynq.NewClientFromRedisClient(rdb), opts: opts, newID: uuid.NewString}
}

// claimScript takes the dedup key for a new task ID unless a task holds it:
// it returns the holder's ID, or nothing when the claim succeeded.
var claimScript = redis.NewScript(`
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
`)

// releaseScript frees the dedup key if it still names the given task ID.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Enqueue validates r and enqueues it. A validation failure is a
// *tasks.ValidationError and touches nothing in Redis.
func (e *Enqueuer) Enqueue(ctx context.Context, r tasks.Resend) (Result, error) {
	r = r.Normalize()
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	r.EnqueuedAt = e.opts.Now().UTC()
	task, err := tasks.NewTask(r)
	if err != nil {
		return Result{}, err
	}
	res := Result{TaskID: e.newID(), Queue: e.opts.Queue, Warnings: r.Warnings()}
	return e.enqueueClaimed(ctx, e.dedupKey(r), e.opts.DedupWindow, task, res)
}

// enqueueClaimed enqueues task as res.TaskID in res.Queue once it holds the
// claim key for the duration hold (no claim when hold is not positive). A key
// another task holds makes the result a duplicate naming that task; a failed
// enqueue gives the claim back, so that trying again can succeed.
func (e *Enqueuer) enqueueClaimed(ctx context.Context, key string, hold time.Duration, task *asynq.Task, res Result) (Result, error) {
	if hold > 0 {
		held, err := claimScript.Run(ctx, e.rdb, []string{key}, res.TaskID, hold.Milliseconds()).Text()
		switch {
		case err == nil:
			res.TaskID, res.Duplicate = held, true
			return res, nil
		case !errors.Is(err, redis.Nil):
			return Result{}, fmt.Errorf("enqueue: dedup check: %w", err)
		}
	}
	if _, err := e.client.EnqueueContext(ctx, task, tasks.Options(res.Queue, res.TaskID)...); err != nil {
		if hold > 0 {
			releaseScript.Run(context.WithoutCancel(ctx), e.rdb, []string{key}, res.TaskID)
		}
		return Result{}, fmt.Errorf("enqueue: %w", err)
	}
	return res, nil
}

// dedupKey is the Redis key that holds the task ID of the latest resend
// for r's project and username (hashed: usernames may be long or odd).
func (e *Enqueuer) dedupKey(r tasks.Resend) string {
	sum := sha256.Sum256([]byte(r.ProjectID + "\x00" + r.Username))
	return e.opts.KeyPrefix + "dedup:" + hex.EncodeToString(sum[:16])
}
