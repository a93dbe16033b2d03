package outcome

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/resendq/resendq/internal/redistest"
)

// TestOnRedisCluster runs the Store on a real 3-master Redis Cluster: the
// records spread over every master, and every read merges the shards.
func TestOnRedisCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.StartCluster(t, 3)
	rdb := c.Client(t)
	clock := clockwork.NewFakeClockAt(epoch)
	s := NewStore(rdb, Options{Clock: clock})
	if len(s.shards) != ClusterShards {
		t.Fatalf("%d shards on a cluster, want %d", len(s.shards), ClusterShards)
	}

	// 300 records, finished 100 at a time (FinishAll splits them by shard),
	// one millisecond apart: every tenth a dead letter of code 010-012.
	const n = 300
	var recs []Record
	for i := range n {
		user := fmt.Sprintf("user%d@example.com", i%50)
		r := sent(fmt.Sprintf("t%03d", i), fmt.Sprintf("p%d", i%3), user)
		if i%10 == 0 {
			r = dead(r.TaskID, r.ProjectID, user, ReasonRejected, "010-012")
		}
		r.BatchID = "b" + fmt.Sprint(i%2)
		r.FinishedAt = epoch.Add(time.Duration(i) * time.Millisecond)
		recs = append(recs, r)
	}
	if err := s.RateWait(ctx, "t007", time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RateLimited(ctx, "t007"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAttempt(ctx, "t007", Attempt{Cause: CauseRateLimited, HTTPStatus: 429}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += MaxFinishAll {
		if _, err := s.FinishAll(ctx, recs[i:i+MaxFinishAll]); err != nil {
			t.Fatalf("FinishAll: %v", err)
		}
	}
	for i := range c.Addrs {
		keys, err := c.Node(t, i).Keys(ctx, "resendq:{o*}:outcome:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) < n/10 {
			t.Errorf("master %d holds %d of %d records; want them spread over every master", i, len(keys), n)
		}
	}

	// One task: its record, attempts (a 429 counted) and history.
	tl, ok, err := s.Timeline(ctx, "t007")
	if err != nil || !ok || tl.Record == nil || tl.Record.Attempts != 2 || len(tl.History) != 1 {
		t.Fatalf("Timeline(t007) = %+v, %v, %v; want the record with 2 attempts and one attempt in its history", tl, ok, err)
	}

	// Listing merges the shards newest first, a page at a time.
	var got []string
	f := Filter{Limit: 7}
	for {
		page, err := s.List(ctx, f)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, r := range page.Records {
			got = append(got, r.TaskID)
		}
		if page.NextCursor == "" {
			break
		}
		f.Cursor = page.NextCursor
	}
	if len(got) != n || got[0] != "t299" || got[n-1] != "t000" {
		t.Fatalf("List returned %d records from %v to %v; want %d from t299 to t000", len(got), first(got), last(got), n)
	}
	for i := 1; i < len(got); i++ {
		if got[i] >= got[i-1] {
			t.Fatalf("List out of order at %d: %s after %s", i, got[i], got[i-1])
		}
	}
	page, err := s.List(ctx, Filter{Code: "010-012", BatchID: "b0", Limit: 1000})
	if err != nil || len(page.Records) != n/10 {
		t.Fatalf("List(code, batch b0) = %d records, %v; want %d", len(page.Records), err, n/10)
	}

	// A user's newest record, in any project and in one.
	latest, ok, err := s.Latest(ctx, "", "user7@example.com")
	if err != nil || !ok || latest.TaskID != "t257" {
		t.Fatalf("Latest(user7) = %s, %v, %v; want t257", latest.TaskID, ok, err)
	}
	latest, ok, err = s.Latest(ctx, "p0", "user7@example.com")
	if err != nil || !ok || latest.TaskID != "t207" {
		t.Fatalf("Latest(p0, user7) = %s, %v, %v; want t207", latest.TaskID, ok, err)
	}

	// Counts add up over the shards.
	st, err := s.Stats(ctx)
	if err != nil || st.Sent != n-n/10 || st.DeadLetter != n/10 || st.ByCode["010-012"] != n/10 {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
	bc, err := s.Batch(ctx, "b0")
	if err != nil || bc.Sent+bc.DeadLetter != n/2 || bc.ByCode["010-012"] != n/10 {
		t.Fatalf("Batch(b0) = %+v, %v", bc, err)
	}

	// Replay marks, a dead letter finished again as sent (its old indexes
	// are not the new record's), deletes.
	if _, ok, err := s.MarkReplayed(ctx, recs[10], "r010", clock.Now()); err != nil || !ok {
		t.Fatalf("MarkReplayed: %v, %v", ok, err)
	}
	resent := recs[20]
	resent.Status, resent.Reason, resent.ErrorCode, resent.HTTPStatus = StatusSent, "", "", 204
	if _, err := s.Finish(ctx, resent); err != nil {
		t.Fatalf("Finish t020 again as sent: %v", err)
	}
	if n, err := s.Delete(ctx, []string{"t001", "t002", "t100", "nope"}); err != nil || n != 3 {
		t.Fatalf("Delete = %d, %v; want 3", n, err)
	}
	dl, err := s.DeadLetters(ctx)
	if err != nil || dl.Total != n/10-2 || dl.Replayed != 1 || dl.ByCode["010-012"].Open != n/10-3 {
		t.Fatalf("DeadLetters = %+v, %v; want %d in all (t020 sent since, t100 deleted), 1 replayed, %d open of 010-012", dl, err, n/10-2, n/10-3)
	}
	if !dl.Oldest.Equal(epoch) || !dl.Newest.Equal(epoch.Add(290*time.Millisecond)) {
		t.Fatalf("dead letters from %v to %v; want from %v to %v", dl.Oldest, dl.Newest, epoch, epoch.Add(290*time.Millisecond))
	}
	page, err = s.List(ctx, Filter{State: StateReplayed})
	if err != nil || len(page.Records) != 1 || page.Records[0].TaskID != "t010" {
		t.Fatalf("List(replayed) = %+v, %v", page.Records, err)
	}

	// Retention trims every shard; nothing of ours is left.
	old := dead("old", "p1", "gone@example.com", ReasonExhausted, "")
	old.FinishedAt = longAgo()
	if _, err := s.Finish(ctx, old); err != nil {
		t.Fatal(err)
	}
	if removed, err := s.Trim(ctx); err != nil || removed != 1 {
		t.Fatalf("Trim = %d, %v; want 1", removed, err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.TaskID)
	}
	if _, err := s.Delete(ctx, ids); err != nil {
		t.Fatal(err)
	}
	for i := range c.Addrs {
		keys := c.Node(t, i).Keys(ctx, "resendq:*").Val()
		if len(keys) != 0 {
			t.Errorf("master %d still holds %d keys after every record was deleted: %s", i, len(keys), strings.Join(keys[:min(5, len(keys))], " "))
		}
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}
