// Package enqueue is the producer side of resendq: the Go API that signup
// services import to ask for a confirmation-email resend, with a dedup
// window so that one user is not sent two emails by a double click or a
// retried request (Enqueuer.Enqueue, queue "signup"), and batch resends of
// many users read from CSV or JSON Lines (Enqueuer.EnqueueBatch, queue
// "bulk"), idempotent per batch ID, keeping the same dedup window, and
// grouped into Redis pipelines.
package enqueue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/rkey"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// DefaultDedupWindow is how long an enqueued resend for a project+username
// makes a new one for the same user return the existing task instead.
const DefaultDedupWindow = 10 * time.Minute

// Options configure an Enqueuer. Zero values are defaults.
type Options struct {
	// DedupWindow: a second resend for the same project and username within
	// this window returns the first task's ID and sends no second email.
	// Default DefaultDedupWindow; negative disables the check
	// (DedupWindowOf turns the command line's "0 disables" into this).
	DedupWindow time.Duration
	// Queue single enqueues go to. Default tasks.QueueSignup.
	Queue string
	// KeyPrefix of resendq's own Redis keys. Default "resendq:".
	KeyPrefix string
	// IdempotencyWindow is how long Once keeps an idempotency key and the
	// answer of its request. Default DefaultIdempotencyWindow.
	IdempotencyWindow time.Duration
	// Clock stamps EnqueuedAt, paces the waits for a concurrent enqueue of
	// the same user and times batches. Default: the real clock.
	Clock clockwork.Clock
	// WaitReplicas, when positive, makes Enqueue, EnqueueAs, EnqueueMany
	// (and so a Grouper) and EnqueueBatch wait, once their writes are done,
	// until that many replicas of the Redis master have them (Redis WAIT),
	// so that a failover right after the enqueue cannot lose them. Fewer
	// within WaitTimeout: the result comes with a *ReplicasError. Default
	// 0: no wait (replication is asynchronous). Not on Redis Cluster.
	WaitReplicas int
	// WaitTimeout bounds the wait for WaitReplicas. Default
	// DefaultWaitTimeout.
	WaitTimeout time.Duration
}

// DedupWindowOf is the Options.DedupWindow of a window given on the
// command line (--dedup-window), where 0 disables the check.
func DedupWindowOf(flag time.Duration) time.Duration {
	if flag == 0 {
		return -1
	}
	return flag
}

// Enqueuer enqueues resend tasks. It is safe for concurrent use.
type Enqueuer struct {
	rdb      redis.UniversalClient
	client   *asynq.Client
	ins      *asynq.Inspector
	outcomes *outcome.Store
	opts     Options
	newID    func() string
	// capturer builds the tasks of EnqueueMany without sending them; one
	// for the Enqueuer, so that asynq registers the queue once, as it does
	// for client.
	capturer *asynq.Client
	// cluster is set on Redis Cluster: the keys of a task, its outcome
	// record and its user's dedup claim lie in different slots, so no
	// script or command takes them together (see batchRun.processCluster
	// and enqueueChunk).
	cluster bool
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
	if opts.DedupWindow > 0 && opts.DedupWindow < time.Millisecond {
		opts.DedupWindow = time.Millisecond // Redis keeps keys for whole milliseconds
	}
	if opts.Queue == "" {
		opts.Queue = tasks.QueueSignup
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "resendq:"
	}
	if opts.IdempotencyWindow <= 0 {
		opts.IdempotencyWindow = DefaultIdempotencyWindow
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = DefaultWaitTimeout
	}
	return &Enqueuer{
		rdb: rdb, client: asynq.NewClientFromRedisClient(rdb), ins: asynq.NewInspectorFromRedisClient(rdb),
		outcomes: outcome.NewStore(rdb, outcome.Options{KeyPrefix: opts.KeyPrefix}), opts: opts, newID: uuid.NewString,
		capturer: asynq.NewClientFromRedisClient(capturingClient{rdb}), cluster: rkey.IsCluster(rdb),
	}
}

// exists counts which of keys exist: one EXISTS on a single node, one per
// key (in one pipeline) on a cluster, where the keys may lie in different
// slots.
func (e *Enqueuer) exists(ctx context.Context, keys ...string) (int64, error) {
	if !e.cluster {
		return e.rdb.Exists(ctx, keys...).Result()
	}
	return e.perKey(ctx, keys, func(p redis.Pipeliner, k string) *redis.IntCmd { return p.Exists(ctx, k) })
}

// del deletes keys and counts those that existed, as exists does.
func (e *Enqueuer) del(ctx context.Context, keys ...string) (int64, error) {
	if !e.cluster {
		return e.rdb.Del(ctx, keys...).Result()
	}
	return e.perKey(ctx, keys, func(p redis.Pipeliner, k string) *redis.IntCmd { return p.Del(ctx, k) })
}

func (e *Enqueuer) perKey(ctx context.Context, keys []string, cmd func(redis.Pipeliner, string) *redis.IntCmd) (int64, error) {
	cmds := make([]*redis.IntCmd, len(keys))
	if _, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = cmd(p, k)
		}
		return nil
	}); err != nil {
		return 0, err
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}

// A claim key names the task that holds it; while that task's enqueue is
// under way it holds "pending:" and the task ID, so that nobody is told of a
// task that may never exist.
const pendingMark = "pending:"

// pendingTTL is how long a pending claim lives at most: an enqueue that
// stopped between its claim and its confirmation (a crash, a lost Redis)
// holds up the user's next resend no longer than this, and not for the
// whole window.
const pendingTTL = 30 * time.Second

// claimScript takes the claim key for a new task ID (marked pending, for at
// most ARGV[2] ms) unless another task holds it; ARGV[3], when set, is a
// holder that may be taken over. It returns the holder, or nothing when the
// claim succeeded.
var claimScript = redis.NewScript(`
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[3] then return held end
redis.call('SET', KEYS[1], 'pending:' .. ARGV[1], 'PX', ARGV[2])
return false
`)

// confirmScript turns a pending claim into one naming its enqueued task,
// held for the window (ARGV[2] ms) from now; also when the pending claim
// has expired meanwhile and nobody took the key. It returns the holder
// when another task took it, else nothing.
var confirmScript = redis.NewScript(`
local held = redis.call('GET', KEYS[1])
if held and held ~= 'pending:' .. ARGV[1] and held ~= ARGV[1] then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
`)

// releaseScript frees a claim that is still pending for the given task ID.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == 'pending:' .. ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// enqueueTimeout bounds the enqueue of a task under a pending claim, well
// within pendingTTL, so that the claim does not expire while the enqueue
// goes on.
const enqueueTimeout = pendingTTL / 3

// pendingWait bounds how long an enqueue waits for a concurrent one of the
// same user to finish, and pendingPoll is how often it looks.
const (
	pendingWait = 5 * time.Second
	pendingPoll = 20 * time.Millisecond
)

// ErrBusy is the error of an enqueue that waited pendingWait for another
// enqueue of the same user to finish, in vain: try again.
var ErrBusy = errors.New("enqueue: another enqueue for this user has not finished; try again")

// claimTries is how many times a claim is confirmed or released (and a
// batch's lock released) before the enqueue gives up on it: a pending claim
// then expires after pendingTTL, a lock after batchLockTTL.
const claimTries = 3

// Enqueue validates r and enqueues it. A validation failure is a
// *tasks.ValidationError and touches nothing in Redis. With
// Options.WaitReplicas, a *ReplicasError comes with a valid result: the
// task is on the master.
func (e *Enqueuer) Enqueue(ctx context.Context, r tasks.Resend) (Result, error) {
	r = r.Normalize()
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	r.EnqueuedAt = e.opts.Clock.Now().UTC()
	task, err := tasks.NewTask(r)
	if err != nil {
		return Result{}, err
	}
	res := Result{TaskID: e.newID(), Queue: e.opts.Queue, Warnings: r.Warnings()}
	res, err = e.enqueueClaimed(ctx, e.dedupKey(r), e.opts.DedupWindow, true, false, task, res)
	if err != nil {
		return res, err
	}
	return res, e.waitReplicas(ctx)
}

// EnqueueAs is Enqueue with the task ID id (see Once): when a task of that
// ID waits, runs or is archived, or its outcome is recorded, the result is
// a duplicate naming it and nothing is enqueued.
func (e *Enqueuer) EnqueueAs(ctx context.Context, r tasks.Resend, id string) (Result, error) {
	r = r.Normalize()
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	r.EnqueuedAt = e.opts.Clock.Now().UTC()
	res, err := e.enqueueOwnID(ctx, r, id)
	if err != nil {
		return res, err
	}
	return res, e.waitReplicas(ctx)
}

// enqueueOwnID enqueues the valid, normalized r as task id unless that task
// exists or existed (its outcome record).
func (e *Enqueuer) enqueueOwnID(ctx context.Context, r tasks.Resend, id string) (Result, error) {
	res := Result{TaskID: id, Queue: e.opts.Queue, Warnings: r.Warnings()}
	n, err := e.exists(ctx, rkey.AsynqTask(res.Queue, id), e.outcomes.RecordKey(id))
	if err != nil {
		return Result{}, fmt.Errorf("enqueue: look for task %s: %w", id, err)
	}
	if n > 0 {
		res.Duplicate = true
		return res, nil
	}
	task, err := tasks.NewTask(r)
	if err != nil {
		return Result{}, err
	}
	res, err = e.enqueueClaimed(ctx, e.dedupKey(r), e.opts.DedupWindow, true, true, task, res)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		// The same request, under way at the same time, enqueued it first.
		return Result{TaskID: id, Queue: e.opts.Queue, Duplicate: true, Warnings: r.Warnings()}, nil
	}
	return res, err
}

// enqueueClaimed enqueues task as res.TaskID in res.Queue once it holds the
// claim key for the duration hold (no claim when hold is not positive). A
// key another task holds makes the result a duplicate naming that task —
// unless reclaimDead is set and that task ended as a dead letter, whose user
// may be sent a new resend at once. A failed enqueue gives the claim back,
// so that trying again can succeed — unless derivedID is set (the task ID
// names the request: a batch row, an idempotency key) and the ID is taken:
// then a request racing with this one enqueued the same task, and the
// claim is that one's to confirm.
func (e *Enqueuer) enqueueClaimed(ctx context.Context, key string, hold time.Duration, reclaimDead, derivedID bool, task *asynq.Task, res Result) (Result, error) {
	if hold <= 0 {
		return res, e.enqueueChecked(ctx, task, res)
	}
	held, err := e.claim(ctx, key, hold, reclaimDead, res.TaskID)
	if err != nil || held != "" {
		res.TaskID, res.Duplicate = held, held != ""
		return res, err
	}
	ectx, cancel := context.WithTimeout(ctx, enqueueTimeout)
	err = e.enqueueChecked(ectx, task, res)
	cancel()
	if derivedID && errors.Is(err, asynq.ErrTaskIDConflict) {
		return Result{}, err
	}
	if err != nil {
		if rerr := e.release(ctx, key, res.TaskID); rerr != nil {
			err = errors.Join(err, fmt.Errorf("enqueue: the user's dedup claim was not released and holds up a new resend for up to %s: %w", pendingTTL, rerr))
		}
		return Result{}, err
	}
	return e.confirmEnqueued(ctx, key, hold, res), nil
}

// confirmEnqueued confirms the claim of the enqueued task res.TaskID on
// key for hold, and returns the enqueue's result: a duplicate naming
// another task when that task took the key after this one's pending claim
// expired (this one is deleted, unless a worker has taken it already).
func (e *Enqueuer) confirmEnqueued(ctx context.Context, key string, hold time.Duration, res Result) Result {
	held, err := e.confirm(ctx, key, res.TaskID, hold)
	switch {
	case err != nil:
		// The task exists; only its hold on the window is lost once the
		// pending claim expires.
		res.Warnings = append(res.Warnings, fmt.Sprintf("the dedup window was not recorded (%v): a repeat for this user after %s may be enqueued again", err, pendingTTL))
	case held != "":
		held = strings.TrimPrefix(held, pendingMark) // its enqueue may be under way still
		if derr := e.ins.DeleteTask(res.Queue, res.TaskID); derr == nil {
			return Result{TaskID: held, Queue: res.Queue, Duplicate: true, Warnings: res.Warnings}
		}
		res.Warnings = append(res.Warnings, fmt.Sprintf("task %s was enqueued for this user while this enqueue was slow, and this one was already taken by a worker: the user may get two emails", held))
	}
	return res
}

// confirm turns the pending claim of task id on key into one held for
// hold, trying again briefly when Redis fails it. It returns the holder
// when another task took the key meanwhile. It runs even when ctx has ended.
func (e *Enqueuer) confirm(ctx context.Context, key, id string, hold time.Duration) (string, error) {
	ctx = context.WithoutCancel(ctx)
	var held string
	err := e.tryAgain(func() error {
		var err error
		held, err = confirmScript.Run(ctx, e.rdb, []string{key}, id, hold.Milliseconds()).Text()
		if errors.Is(err, redis.Nil) {
			held, err = "", nil
		}
		return err
	})
	return held, err
}

// release frees the pending claim of task id on key, trying again briefly
// when Redis fails it. It runs even when ctx has ended.
func (e *Enqueuer) release(ctx context.Context, key, id string) error {
	ctx = context.WithoutCancel(ctx)
	return e.tryAgain(func() error { return releaseScript.Run(ctx, e.rdb, []string{key}, id).Err() })
}

// tryAgain calls fn until it succeeds, claimTries times at most, 50ms and
// 100ms apart on the clock, and returns its last error.
func (e *Enqueuer) tryAgain(fn func() error) error {
	var err error
	for i := range claimTries {
		if i > 0 {
			<-e.opts.Clock.After(time.Duration(i) * 50 * time.Millisecond)
		}
		if err = fn(); err == nil {
			return nil
		}
	}
	return err
}

// claim takes key for id and returns "", or returns the task that holds it,
// waiting while that task's enqueue is still under way.
func (e *Enqueuer) claim(ctx context.Context, key string, hold time.Duration, reclaimDead bool, id string) (string, error) {
	clock := e.opts.Clock
	deadline := clock.Now().Add(pendingWait)
	takeOver := pendingMark + id // our own claim, left pending by a crashed run of the same (batch) task
	pending := min(hold, pendingTTL).Milliseconds()
	for {
		held, err := claimScript.Run(ctx, e.rdb, []string{key}, id, pending, takeOver).Text()
		switch {
		case errors.Is(err, redis.Nil):
			return "", nil
		case err != nil:
			return "", fmt.Errorf("enqueue: dedup check: %w", err)
		case strings.HasPrefix(held, pendingMark):
			if !clock.Now().Before(deadline) {
				return "", ErrBusy
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-clock.After(pendingPoll):
			}
		case reclaimDead && takeOver == pendingMark+id && e.deadLetter(ctx, held):
			takeOver = held
		default:
			return held, nil
		}
	}
}

// deadLetter reports whether task id has ended as a dead letter.
func (e *Enqueuer) deadLetter(ctx context.Context, id string) bool {
	rec, ok, err := e.outcomes.Get(ctx, id)
	return err == nil && ok && rec.Status == outcome.StatusDeadLetter
}

// enqueueChecked enqueues task. asynq's script may have run even when the
// call reports an error (a deadline, a lost reply): then the task exists and
// the enqueue counts as done.
func (e *Enqueuer) enqueueChecked(ctx context.Context, task *asynq.Task, res Result) error {
	_, err := e.client.EnqueueContext(ctx, task, tasks.Options(res.Queue, res.TaskID)...)
	if err == nil {
		return nil
	}
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue: %w", err)
	}
	if _, ierr := e.ins.GetTaskInfo(res.Queue, res.TaskID); ierr == nil {
		return nil
	}
	return fmt.Errorf("enqueue: %w", err)
}

// dedupKey is the Redis key that holds the task ID of the latest resend
// for r's project and username (hashed: usernames may be long or odd).
func (e *Enqueuer) dedupKey(r tasks.Resend) string {
	sum := sha256.Sum256([]byte(r.ProjectID + "\x00" + sameUser(r.Username)))
	return e.opts.KeyPrefix + "dedup:" + hex.EncodeToString(sum[:16])
}

// sameUser is the form of a username under which two spellings are one
// user: email addresses without regard to case (John@x.io and john@x.io).
func sameUser(username string) string {
	if strings.Contains(username, "@") {
		return strings.ToLower(username)
	}
	return username
}
