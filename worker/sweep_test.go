package worker

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/tasks"
)

// TestLostOfLooksPastTasksArchivedByHand: a task archived by hand (no or an
// old last failure) or a recorded dead letter does not end the look for
// lost ones; a lost one older than the cutoff does.
func TestLostOfLooksPastTasksArchivedByHand(t *testing.T) {
	t.Parallel()
	now := time.Now()
	cutoff := now.Add(-sweepLookback)
	lost := func(id string, at time.Time) *asynq.TaskInfo {
		return &asynq.TaskInfo{ID: id, Type: tasks.TypeResend, LastErr: errLeaseExpired, LastFailedAt: at}
	}
	page := []*asynq.TaskInfo{ // oldest first, as asynq lists them
		lost("old", cutoff.Add(-time.Minute)),
		lost("a", now.Add(-time.Minute)),
		{ID: "by-hand", Type: tasks.TypeResend},
		{ID: "recorded", Type: tasks.TypeResend, LastErr: "gave up", LastFailedAt: cutoff.Add(-time.Hour)},
		{ID: "other-type", Type: "other", LastErr: errLeaseExpired, LastFailedAt: now},
		lost("b", now),
	}
	got, older := lostOf(page, cutoff)
	if len(got) != 2 || got[0].ID != "b" || got[1].ID != "a" || !older {
		ids := []string{}
		for _, t := range got {
			ids = append(ids, t.ID)
		}
		t.Errorf("lostOf = %v, older %v; want [b a], older", ids, older)
	}
	if got, older := lostOf(page[1:], cutoff); len(got) != 2 || older {
		t.Errorf("without the old one: %d lost, older %v; want 2, and look further", len(got), older)
	}
}
