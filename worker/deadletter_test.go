package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// TestDeadLettersPastTheArchiveCapReplayedOnceAndPurged: a batch whose
// project has a wrong callback URL dead-letters more tasks than asynq's
// archive keeps (10,000 a queue); once the cause is fixed, a replay by code
// calls every user exactly once more, a second run of it none, and a purge
// by reason leaves the store and asynq's archive empty alike.
func TestDeadLettersPastTheArchiveCapReplayedOnceAndPurged(t *testing.T) {
	t.Parallel()
	const n = 12_100 // past asynq's archive cap
	p := newPipeline(t, redistest.Start, func(o *Options) { o.Concurrency = 50 })
	p.api.SetDefault(fake.Behavior{Status: 400, Code: "010-012", Description: "Callback URL not found."})
	ctx := context.Background()
	users := make([]string, n)
	bulk := enqueue.New(p.rdb, enqueue.Options{DedupWindow: -1, Queue: tasks.QueueBulk})
	for start := 0; start < n; start += enqueue.MaxMany {
		rs := make([]tasks.Resend, 0, enqueue.MaxMany)
		for i := start; i < min(start+enqueue.MaxMany, n); i++ {
			users[i] = fmt.Sprintf("user%05d@example.com", i)
			rs = append(rs, tasks.Resend{ProjectID: testProject, Username: users[i]})
		}
		items, err := bulk.EnqueueMany(ctx, rs, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			if it.Err != nil {
				t.Fatal(it.Err)
			}
		}
	}
	p.run(t)
	stats := func() outcome.DeadLetterStats {
		st, err := p.store.DeadLetters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitWithin(t, 3*time.Minute, func() bool { return stats().Total == n }, "every task dead-lettered")
	archived := func() int {
		info, err := p.ins.GetQueueInfo(tasks.QueueBulk)
		if err != nil {
			t.Fatal(err)
		}
		return info.Archived
	}
	if a := archived(); a >= n || a < 9_999 {
		t.Fatalf("asynq's archive holds %d, want its cap (9,999 of the %d: asynq trims to under 10,000); the store is the only full list", a, n)
	}
	if st := stats(); st.Open != n || st.ByCode["010-012"].Open != n {
		t.Fatalf("stats of the dead letters: %+v", st)
	}

	// The callback URL is fixed: replay by code.
	p.api.SetDefault(fake.Behavior{})
	replay := enqueue.ReplayOptions{Selection: enqueue.Selection{Filter: outcome.Filter{Code: "010-012"}}}
	sum, err := p.enq.ReplayDeadLetters(ctx, replay)
	if err != nil || sum.Matched != n || sum.Replayed != n {
		t.Fatalf("replay: %+v, %v", sum, err)
	}
	waitWithin(t, 3*time.Minute, func() bool { st, _ := p.store.Stats(ctx); return st.Sent == n }, "every replay sent")
	// Each links to the other: the dead letter to its replay, the replay to it.
	sent, ok, err := p.store.Latest(ctx, testProject, users[0])
	if err != nil || !ok || sent.Status != outcome.StatusSent || sent.ReplayOf == "" {
		t.Fatalf("the replay's record: %+v, %v, %v", sent, ok, err)
	}
	if dl, _, _ := p.store.Get(ctx, sent.ReplayOf); dl.Status != outcome.StatusDeadLetter || dl.ReplayedAs != sent.TaskID || dl.Username != users[0] {
		t.Fatalf("the dead letter it replays: %+v", dl)
	}
	for _, u := range users {
		if c := p.api.Count(u); c != 2 {
			t.Fatalf("%s: %d calls, want 2 (the rejected one and its replay)", u, c)
		}
	}
	if sum, err := p.enq.ReplayDeadLetters(ctx, replay); err != nil || sum.Replayed != 0 || sum.AlreadyReplayed != n {
		t.Fatalf("the same replay again: %+v, %v", sum, err)
	}
	if st := stats(); st.Open != 0 || st.Replayed != n {
		t.Fatalf("stats after the replay: %+v", st)
	}
	if a := archived(); a != 0 {
		t.Fatalf("asynq's archive holds %d after the replay, want none: the store and the archive disagree", a)
	}

	// Purge by reason: the records go, nothing is left in either place.
	purge, err := p.enq.PurgeDeadLetters(ctx, enqueue.PurgeOptions{Selection: enqueue.Selection{Filter: outcome.Filter{Reason: outcome.ReasonRejected}}})
	if err != nil || purge.Matched != n || purge.Purged != n {
		t.Fatalf("purge: %+v, %v", purge, err)
	}
	if st := stats(); st.Total != 0 || st.Replayed != 0 {
		t.Fatalf("stats after the purge: %+v", st)
	}
	if a := archived(); a != 0 {
		t.Fatalf("asynq's archive after the purge: %d", a)
	}
	if total := p.api.Total(); total != 2*n {
		t.Fatalf("the API got %d calls, want %d", total, 2*n)
	}
}
