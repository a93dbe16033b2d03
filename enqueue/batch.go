package enqueue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/rkey"
	"github.com/resendq/resendq/tasks"
)

// Defaults of BatchOptions.
const (
	// DefaultBatchConcurrency is how many rows are in flight at once.
	DefaultBatchConcurrency = 1024
	// DefaultProgressInterval is how often OnProgress is called.
	DefaultProgressInterval = time.Second
)

// BatchOptions configure one batch run. Zero values are defaults.
type BatchOptions struct {
	// BatchID names the batch; required for EnqueueBatch, optional for
	// CheckBatch. Letters, digits, '.', '_' and '-', at most 64 characters,
	// starting with a letter or digit. Running the same batch ID again
	// enqueues only the rows that are neither waiting nor done (and, within
	// the dedup window, whose user got no other resend).
	BatchID string
	// Queue is where the tasks go. Default tasks.QueueBulk.
	Queue string
	// Concurrency is how many rows are in flight at once, in calls of 128
	// rows. Default DefaultBatchConcurrency (1024).
	Concurrency int
	// OnReject is called, in line order and from one goroutine, with every
	// rejected row; its Err says why.
	OnReject func(Row)
	// OnProgress, when set, is called every ProgressInterval with the counts
	// so far, from a goroutine of its own; the final counts are returned.
	OnProgress func(Summary)
	// ProgressInterval is how often OnProgress is called. Default 1s.
	ProgressInterval time.Duration
	// Clock stamps EnqueuedAt, times the run and paces OnProgress. Default:
	// the Enqueuer's clock for EnqueueBatch, the real clock for CheckBatch.
	Clock clockwork.Clock

	oneByOne bool // tests: enqueue every row on its own, as when capturing does not apply
}

// Summary counts what a batch run did with the rows it read: Read = Valid +
// Rejected, and when the run has returned, Valid = Enqueued + AlreadyQueued
// + Failed (a dry run enqueues nothing: its Valid rows are what it would try).
type Summary struct {
	// BatchID is the batch's ID.
	BatchID string `json:"batch_id"`
	// Queue is the queue the tasks went to.
	Queue string `json:"queue"`
	// DryRun is true for CheckBatch: nothing was written to Redis.
	DryRun bool `json:"dry_run"`
	// Read counts the rows read (blank lines are not rows).
	Read int64 `json:"read"`
	// Valid counts the rows that passed validation.
	Valid int64 `json:"valid"`
	// Enqueued counts the tasks this run enqueued.
	Enqueued int64 `json:"enqueued"`
	// AlreadyQueued counts valid rows that needed no new task: a row repeated
	// in the input, a user whose task of this batch is still waiting or
	// already done (an earlier run of the same batch), or a user enqueued
	// another resend within the dedup window.
	AlreadyQueued int64 `json:"already_queued"`
	// Rejected counts rows that were malformed or failed validation.
	Rejected int64 `json:"rejected"`
	// Failed counts valid rows whose enqueue failed (Redis errors): the run
	// stops at the first, and running the batch again picks them up.
	Failed int64 `json:"failed"`
	// LastLine is the line number of the last row read.
	LastLine int64 `json:"last_line"`
	// Interrupted is true when the run stopped early because its context
	// ended (Ctrl-C): every row read was still settled and counted.
	Interrupted bool `json:"interrupted"`
	// Elapsed is how long the run took.
	Elapsed time.Duration `json:"-"`
	// ElapsedSeconds is Elapsed in seconds, for JSON.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// RowsPerSecond is Read / Elapsed.
	RowsPerSecond float64 `json:"rows_per_second"`
}

var batchIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckBatchID reports whether id can name a batch.
func CheckBatchID(id string) error {
	if !batchIDPattern.MatchString(id) {
		return fmt.Errorf("batch ID %q: want 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// ContentBatchID derives a batch ID from the content of r ("file-" and 20
// hex digits of its SHA-256), so that running the same file again is the
// same batch. An edited file is a new batch: pass an explicit ID to resume
// one after fixing rows.
func ContentBatchID(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", fmt.Errorf("hash the input: %w", err)
	}
	return "file-" + hex.EncodeToString(h.Sum(nil))[:20], nil
}

// BatchTaskID is the task ID of r's row in a batch: the same for every row of
// the batch with the same project and user (email addresses without regard
// to case, as the dedup window compares them), so that a repeated row or a
// second run of the batch finds the first one's task.
func BatchTaskID(batchID string, r tasks.Resend) string {
	sum := sha256.Sum256([]byte(r.ProjectID + "\x00" + sameUser(r.Username)))
	return batchID + ":" + hex.EncodeToString(sum[:12])
}

// EnqueueBatch validates every row of src and enqueues the valid ones on
// opts.Queue (default "bulk"), with a task ID derived from the batch ID,
// project and username (BatchTaskID). A row gets no new task when its task
// is still waiting (asynq holds the ID) or is already done (its outcome
// record exists), so running a batch again, after a crash or by mistake,
// enqueues only what is missing and sends nobody a second email. Rows are
// written batchChunk at a time (see batchscript.go).
//
// Only one run of a batch ID may be under way at once: a second one gets a
// *BatchBusyError. When ctx ends, reading stops, the rows already read are
// settled, and the summary comes back with Interrupted set and ctx's error.
// A Redis failure stops the run too; the summary counts the failed rows.
// With Options.WaitReplicas, a run that enqueued rows waits for the
// replicas at its end, and a *ReplicasError says they fell short.
func (e *Enqueuer) EnqueueBatch(ctx context.Context, src RowSource, opts BatchOptions) (Summary, error) {
	if err := CheckBatchID(opts.BatchID); err != nil {
		return Summary{}, err
	}
	if opts.Clock == nil {
		opts.Clock = e.opts.Clock
	}
	b := newBatchRun(opts, false)
	unlock, err := e.lockBatch(ctx, b.opts.BatchID, b.fail)
	if err != nil {
		return b.summary(), err
	}
	b.e = e
	b.capturer = e.capturer
	b.client = asynq.NewClientFromRedisClient(e.rdb)
	sum, err := b.run(ctx, src)
	if err == nil && sum.Enqueued+sum.AlreadyQueued > 0 {
		err = e.waitReplicas(ctx)
	}
	return sum, errors.Join(err, unlock())
}

// CheckBatch validates and counts the rows of src like EnqueueBatch without
// touching Redis (a dry run). The batch ID is optional.
func CheckBatch(ctx context.Context, src RowSource, opts BatchOptions) (Summary, error) {
	if opts.BatchID != "" {
		if err := CheckBatchID(opts.BatchID); err != nil {
			return Summary{}, err
		}
	}
	return newBatchRun(opts, true).run(ctx, src)
}

// batchChunk is how many rows go to Redis in one script call.
const batchChunk = 128

// batchJob is one valid row on its way to Redis.
type batchJob struct {
	r     tasks.Resend
	id    string
	claim string // the user's dedup claim key
}

// batchRun is the state of one EnqueueBatch or CheckBatch call.
type batchRun struct {
	opts   BatchOptions
	dryRun bool
	start  time.Time

	e        *Enqueuer
	capturer *asynq.Client // builds tasks without sending them
	client   *asynq.Client // sends them, when capturing does not apply

	read, valid, enqueued, already, rejected, failed, lastLine atomic.Int64
	interrupted                                                atomic.Bool

	stopOnce sync.Once
	stop     chan struct{}
	errMu    sync.Mutex
	err      error // the first failure

	inflightMu sync.Mutex
	inflight   map[string]struct{} // task IDs of rows enqueued one by one
}

func newBatchRun(opts BatchOptions, dryRun bool) *batchRun {
	if opts.Queue == "" {
		opts.Queue = tasks.QueueBulk
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultBatchConcurrency
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = DefaultProgressInterval
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	return &batchRun{
		opts: opts, dryRun: dryRun, start: opts.Clock.Now(),
		stop: make(chan struct{}), inflight: make(map[string]struct{}),
	}
}

func (b *batchRun) run(ctx context.Context, src RowSource) (Summary, error) {
	done := make(chan struct{})
	var progress sync.WaitGroup
	if b.opts.OnProgress != nil {
		progress.Go(func() { b.reportProgress(done) })
	}
	var chunks chan []batchJob
	var workers sync.WaitGroup
	if !b.dryRun {
		n := max(1, b.opts.Concurrency/batchChunk)
		chunks = make(chan []batchJob, n)
		for range n {
			workers.Go(func() {
				for c := range chunks {
					b.process(c)
				}
			})
		}
	}
	readErr := b.feed(ctx, src, chunks)
	if chunks != nil {
		close(chunks)
	}
	workers.Wait()
	close(done)
	progress.Wait()

	sum := b.summary()
	b.errMu.Lock()
	err := errors.Join(readErr, b.err)
	b.errMu.Unlock()
	if sum.Interrupted {
		err = errors.Join(fmt.Errorf("batch interrupted after line %d: %w", sum.LastLine, context.Cause(ctx)), err)
	}
	return sum, err
}

// feed reads src, validates every row and hands the valid ones to the
// workers in chunks, until the input ends, ctx ends or a chunk fails.
func (b *batchRun) feed(ctx context.Context, src RowSource, chunks chan<- []batchJob) error {
	chunkSize := min(batchChunk, b.opts.Concurrency)
	var chunk []batchJob
	flush := func() {
		if len(chunk) > 0 {
			chunks <- chunk
			chunk = nil
		}
	}
	defer flush()
	for {
		select {
		case <-ctx.Done():
			b.interrupted.Store(true)
			return nil
		case <-b.stop:
			return nil
		default:
		}
		row, err := src.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the input after line %d: %w", b.lastLine.Load(), err)
		}
		b.read.Add(1)
		b.lastLine.Store(int64(row.Line))
		r := row.Resend.Normalize()
		if row.Err == nil {
			row.Err = r.Validate()
		}
		if row.Err != nil {
			b.rejected.Add(1)
			if b.opts.OnReject != nil {
				b.opts.OnReject(row)
			}
			continue
		}
		b.valid.Add(1)
		if chunks == nil {
			continue
		}
		r.BatchID = b.opts.BatchID
		r.EnqueuedAt = b.opts.Clock.Now().UTC()
		if chunk == nil {
			chunk = make([]batchJob, 0, chunkSize)
		}
		chunk = append(chunk, batchJob{r: r, id: BatchTaskID(b.opts.BatchID, r), claim: b.e.dedupKey(r)})
		if len(chunk) == chunkSize {
			flush()
		}
	}
}

// process settles a chunk of valid rows, each enqueued, already queued or
// failed: all in one call of batchEnqueueScript, or one by one when asynq's
// enqueue call could not be captured. On Redis Cluster it is
// processCluster's.
func (b *batchRun) process(chunk []batchJob) {
	if b.e.cluster {
		b.processCluster(chunk)
		return
	}
	rows := make([]scriptRow, 0, len(chunk))
	jobs := make([]batchJob, 0, len(chunk))
	var single []batchJob
	for _, j := range chunk {
		task, err := tasks.NewTask(j.r)
		if err != nil {
			b.settle(0, err, j.id)
			continue
		}
		call, err := capture(b.capturer, task, b.opts.Queue, j.id)
		if err != nil || !call.isAsynqEnqueue() || b.opts.oneByOne {
			single = append(single, j)
			continue
		}
		rows = append(rows, scriptRow{call: call, id: j.id, claim: j.claim})
		jobs = append(jobs, j)
	}
	if len(rows) > 0 {
		// Rows read are settled even after Ctrl-C: no cancelable context.
		replies, err := b.e.runBatchScript(context.Background(), rows)
		for i, j := range jobs {
			var n int64
			if err == nil {
				n = replies[i]
			}
			if n == replyPending {
				single = append(single, j)
				continue
			}
			b.settle(int(n), err, j.id)
		}
	}
	for _, j := range single {
		b.processSingle(j)
	}
}

// processCluster settles a chunk on Redis Cluster, where a row's task,
// outcome record and dedup claim lie in different slots that no script
// takes together. The rows take the steps of Enqueue, each step one
// pipelined round trip for the whole chunk (its commands sent to every
// master in parallel), each command in one slot: whether the task or its
// record exists, the users' dedup claims, asynq's enqueue script, and the
// claims' confirmation. A row cut short at any step is settled by running
// the batch again, as on a single node. A row these steps do not settle
// alone (another enqueue of its user under way, or its user's claim held by
// a dead letter, which it may take over) then goes Enqueue's own way.
func (b *batchRun) processCluster(chunk []batchJob) {
	ctx := context.Background()
	e := b.e
	var rows, alone []batchJob
	for _, j := range chunk {
		if b.claim(j.id) {
			rows = append(rows, j)
		} else {
			b.already.Add(1) // the same user is in flight from an earlier line
		}
	}
	held := rows
	defer func() {
		for _, j := range held {
			b.unclaim(j.id)
		}
		for _, j := range alone {
			b.processSingle(j)
		}
	}()

	// Whether each task or its outcome record exists.
	exists := make([][2]*redis.IntCmd, len(rows))
	_, _ = e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, j := range rows {
			exists[i] = [2]*redis.IntCmd{p.Exists(ctx, rkey.AsynqTask(b.opts.Queue, j.id)), p.Exists(ctx, e.outcomes.RecordKey(j.id))}
		}
		return nil
	})
	type step struct {
		j    batchJob
		call scriptCall
	}
	var steps []step
	for i, j := range rows {
		n, err := exists[i][0].Val()+exists[i][1].Val(), errors.Join(exists[i][0].Err(), exists[i][1].Err())
		if err != nil || n > 0 {
			b.settle(replyAlready, err, j.id)
			continue
		}
		task, err := tasks.NewTask(j.r)
		if err == nil {
			var call scriptCall
			if call, err = capture(b.capturer, task, b.opts.Queue, j.id); err == nil && !call.isAsynqEnqueue() {
				alone = append(alone, j)
				continue
			}
			steps = append(steps, step{j, call})
		}
		if err != nil {
			b.settle(replyEnqueued, err, j.id)
		}
	}

	// The users' dedup claims, marked pending.
	hold := e.opts.DedupWindow
	if hold > 0 && len(steps) > 0 {
		pending := min(hold, pendingTTL).Milliseconds()
		replies := rkey.RunScripts(ctx, e.rdb, claimScript, len(steps), func(i int) ([]string, []any) {
			return []string{steps[i].j.claim}, []any{steps[i].j.id, pending, pendingMark + steps[i].j.id}
		})
		claimed := steps[:0:0]
		for i, st := range steps {
			holder, err := replies[i].Text()
			switch {
			case errors.Is(err, redis.Nil):
				claimed = append(claimed, st)
			case err != nil:
				b.settle(replyEnqueued, fmt.Errorf("dedup check: %w", err), st.j.id)
			case strings.HasPrefix(holder, pendingMark) || e.deadLetter(ctx, holder):
				alone = append(alone, st.j)
			default:
				b.settle(replyAlready, nil, st.j.id)
			}
		}
		steps = claimed
	}
	if len(steps) == 0 {
		return
	}

	// asynq's enqueue script, as asynq's Client would run it.
	replies := rkey.RunScripts(ctx, e.rdb, asynqEnqueueScript, len(steps), func(i int) ([]string, []any) {
		return steps[i].call.keys, steps[i].call.args
	})
	enqueued, failed := steps[:0:0], steps[:0:0]
	for i, st := range steps {
		n, err := replies[i].Int64()
		switch {
		case err != nil:
			failed = append(failed, st)
			b.settle(replyEnqueued, err, st.j.id)
		case n == 0:
			b.settle(replyAlready, nil, st.j.id) // an earlier run's task: the claim is its to confirm
		default:
			enqueued = append(enqueued, st)
		}
	}
	if hold <= 0 {
		for _, st := range enqueued {
			b.settle(replyEnqueued, nil, st.j.id)
		}
		return
	}
	if len(failed) > 0 {
		// Given back so that the next run can take them; else they expire.
		rkey.RunScripts(ctx, e.rdb, releaseScript, len(failed), func(i int) ([]string, []any) {
			return []string{failed[i].j.claim}, []any{failed[i].j.id}
		})
	}
	if len(enqueued) == 0 {
		return
	}

	// The claims confirmed for the window.
	replies = rkey.RunScripts(ctx, e.rdb, confirmScript, len(enqueued), func(i int) ([]string, []any) {
		return []string{enqueued[i].j.claim}, []any{enqueued[i].j.id, hold.Milliseconds()}
	})
	for i, st := range enqueued {
		if holder, err := replies[i].Text(); err == nil && holder != "" {
			// Another task took the claim after this one's pending claim
			// expired: as Enqueue does, this one is deleted if it can be.
			if res := e.confirmEnqueued(ctx, st.j.claim, hold, Result{TaskID: st.j.id, Queue: b.opts.Queue}); res.Duplicate {
				b.settle(replyAlready, nil, st.j.id)
				continue
			}
		}
		b.settle(replyEnqueued, nil, st.j.id)
	}
}

// asynqEnqueueScript is asynq's enqueue script, run as asynq runs it.
var asynqEnqueueScript = redis.NewScript(asynqEnqueueSource)

// settle counts one row by the script's reply n or its error.
func (b *batchRun) settle(n int, err error, id string) {
	switch {
	case err != nil:
		b.failed.Add(1)
		b.fail(fmt.Errorf("enqueue task %s: %w", id, err))
	case n == replyEnqueued:
		b.enqueued.Add(1)
	case n == replyAlready:
		b.already.Add(1)
	default:
		b.failed.Add(1)
		b.fail(fmt.Errorf("enqueue task %s: unexpected reply %d", id, n))
	}
}

// processSingle enqueues j's task, unless it is waiting or done, with
// asynq's own call. The check reads both keys in one command: asynq deletes
// a task only after the worker wrote its outcome record, so at every
// instant one of the two exists for a task that was ever enqueued.
func (b *batchRun) processSingle(j batchJob) {
	if !b.claim(j.id) {
		b.already.Add(1) // the same user is in flight from an earlier line
		return
	}
	defer b.unclaim(j.id)
	ctx := context.Background()
	n, err := b.e.exists(ctx, rkey.AsynqTask(b.opts.Queue, j.id), b.e.outcomes.RecordKey(j.id))
	if err != nil || n > 0 {
		b.settle(replyAlready, err, j.id)
		return
	}
	task, err := tasks.NewTask(j.r)
	if err != nil {
		b.settle(replyEnqueued, err, j.id)
		return
	}
	// As Enqueue does: the user's dedup claim first (a dead letter's may be
	// taken over), then asynq's call.
	res, err := b.e.enqueueClaimed(ctx, j.claim, b.e.opts.DedupWindow, true, true, task, Result{TaskID: j.id, Queue: b.opts.Queue})
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict), err == nil && res.Duplicate:
		b.settle(replyAlready, nil, j.id)
	default:
		b.settle(replyEnqueued, err, j.id)
	}
}

// claim marks a task ID in flight; false if it already is.
func (b *batchRun) claim(id string) bool {
	b.inflightMu.Lock()
	defer b.inflightMu.Unlock()
	if _, busy := b.inflight[id]; busy {
		return false
	}
	b.inflight[id] = struct{}{}
	return true
}

func (b *batchRun) unclaim(id string) {
	b.inflightMu.Lock()
	delete(b.inflight, id)
	b.inflightMu.Unlock()
}

// fail records the run's first failure and stops reading.
func (b *batchRun) fail(err error) {
	b.errMu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.errMu.Unlock()
	b.stopOnce.Do(func() { close(b.stop) })
}

func (b *batchRun) reportProgress(done <-chan struct{}) {
	t := b.opts.Clock.NewTicker(b.opts.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.Chan():
			b.opts.OnProgress(b.summary())
		}
	}
}

// summary returns the counts so far.
func (b *batchRun) summary() Summary {
	s := Summary{
		BatchID: b.opts.BatchID, Queue: b.opts.Queue, DryRun: b.dryRun,
		Read: b.read.Load(), Valid: b.valid.Load(), Enqueued: b.enqueued.Load(),
		AlreadyQueued: b.already.Load(), Rejected: b.rejected.Load(), Failed: b.failed.Load(),
		LastLine: b.lastLine.Load(), Interrupted: b.interrupted.Load(), Elapsed: b.opts.Clock.Since(b.start),
	}
	s.ElapsedSeconds = s.Elapsed.Seconds()
	if s.ElapsedSeconds > 0 {
		s.RowsPerSecond = float64(s.Read) / s.ElapsedSeconds
	}
	return s
}
