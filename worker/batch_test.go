package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/resendq/resendq/outcome"
)

// batchOutcomes is a BatchOutcomes in memory that records the batches it
// was given, and fails the records of the tasks in fail.
type batchOutcomes struct {
	memOutcomes
	batches [][]string // task IDs per FinishAll call
	allErr  error      // what FinishAll answers, when set
	fail    map[string]error
}

func newBatchOutcomes() *batchOutcomes {
	return &batchOutcomes{memOutcomes: memOutcomes{now: time.Now, rate: map[string]outcome.RateState{}}, fail: map[string]error{}}
}

func (m *batchOutcomes) FinishAll(ctx context.Context, recs []outcome.Record) ([]outcome.Record, error) {
	m.mu.Lock()
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.TaskID
	}
	m.batches = append(m.batches, ids)
	err := m.allErr
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := make([]outcome.Record, len(recs))
	for i, r := range recs {
		stored, err := m.Finish(ctx, r)
		if err != nil {
			return nil, err
		}
		out[i] = stored
	}
	return out, nil
}

func (m *batchOutcomes) Finish(ctx context.Context, rec outcome.Record) (outcome.Record, error) {
	if err := m.fail[rec.TaskID]; err != nil {
		return rec, err
	}
	return m.memOutcomes.Finish(ctx, rec)
}

// finishAll runs finishOutcome for n tasks at once and returns what each got.
func finishAll(h *Handler, n int) ([]outcome.Record, []error) {
	recs, errs := make([]outcome.Record, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := outcome.Record{TaskID: fmt.Sprint("task-", i), Status: outcome.StatusSent, Attempts: 1}
			recs[i], errs[i] = h.finishOutcome(context.Background(), rec)
		}()
	}
	wg.Wait()
	return recs, errs
}

func TestOutcomesOfAllSlotsAreWrittenTogether(t *testing.T) {
	t.Parallel()
	out := newBatchOutcomes()
	out.rate["task-2"] = outcome.RateState{Calls: 4}
	// Never by the timer: only the fourth outcome, which fills every slot,
	// can write the batch.
	h := &Handler{Outcomes: out, BatchWait: time.Hour, slots: 4}
	recs, errs := finishAll(h, 4)
	for i, rec := range recs {
		want := 1
		if i == 2 {
			want = 5
		}
		if errs[i] != nil || rec.TaskID != fmt.Sprint("task-", i) || rec.Attempts != want {
			t.Errorf("task %d: %+v, %v", i, rec, errs[i])
		}
	}
	if len(out.batches) != 1 || len(out.batches[0]) != 4 || len(out.finished) != 4 {
		t.Errorf("batches %v, %d records", out.batches, len(out.finished))
	}
}

func TestOutcomeWaitsForTheTimerWhileSlotsAreFree(t *testing.T) {
	t.Parallel()
	out := newBatchOutcomes()
	h := &Handler{Outcomes: out, BatchWait: time.Millisecond, slots: 50}
	_, errs := finishAll(h, 3)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range out.batches {
		n += len(b)
	}
	if n != 3 || len(out.finished) != 3 {
		t.Errorf("batches %v, %d records", out.batches, len(out.finished))
	}
}

func TestOutcomeIsWrittenAtOnceWhenSlotsRunOut(t *testing.T) {
	t.Parallel()
	out := newBatchOutcomes()
	h := &Handler{Outcomes: out, BatchWait: time.Hour, slots: 4}
	h.inflight.Store(3) // with this task, every slot is taken
	if _, err := h.finishOutcome(context.Background(), outcome.Record{TaskID: "t", Status: outcome.StatusSent}); err != nil {
		t.Fatal(err)
	}
	if len(out.batches) != 1 {
		t.Errorf("batches %v", out.batches)
	}
}

func TestRejectedBatchIsWrittenOneByOne(t *testing.T) {
	t.Parallel()
	out := newBatchOutcomes()
	out.allErr = fmt.Errorf("%w: one record is bad", outcome.ErrInvalid)
	bad := errors.New("bad record")
	out.fail["task-1"] = bad
	h := &Handler{Outcomes: out, BatchWait: time.Hour, slots: 3}
	recs, errs := finishAll(h, 3)
	for i := range recs {
		if (i == 1) != (errs[i] != nil) || i == 1 && !errors.Is(errs[i], bad) {
			t.Errorf("task %d: %v", i, errs[i])
		}
	}
	if len(out.finished) != 2 {
		t.Errorf("%d records written, want the 2 good ones", len(out.finished))
	}
}

func TestFailedBatchFailsEveryTask(t *testing.T) {
	t.Parallel()
	out := newBatchOutcomes()
	down := errors.New("connection refused")
	out.allErr = down
	h := &Handler{Outcomes: out, BatchWait: time.Hour, slots: 3}
	_, errs := finishAll(h, 3)
	for i, err := range errs {
		if !errors.Is(err, down) {
			t.Errorf("task %d: %v", i, err)
		}
	}
	if len(out.batches) != 1 {
		t.Errorf("batches %v: a connection error is not tried record by record", out.batches)
	}
}

func TestOutcomesAreNotBatchedWithoutSlotsOrWait(t *testing.T) {
	t.Parallel()
	for name, h := range map[string]*Handler{
		"not run by NewServer": {},
		"one slot":             {slots: 1},
		"negative wait":        {slots: 10, BatchWait: -1},
	} {
		out := newBatchOutcomes()
		h.Outcomes = out
		if _, err := h.finishOutcome(context.Background(), outcome.Record{TaskID: "t", Status: outcome.StatusSent}); err != nil {
			t.Fatal(err)
		}
		if len(out.batches) != 0 || len(out.finished) != 1 {
			t.Errorf("%s: batches %v, %d records", name, out.batches, len(out.finished))
		}
	}
}
