package outcome

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
)

func TestHistory(t *testing.T) {
	t.Parallel()
	testHistory(t, setup(t))
}

func TestHistoryOnEmbedded(t *testing.T) {
	t.Parallel()
	testHistory(t, setupOn(t, redistest.StartEmbedded(t)))
}

// testHistory follows a task retried three times to its record.
func testHistory(t *testing.T, b *bundle) {
	want := []Attempt{
		{At: epoch, HTTPStatus: 503, ErrorCode: "0", Cause: CauseServerError, Latency: 12345 * time.Microsecond, Error: "login api 503 0: Service Unavailable"},
		{At: epoch.Add(time.Second), Cause: CauseTimeout, Latency: 10 * time.Second, Error: "login api: context deadline exceeded"},
		{At: epoch.Add(3 * time.Second), HTTPStatus: 429, ErrorCode: "0", Cause: CauseRateLimited, Latency: time.Millisecond},
	}
	for _, a := range want {
		if err := b.store.AddAttempt(b.ctx, "t1", a); err != nil {
			t.Fatalf("AddAttempt: %v", err)
		}
	}
	got, err := b.store.History(b.ctx, "t1")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("History = %+v, %v\nwant %+v", got, err, want)
	}
	key := "resendq:outcome-history:t1"
	if ttl := b.rdb.PTTL(b.ctx, key).Val(); ttl <= DefaultRetention-time.Minute || ttl > DefaultRetention {
		t.Fatalf("history TTL of a running task = %s, want about %s", ttl, DefaultRetention)
	}
	tl, ok, err := b.store.Timeline(b.ctx, "t1")
	if err != nil || !ok || tl.Record != nil || !reflect.DeepEqual(tl.History, want) {
		t.Fatalf("Timeline of a running task = %+v, %v, %v; want no record and the history", tl, ok, err)
	}

	rec := sent("t1", "p1", "u1")
	rec.Attempts = 4
	b.finish(t, rec)
	if ttl := b.rdb.PTTL(b.ctx, key).Val(); ttl != -1 {
		t.Errorf("history TTL of a finished task = %s, want none: it lives as long as the record", ttl)
	}
	if n := b.rdb.Exists(b.ctx, "resendq:outcome-rl:t1").Val(); n != 0 {
		t.Error("running state survived Finish")
	}
	tl, ok, err = b.store.Timeline(b.ctx, "t1")
	if err != nil || !ok || tl.TaskID != "t1" || tl.Record == nil || tl.Record.Attempts != 4 || !reflect.DeepEqual(tl.History, want) {
		t.Fatalf("Timeline of a finished task = %+v, %v, %v", tl, ok, err)
	}
}

func TestNoHistoryWithoutARetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.finish(t, sent("t1", "p1", "u1"))
	if n := b.rdb.Exists(b.ctx, "resendq:outcome-history:t1").Val(); n != 0 {
		t.Fatal("a task sent on its first call has a history key")
	}
	tl, ok, err := b.store.Timeline(b.ctx, "t1")
	if err != nil || !ok || tl.Record == nil || tl.History == nil || len(tl.History) != 0 {
		t.Fatalf("Timeline = %+v, %v, %v; want the record and an empty history", tl, ok, err)
	}
	if _, ok, err := b.store.Timeline(b.ctx, "nope"); ok || err != nil {
		t.Fatalf("Timeline of an unknown task = %v, %v; want none", ok, err)
	}
	if _, _, err := b.store.Timeline(b.ctx, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Timeline of no task: %v, want ErrInvalid", err)
	}
}

func TestHistoryKeepsTheNewest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range MaxHistory + 5 {
		a := Attempt{At: epoch.Add(time.Duration(i) * time.Second), HTTPStatus: 500 + i, Cause: CauseServerError}
		if err := b.store.AddAttempt(b.ctx, "t1", a); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.store.History(b.ctx, "t1")
	if err != nil || len(got) != MaxHistory {
		t.Fatalf("History has %d attempts, %v; want %d", len(got), err, MaxHistory)
	}
	if got[0].HTTPStatus != 505 || got[MaxHistory-1].HTTPStatus != 524 {
		t.Errorf("History runs from %d to %d, want the newest: 505 to 524", got[0].HTTPStatus, got[MaxHistory-1].HTTPStatus)
	}
}

func TestAddAttemptChecksAndCuts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if err := b.store.AddAttempt(b.ctx, "t1", Attempt{Cause: "bored"}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "cause") {
		t.Errorf("unknown cause: %v, want ErrInvalid naming cause", err)
	}
	if err := b.store.AddAttempt(b.ctx, "", Attempt{Cause: CauseTimeout}); !errors.Is(err, ErrInvalid) {
		t.Errorf("no task: %v, want ErrInvalid", err)
	}
	if n := b.rdb.DBSize(b.ctx).Val(); n != 0 {
		t.Fatalf("refused attempts wrote %d keys", n)
	}
	long := strings.Repeat("é", MaxAttemptError) // two bytes each
	if err := b.store.AddAttempt(b.ctx, "t1", Attempt{Cause: CauseTimeout, Error: long}); err != nil {
		t.Fatal(err)
	}
	got, err := b.store.History(b.ctx, "t1")
	if err != nil || len(got) != 1 {
		t.Fatalf("History = %+v, %v", got, err)
	}
	if e := got[0].Error; len(e) != MaxAttemptError || !strings.HasPrefix(long, e) {
		t.Errorf("error text of %d bytes kept as %d bytes, want %d on a character boundary", len(long), len(e), MaxAttemptError)
	}
	if !got[0].At.Equal(epoch) {
		t.Errorf("At = %v, want the store's clock (%v)", got[0].At, epoch)
	}
}

func TestTrimRemovesHistories(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, id := range []string{"old", "new"} {
		if err := b.store.AddAttempt(b.ctx, id, Attempt{HTTPStatus: 503, Cause: CauseServerError}); err != nil {
			t.Fatal(err)
		}
	}
	old := sent("old", "p1", "u1")
	old.FinishedAt = longAgo()
	b.finish(t, old)
	b.finish(t, sent("new", "p1", "u2"))
	if n, err := b.store.Trim(b.ctx); n != 1 || err != nil {
		t.Fatalf("Trim = %d, %v; want 1", n, err)
	}
	for id, want := range map[string]int64{"old": 0, "new": 1} {
		if n := b.rdb.Exists(b.ctx, fmt.Sprint("resendq:outcome-history:", id)).Val(); n != want {
			t.Errorf("history of %s: %d keys after Trim, want %d", id, n, want)
		}
	}
}

func TestSentRecordKeptKeepsItsHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.finish(t, sent("t1", "p1", "u1"))
	// A re-run after a crash retried once, then ended otherwise.
	if err := b.store.AddAttempt(b.ctx, "t1", Attempt{HTTPStatus: 503, Cause: CauseServerError}); err != nil {
		t.Fatal(err)
	}
	if got := b.finish(t, dead("t1", "p1", "u1", ReasonExhausted, "")); got.Status != StatusSent {
		t.Fatalf("Finish = %+v, want the sent record kept", got)
	}
	if ttl := b.rdb.PTTL(b.ctx, "resendq:outcome-history:t1").Val(); ttl != -1 {
		t.Errorf("history TTL = %s, want none: it lives as long as the record", ttl)
	}
}
