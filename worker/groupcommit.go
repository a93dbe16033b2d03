package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/rkey"
	"github.com/resendq/resendq/outcome"
)

// GroupOutcomes is implemented by Outcomes that can write several final
// outcomes at once, in one round trip (*outcome.Store). The handler then
// groups the outcomes of tasks that finish close together; see
// finishOutcome.
type GroupOutcomes interface {
	FinishAll(ctx context.Context, recs []outcome.Record) ([]outcome.Record, error)
}

// Limits of outcome groups.
const (
	// maxGroup is the most outcomes written together.
	maxGroup = 64
	// groupWriteTimeout bounds one write of a group.
	groupWriteTimeout = 5 * time.Second
)

// outcomeGroup collects the final outcomes waiting to be written together.
type outcomeGroup struct {
	mu      sync.Mutex
	waiting []*waitingOutcome
	writing bool // a write is under way
}

// waitingOutcome is one task's final outcome on its way to Redis.
type waitingOutcome struct {
	rec   outcome.Record // the record to write, then as stored
	err   error
	done  chan struct{} // closed once rec and err are final
	ended bool          // done is closed; only the writer reads and sets it
	// ackKey, when set, is the task's key in the ack gate: nobody waits
	// on done; the writer logs the outcome and releases the task's ack
	// (finishLater).
	ackKey string
}

// finishOutcome writes rec like Outcomes.Finish and returns it as stored.
// When Outcomes can write several outcomes at once, the outcomes of tasks
// that finish close together are written together (group commit): a record
// is written at once when no write is under way, and otherwise joins the
// next write, which starts as soon as the one under way is done. So a record
// waits for at most the write ahead of it (more only past maxGroup waiting
// records), and under load one script call carries many records. The task
// still ends only once its own record is written.
func (h *Handler) finishOutcome(ctx context.Context, rec outcome.Record) (outcome.Record, error) {
	bo, ok := h.Outcomes.(GroupOutcomes)
	if !ok {
		return h.Outcomes.Finish(ctx, rec)
	}
	w := &waitingOutcome{rec: rec, done: make(chan struct{})}
	b := &h.group
	if b.add(w) {
		// This task writes the group it is in, and hands the writes of
		// records that came meanwhile to a goroutine of their own.
		h.writeGroup(bo, b.next())
		if more := b.next(); more != nil {
			go h.writeGroups(bo, more)
		}
	}
	select {
	case <-w.done:
		return w.rec, w.err
	case <-ctx.Done():
		// The write may still happen; writing the record again is safe.
		return rec, ctx.Err()
	}
}

// finishLater writes the sent outcome rec after the handler has returned:
// it joins the next group write (a writer of its own starts when none is
// under way), and asynq's ack of the task waits in h.acks until the write
// has ended. A group write that fails leaves the record to storeOutcome's
// tries, as when the handler waits. It reports false, and does nothing,
// when h.acks holds its limit: the handler then waits for the write.
func (h *Handler) finishLater(bo GroupOutcomes, rec outcome.Record) bool {
	key := rkey.AsynqTask(rec.Queue, rec.TaskID)
	if !h.acks.hold(key) {
		return false
	}
	w := &waitingOutcome{rec: rec, done: make(chan struct{}), ackKey: key}
	b := &h.group
	if b.add(w) {
		go h.writeGroups(bo, b.next())
	}
	return true
}

// writeGroups writes ws, then the groups that wait after it, until none
// waits.
func (h *Handler) writeGroups(bo GroupOutcomes, ws []*waitingOutcome) {
	for ; ws != nil; ws = h.group.next() {
		h.writeGroup(bo, ws)
	}
}

// ended finishes the outcomes of ws written later (finishLater): the
// written ones are logged and their acks run together; each failed one
// goes on trying on its own.
func (h *Handler) ended(ws []*waitingOutcome) {
	var keys []string
	for _, w := range ws {
		if w.ackKey == "" {
			continue
		}
		if w.err != nil {
			go func() {
				stored, err := h.storeOutcome(context.Background(), w.rec)
				_ = h.finished(w.rec, stored, err, nil)
				h.acks.releaseAll([]string{w.ackKey})
			}()
			continue
		}
		_ = h.finished(w.rec, w.rec, nil, nil)
		keys = append(keys, w.ackKey)
	}
	if len(keys) > 0 {
		go h.acks.releaseAll(keys)
	}
}

// add queues w for the next write and reports whether no write was under
// way: then the caller starts one.
func (b *outcomeGroup) add(w *waitingOutcome) (lead bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiting = append(b.waiting, w)
	lead = !b.writing
	b.writing = true
	return lead
}

// next takes up to maxGroup waiting outcomes, oldest first. When none is
// waiting it returns nil, and the next outcome to come starts a write.
func (b *outcomeGroup) next() []*waitingOutcome {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.waiting), maxGroup)
	if n == 0 {
		b.writing = false
		return nil
	}
	ws := b.waiting[:n:n]
	b.waiting = b.waiting[n:]
	return ws
}

// writeGroup writes ws in one round trip and hands each its result. When
// Redis or the store rejects the group, each outcome is written on its own,
// so that one record that cannot be written fails only its own task. Every
// outcome gets its result, even if the store panics.
func (h *Handler) writeGroup(bo GroupOutcomes, ws []*waitingOutcome) {
	defer h.ended(ws)
	defer func() {
		if p := recover(); p != nil {
			err := fmt.Errorf("outcome write: panic: %v", p)
			for _, w := range ws {
				w.end(w.rec, err)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), groupWriteTimeout)
	defer cancel()
	recs := make([]outcome.Record, len(ws))
	for i, w := range ws {
		recs[i] = w.rec
	}
	stored, err := bo.FinishAll(ctx, recs)
	if err == nil && len(stored) != len(ws) {
		err = fmt.Errorf("outcome write: %d records stored for %d", len(stored), len(ws))
	}
	var rerr redis.Error
	if err != nil && len(ws) > 1 && (errors.As(err, &rerr) || errors.Is(err, outcome.ErrInvalid)) {
		for _, w := range ws {
			ctx, cancel := context.WithTimeout(context.Background(), groupWriteTimeout)
			w.end(h.Outcomes.Finish(ctx, w.rec))
			cancel()
		}
		return
	}
	for i, w := range ws {
		if err != nil {
			w.end(w.rec, err)
		} else {
			w.end(stored[i], nil)
		}
	}
}

// end hands the outcome its stored record or error, once.
func (w *waitingOutcome) end(rec outcome.Record, err error) {
	if w.ended {
		return
	}
	w.ended = true
	if err != nil {
		w.err = err
	} else {
		w.rec = rec
	}
	close(w.done)
}
