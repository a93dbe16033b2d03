package outcome

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestFinishAllIsFinishOneByOne writes the same records with Finish, one
// call each, under one key prefix and with FinishAll, in one call, under
// another, and checks that Redis holds the same thing under both.
func TestFinishAllIsFinishOneByOne(t *testing.T) {
	t.Parallel()
	b := setup(t)
	one := NewStore(b.rdb, Options{Clock: b.clock, KeyPrefix: "one:"})
	all := NewStore(b.rdb, Options{Clock: b.clock, KeyPrefix: "all:"})
	replaced := dead("t2", "p1", "bob", ReasonRateLimited, "0")
	replaced.FinishedAt = epoch.Add(-time.Second)
	withBatch := dead("t4", "p2", " carol:x ", ReasonRejected, "003-002")
	withBatch.BatchID = "outage 1"
	recs := []Record{
		sent("t1", "p1", "alice"),
		replaced,
		dead("t3", "p1", "alice", ReasonExhausted, ""),
		withBatch,
		sent("t2", "p1", "bob"), // replaces t2 within the batch
		dead("t1", "p1", "alice", ReasonRejected, "003-002"), // t1 stays sent
	}
	for _, s := range []*Store{one, all} {
		for range 2 { // t3 was rate-limited twice
			if _, err := s.RateLimited(b.ctx, "t3"); err != nil {
				t.Fatal(err)
			}
		}
	}
	var want []Record
	for _, rec := range recs {
		got, err := one.Finish(b.ctx, rec)
		if err != nil {
			t.Fatalf("Finish(%s): %v", rec.TaskID, err)
		}
		want = append(want, got)
	}
	got, err := all.FinishAll(b.ctx, recs)
	if err != nil {
		t.Fatalf("FinishAll: %v", err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("FinishAll returned\n%+v\nFinish returned\n%+v", got, want)
	}
	if got[5].Status != StatusSent || got[5].TaskID != "t1" {
		t.Errorf("t1 = %+v, want its sent record kept", got[5])
	}
	if got[2].Attempts != 3 {
		t.Errorf("t3 attempts = %d, want 1 + 2 rate-limited", got[2].Attempts)
	}
	if a, o := dump(t, b, "all:"), dump(t, b, "one:"); a != o {
		t.Errorf("FinishAll stored\n%s\nFinish stored\n%s", a, o)
	}
	st, err := all.Stats(b.ctx)
	if err != nil || st.Sent != 2 || st.DeadLetter != 2 || st.ByCode["003-002"] != 1 || st.ByReason["rate_limited"] != 0 || st.ByReason["exhausted"] != 1 {
		t.Errorf("Stats = %+v, %v", st, err)
	}
}

// dump lists every key under prefix with its content, the prefix removed.
func dump(t *testing.T, b *bundle, prefix string) string {
	t.Helper()
	keys, err := b.rdb.Keys(b.ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	var out strings.Builder
	for _, k := range keys {
		var v any
		switch b.rdb.Type(b.ctx, k).Val() {
		case "hash":
			v = b.rdb.HGetAll(b.ctx, k).Val()
		case "zset":
			v = b.rdb.ZRangeWithScores(b.ctx, k, 0, -1).Val()
		default:
			v = b.rdb.Type(b.ctx, k).Val()
		}
		fmt.Fprintf(&out, "%s %v\n", strings.TrimPrefix(k, prefix), v)
	}
	return out.String()
}

func TestFinishAllWritesNothingWhenOneRecordIsInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bad := sent("t2", "p1", "bob")
	bad.Reason = ReasonRejected // a sent record has no reason
	if _, err := b.store.FinishAll(b.ctx, []Record{sent("t1", "p1", "alice"), bad}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %v, want ErrInvalid", err)
	}
	if n := b.rdb.DBSize(b.ctx).Val(); n != 0 {
		t.Errorf("%d keys written", n)
	}
	if _, err := b.store.FinishAll(b.ctx, make([]Record, MaxFinishAll+1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("%d records: error %v, want ErrInvalid", MaxFinishAll+1, err)
	}
	if got, err := b.store.FinishAll(b.ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("no records: %v, %v", got, err)
	}
}

func TestEscapeKeepsPlainStrings(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"john@example.com": "john@example.com", "a:b c\n": "a%3Ab%20c%0A", "": "", "é": "%C3%A9", "-._@+~": "-._@+~",
	} {
		if got := escape(in); got != want || unescape(got) != in {
			t.Errorf("escape(%q) = %q (unescaped %q), want %q", in, got, unescape(got), want)
		}
	}
}
