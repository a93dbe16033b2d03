package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/outcome"
)

// BatchOutcomes is implemented by Outcomes that can write several final
// outcomes at once, in one round trip (*outcome.Store). The handler then
// groups the outcomes of tasks that finish close together; see
// Handler.BatchWait.
type BatchOutcomes interface {
	FinishAll(ctx context.Context, recs []outcome.Record) ([]outcome.Record, error)
}

// Defaults and limits of outcome batches.
const (
	// DefaultBatchWait is Handler.BatchWait when it is zero.
	DefaultBatchWait = 5 * time.Millisecond
	// maxBatch is the most outcomes written together.
	maxBatch = 64
	// batchWriteTimeout bounds one write of a batch.
	batchWriteTimeout = 5 * time.Second
)

// outcomeBatch collects the final outcomes waiting to be written together.
type outcomeBatch struct {
	mu      sync.Mutex
	waiting []*waitingOutcome
	gen     uint64 // counts the batches taken, so that a late timer leaves a newer batch alone
}

// waitingOutcome is one task's final outcome on its way to Redis.
type waitingOutcome struct {
	rec  outcome.Record // the record to write, then as stored
	err  error
	done chan struct{} // closed once rec and err are final
}

// finishOutcome writes rec like Outcomes.Finish and returns it as stored.
// When Outcomes can write several outcomes at once, rec waits up to
// BatchWait for the outcomes of other tasks, and they are written together.
// A task waiting here holds one of the server's slots (Concurrency), so the
// batch is written at once when nearly every slot is taken: then the slots,
// not the round trips, bound the throughput, and waiting would lower it. The
// task still ends only once its own record is written.
func (h *Handler) finishOutcome(ctx context.Context, rec outcome.Record) (outcome.Record, error) {
	bo, ok := h.Outcomes.(BatchOutcomes)
	limit := min(h.slots, maxBatch)
	if !ok || h.BatchWait < 0 || limit <= 1 {
		return h.Outcomes.Finish(ctx, rec)
	}
	w := &waitingOutcome{rec: rec, done: make(chan struct{})}
	b := &h.batch
	b.mu.Lock()
	b.waiting = append(b.waiting, w)
	var full []*waitingOutcome
	switch {
	case len(b.waiting) >= limit || int(h.inflight.Load())+1 >= h.slots:
		full = b.take()
	case len(b.waiting) == 1:
		gen := b.gen
		time.AfterFunc(h.batchWait(), func() { h.flushBatch(bo, gen) })
	}
	b.mu.Unlock()
	if full != nil {
		h.writeBatch(bo, full)
	}
	select {
	case <-w.done:
		return w.rec, w.err
	case <-ctx.Done():
		// The write may still happen; writing the record again is safe.
		return rec, ctx.Err()
	}
}

// take removes and returns the waiting outcomes; b.mu is held.
func (b *outcomeBatch) take() []*waitingOutcome {
	ws := b.waiting
	b.waiting = nil
	b.gen++
	return ws
}

// flushBatch writes the batch that was waiting when its timer was set, if
// it has not been written already.
func (h *Handler) flushBatch(bo BatchOutcomes, gen uint64) {
	b := &h.batch
	b.mu.Lock()
	if b.gen != gen || len(b.waiting) == 0 {
		b.mu.Unlock()
		return
	}
	ws := b.take()
	b.mu.Unlock()
	h.writeBatch(bo, ws)
}

// writeBatch writes ws in one round trip and hands each its result. When
// Redis or the store rejects the batch, each outcome is written on its own,
// so that one record that cannot be written fails only its own task.
func (h *Handler) writeBatch(bo BatchOutcomes, ws []*waitingOutcome) {
	ctx, cancel := context.WithTimeout(context.Background(), batchWriteTimeout)
	defer cancel()
	recs := make([]outcome.Record, len(ws))
	for i, w := range ws {
		recs[i] = w.rec
	}
	stored, err := bo.FinishAll(ctx, recs)
	var rerr redis.Error
	if err != nil && len(ws) > 1 && (errors.As(err, &rerr) || errors.Is(err, outcome.ErrInvalid)) {
		for _, w := range ws {
			if rec, err := h.Outcomes.Finish(ctx, w.rec); err != nil {
				w.err = err
			} else {
				w.rec = rec
			}
			close(w.done)
		}
		return
	}
	for i, w := range ws {
		if err != nil {
			w.err = err
		} else {
			w.rec = stored[i]
		}
		close(w.done)
	}
}

func (h *Handler) batchWait() time.Duration {
	if h.BatchWait > 0 {
		return h.BatchWait
	}
	return DefaultBatchWait
}
