package outcome

import (
	"reflect"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
)

func TestMarkReplayedSplitsOpenFromReplayed(t *testing.T) {
	t.Parallel()
	for _, be := range []struct {
		name string
		b    func(t *testing.T) *bundle
	}{{"redis", func(t *testing.T) *bundle { return setup(t) }}, {"embedded", embedded}} {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			b := be.b(t)
			d1 := b.finish(t, dead("d1", "p1", "a@example.com", ReasonRejected, "010-012"))
			b.finish(t, dead("d2", "p1", "b@example.com", ReasonRejected, "010-012"))
			b.finish(t, dead("d3", "p2", "c@example.com", ReasonRejected, "003-002"))
			b.finish(t, sent("s1", "p1", "d@example.com"))
			at := epoch.Add(time.Hour)
			got, marked, err := b.store.MarkReplayed(b.ctx, d1, "new-1", at)
			if err != nil || !marked || got.ReplayedAs != "new-1" || !got.ReplayedAt.Equal(at) {
				t.Fatalf("MarkReplayed = %+v, %v, %v", got, marked, err)
			}
			stored, ok, err := b.store.Get(b.ctx, "d1")
			if err != nil || !ok || stored.ReplayedAs != "new-1" || !stored.ReplayedAt.Equal(at) || stored.Attempts != d1.Attempts {
				t.Fatalf("Get after MarkReplayed = %+v, %v, %v", stored, ok, err)
			}
			// A second mark (a replay run again) changes nothing.
			if _, marked, err := b.store.MarkReplayed(b.ctx, d1, "new-2", at); marked || err != nil {
				t.Fatalf("second MarkReplayed = %v, %v; want not marked", marked, err)
			}
			if stored, _, _ := b.store.Get(b.ctx, "d1"); stored.ReplayedAs != "new-1" {
				t.Fatalf("second mark replaced the first: %+v", stored)
			}
			if _, _, err := b.store.MarkReplayed(b.ctx, sent("s1", "p1", "d@example.com"), "x", at); err == nil {
				t.Fatal("a sent record was marked replayed")
			}
			st, err := b.store.DeadLetters(b.ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := DeadLetterStats{
				Total: 3, Open: 2, Replayed: 1, Span: Span{Oldest: epoch, Newest: epoch},
				ByCode: map[string]OpenReplayed{
					"010-012": {Open: 1, Replayed: 1, Oldest: epoch, Newest: epoch}, "003-002": {Open: 1, Oldest: epoch, Newest: epoch},
				},
				ByReason:  map[string]OpenReplayed{"rejected": {Open: 2, Replayed: 1}},
				ByProject: map[string]OpenReplayed{"p1": {Open: 1, Replayed: 1}, "p2": {Open: 1}},
			}
			if !reflect.DeepEqual(st, want) {
				t.Fatalf("DeadLetters = %+v\nwant %+v", st, want)
			}
			for state, want := range map[State][]string{StateOpen: {"d3", "d2"}, StateReplayed: {"d1"}} {
				page := list(t, b, Filter{Status: StatusDeadLetter, State: state})
				if got := ids(page.Records); !reflect.DeepEqual(got, want) {
					t.Errorf("List state %s = %v, want %v", state, got, want)
				}
			}
			if _, err := b.store.List(b.ctx, Filter{Status: StatusSent, State: StateOpen}); err == nil {
				t.Error("sent records listed as open")
			}
			if _, err := b.store.List(b.ctx, Filter{State: "closed"}); err == nil {
				t.Error("an unknown state was accepted")
			}
		})
	}
}

func embedded(t *testing.T) *bundle { return setupOn(t, redistest.StartEmbedded(t)) }

func TestDeleteRemovesRecordsWithTheirIndexesAndCounts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d1 := b.finish(t, dead("d1", "p1", "a@example.com", ReasonRejected, "003-002"))
	b.finish(t, dead("d2", "p1", "b@example.com", ReasonRejected, "003-002"))
	b.finish(t, sent("s1", "p1", "c@example.com"))
	if _, _, err := b.store.MarkReplayed(b.ctx, d1, "new-1", epoch); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AddAttempt(b.ctx, "d2", Attempt{HTTPStatus: 503, Cause: CauseServerError}); err != nil {
		t.Fatal(err)
	}
	n, err := b.store.Delete(b.ctx, []string{"d1", "d2", "no-such-task"})
	if err != nil || n != 2 {
		t.Fatalf("Delete = %d, %v; want 2", n, err)
	}
	wantKeys(t, b, map[string]int64{
		"resendq:outcome-index:all": 1, "resendq:outcome-index:status:sent": 1,
		"resendq:outcome-index:project:p1": 1, "resendq:outcome-index:user:c@example.com": 1,
		"resendq:outcome:s1": 6, "resendq:outcome-stats": 1,
	})
	if st, err := b.store.DeadLetters(b.ctx); err != nil || st.Total != 0 || st.Replayed != 0 || !st.Oldest.IsZero() {
		t.Fatalf("DeadLetters after Delete = %+v, %v", st, err)
	}
}
