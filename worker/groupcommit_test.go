package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/resendq/resendq/outcome"
)

// groupOutcomes is a GroupOutcomes in memory that records the groups it
// was given, and fails the records of the tasks in fail.
type groupOutcomes struct {
	*memOutcomes
	groups [][]string // task IDs per FinishAll call
	allErr error      // what FinishAll answers, when set
	fail   map[string]error
	// hold, when set, keeps the first FinishAll call from answering until
	// it is closed; held is closed once that call has begun.
	hold, held chan struct{}
	panics     int // FinishAll calls left that panic
}

func newGroupOutcomes() *groupOutcomes {
	return &groupOutcomes{memOutcomes: newMemOutcomes(clockwork.NewRealClock()), fail: map[string]error{}}
}

func (m *groupOutcomes) FinishAll(ctx context.Context, recs []outcome.Record) ([]outcome.Record, error) {
	m.mu.Lock()
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.TaskID
	}
	m.groups = append(m.groups, ids)
	err := m.allErr
	first := len(m.groups) == 1
	panics := m.panics > 0
	m.panics--
	m.mu.Unlock()
	if first && m.hold != nil {
		close(m.held)
		<-m.hold
	}
	if panics {
		panic("store bug")
	}
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if m.fail[r.TaskID] != nil {
			return nil, fmt.Errorf("%w: record %s is bad", outcome.ErrInvalid, r.TaskID)
		}
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

func (m *groupOutcomes) Finish(ctx context.Context, rec outcome.Record) (outcome.Record, error) {
	if err := m.fail[rec.TaskID]; err != nil {
		return rec, err
	}
	return m.memOutcomes.Finish(ctx, rec)
}

// holdFirstWrite makes the first write of m wait until the returned func is
// called, so that outcomes coming meanwhile queue up behind it.
func (m *groupOutcomes) holdFirstWrite() (release func()) {
	m.hold, m.held = make(chan struct{}), make(chan struct{})
	return func() { close(m.hold) }
}

// finishQueued runs finishOutcome for task-0, holds its write, then runs it
// for task-1 … task-n-1 and lets the write go once they all wait behind it.
// It returns what each task got.
func finishQueued(t *testing.T, h *Handler, out *groupOutcomes, n int) ([]outcome.Record, []error) {
	t.Helper()
	release := out.holdFirstWrite()
	recs, errs := make([]outcome.Record, n), make([]error, n)
	var wg sync.WaitGroup
	finish := func(i int) {
		defer wg.Done()
		rec := outcome.Record{TaskID: fmt.Sprint("task-", i), Status: outcome.StatusSent, Attempts: 1}
		recs[i], errs[i] = h.finishOutcome(context.Background(), rec)
	}
	wg.Add(n)
	go finish(0)
	<-out.held
	for i := 1; i < n; i++ {
		go finish(i)
	}
	waitFor(t, func() bool {
		h.group.mu.Lock()
		defer h.group.mu.Unlock()
		return len(h.group.waiting) == n-1
	}, "the outcomes to queue behind the held write")
	release()
	wg.Wait()
	return recs, errs
}

func TestLoneOutcomeIsWrittenAtOnce(t *testing.T) {
	t.Parallel()
	out := newGroupOutcomes()
	h := &Handler{Outcomes: out}
	rec, err := h.finishOutcome(context.Background(), outcome.Record{TaskID: "t", Status: outcome.StatusSent})
	if err != nil || rec.TaskID != "t" {
		t.Fatal(rec, err)
	}
	if len(out.groups) != 1 || len(out.groups[0]) != 1 || len(out.finished) != 1 {
		t.Errorf("groups %v, %d records", out.groups, len(out.finished))
	}
}

func TestOutcomesComingDuringAWriteShareTheNext(t *testing.T) {
	t.Parallel()
	out := newGroupOutcomes()
	out.rate["task-2"] = outcome.RateState{Calls: 4}
	h := &Handler{Outcomes: out}
	recs, errs := finishQueued(t, h, out, 4)
	for i, rec := range recs {
		want := 1
		if i == 2 {
			want = 5
		}
		if errs[i] != nil || rec.TaskID != fmt.Sprint("task-", i) || rec.Attempts != want {
			t.Errorf("task %d: %+v, %v", i, rec, errs[i])
		}
	}
	if len(out.groups) != 2 || len(out.groups[0]) != 1 || len(out.groups[1]) != 3 || len(out.finished) != 4 {
		t.Errorf("groups %v, %d records; want [task-0] then the other three together", out.groups, len(out.finished))
	}
	// The writer stops once nothing waits.
	waitFor(t, func() bool {
		h.group.mu.Lock()
		defer h.group.mu.Unlock()
		return !h.group.writing && len(h.group.waiting) == 0
	}, "the writer to stop")
}

func TestLongQueueIsWrittenInGroupsOfAtMostMaxGroup(t *testing.T) {
	t.Parallel()
	out := newGroupOutcomes()
	h := &Handler{Outcomes: out}
	n := 2*maxGroup + 3
	_, errs := finishQueued(t, h, out, n)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, b := range out.groups {
		sizes = append(sizes, len(b))
	}
	if fmt.Sprint(sizes) != fmt.Sprint([]int{1, maxGroup, maxGroup, 2}) || len(out.finished) != n {
		t.Errorf("group sizes %v, %d records", sizes, len(out.finished))
	}
	// The next outcome finds no writer and starts one.
	waitFor(t, func() bool {
		h.group.mu.Lock()
		defer h.group.mu.Unlock()
		return !h.group.writing
	}, "the writer to stop")
	if _, err := h.finishOutcome(context.Background(), outcome.Record{TaskID: "late", Status: outcome.StatusSent}); err != nil || len(out.groups) != 5 {
		t.Errorf("late outcome: %v, %d groups", err, len(out.groups))
	}
}

func TestRejectedGroupIsWrittenOneByOne(t *testing.T) {
	t.Parallel()
	out := newGroupOutcomes()
	bad := errors.New("bad record")
	out.fail["task-2"] = bad
	h := &Handler{Outcomes: out}
	recs, errs := finishQueued(t, h, out, 4)
	for i := range recs {
		if (i == 2) != (errs[i] != nil) || i == 2 && !errors.Is(errs[i], bad) {
			t.Errorf("task %d: %v", i, errs[i])
		}
	}
	if len(out.finished) != 3 {
		t.Errorf("%d records written, want the 3 good ones", len(out.finished))
	}
}

func TestFailedGroupFailsEveryTask(t *testing.T) {
	t.Parallel()
	out := newGroupOutcomes()
	down := errors.New("connection refused")
	out.allErr = down
	h := &Handler{Outcomes: out}
	_, errs := finishQueued(t, h, out, 4)
	for i, err := range errs {
		if !errors.Is(err, down) {
			t.Errorf("task %d: %v", i, err)
		}
	}
	if len(out.groups) != 2 {
		t.Errorf("groups %v: a connection error is not tried record by record", out.groups)
	}
}

func TestOutcomesAreWrittenSinglyWithoutGroupOutcomes(t *testing.T) {
	t.Parallel()
	out := newMemOutcomes(clockwork.NewRealClock())
	h := &Handler{Outcomes: out}
	if _, err := h.finishOutcome(context.Background(), outcome.Record{TaskID: "t", Status: outcome.StatusSent}); err != nil {
		t.Fatal(err)
	}
	if len(out.finished) != 1 {
		t.Errorf("%d records", len(out.finished))
	}
}

func TestPanickingWriteFailsItsTasksAndTheNextIsWritten(t *testing.T) {
	t.Parallel()
	out := newGroupOutcomes()
	out.panics = 1
	h := &Handler{Outcomes: out}
	_, errs := finishQueued(t, h, out, 3) // the held first write panics
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "panic") {
		t.Errorf("task 0: %v, want the panic as its error", errs[0])
	}
	if errs[1] != nil || errs[2] != nil {
		t.Errorf("tasks 1, 2: %v, %v; want them written by the next write", errs[1], errs[2])
	}
	if _, err := h.finishOutcome(context.Background(), outcome.Record{TaskID: "late", Status: outcome.StatusSent}); err != nil {
		t.Errorf("after the panic: %v", err)
	}
	if len(out.finished) != 3 {
		t.Errorf("%d records written, want 3", len(out.finished))
	}
}
