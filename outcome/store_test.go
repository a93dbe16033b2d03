package outcome

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/redistest"
)

type bundle struct {
	ctx   context.Context
	store *Store
	rdb   *redis.Client
	clock *clockwork.FakeClock
	srv   *redistest.Server
}

// epoch is when the tests started, in whole milliseconds as records keep
// times: where every test's clock starts.
var epoch = time.Now().UTC().Truncate(time.Millisecond)

// longAgo is a finished_at past the default retention by Redis's clock,
// which is the real one.
func longAgo() time.Time { return time.Now().Add(-DefaultRetention - time.Second) }

// setup returns a Store over a fresh redis-server, with a clock set to epoch
// and a retention of 30 days.
func setup(t testing.TB) *bundle {
	return setupOn(t, redistest.Start(t))
}

func setupOn(t testing.TB, srv *redistest.Server) *bundle {
	t.Helper()
	c := clockwork.NewFakeClockAt(epoch)
	rdb := srv.Client(t)
	return &bundle{
		ctx:   context.Background(),
		store: NewStore(rdb, Options{Clock: c}),
		rdb:   rdb,
		clock: c,
		srv:   srv,
	}
}

// sent returns a sent record of a task.
func sent(id, project, user string) Record {
	return Record{
		TaskID: id, ProjectID: project, Username: user, Queue: "signup",
		Status: StatusSent, HTTPStatus: 204, Attempts: 1, EnqueuedAt: epoch.Add(-time.Minute),
	}
}

// dead returns a dead-letter record of a task.
func dead(id, project, user string, reason Reason, code string) Record {
	r := sent(id, project, user)
	r.Status, r.Reason, r.ErrorCode, r.HTTPStatus = StatusDeadLetter, reason, code, 0
	if code != "" {
		r.HTTPStatus, r.ErrorDescription = 404, "Object not found."
	}
	return r
}

func (b *bundle) finish(t testing.TB, rec Record) Record {
	t.Helper()
	got, err := b.store.Finish(b.ctx, rec)
	if err != nil {
		t.Fatalf("Finish(%s): %v", rec.TaskID, err)
	}
	return got
}

func (b *bundle) stats(t testing.TB) Stats {
	t.Helper()
	st, err := b.store.Stats(b.ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

func wantStats(t testing.TB, got Stats, sent, deadLetter int64, byReason, byCode map[string]int64) {
	t.Helper()
	want := Stats{Sent: sent, DeadLetter: deadLetter, ByReason: byReason, ByCode: byCode}
	got = Stats{Sent: got.Sent, DeadLetter: got.DeadLetter, ByReason: got.ByReason, ByCode: got.ByCode}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestFinishAndLatest(t *testing.T) {
	t.Parallel()
	testFinishAndLatest(t, setup(t))
}

func TestEmbedded(t *testing.T) {
	t.Parallel()
	t.Run("FinishAndLatest", func(t *testing.T) {
		t.Parallel()
		testFinishAndLatest(t, setupOn(t, redistest.StartEmbedded(t)))
	})
	t.Run("Core", func(t *testing.T) {
		t.Parallel()
		testCore(t, setupOn(t, redistest.StartEmbedded(t)))
	})
}

func testFinishAndLatest(t *testing.T, b *bundle) {
	rec := dead("t1", "p1", " bob@example.com ", ReasonRejected, "003-002")
	rec.LoginURL, rec.Payload, rec.BatchID = "https://example.com/cb", `{"x":1}`, "b1"
	got := b.finish(t, rec)
	want := rec
	want.Username = "bob@example.com"
	want.FinishedAt = epoch
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Finish returned\n%+v\nwant\n%+v", got, want)
	}
	b.clock.Advance(time.Second)
	b.finish(t, sent("t2", "p2", "bob@example.com"))
	b.finish(t, sent("t3", "p1", "alice@example.com"))

	latest, ok, err := b.store.Latest(b.ctx, "p1", "bob@example.com  ")
	if err != nil || !ok || !reflect.DeepEqual(latest, want) {
		t.Fatalf("Latest(p1, bob) = %+v, %v, %v; want %+v", latest, ok, err, want)
	}
	latest, ok, err = b.store.Latest(b.ctx, "", "bob@example.com")
	if err != nil || !ok || latest.TaskID != "t2" {
		t.Fatalf("Latest(any, bob) = %+v, %v, %v; want t2", latest, ok, err)
	}
	if _, ok, err := b.store.Latest(b.ctx, "p3", "bob@example.com"); ok || err != nil {
		t.Fatalf("Latest(p3, bob) = %v, %v; want none", ok, err)
	}
	if _, ok, err := b.store.Latest(b.ctx, "p1", "nobody"); ok || err != nil {
		t.Fatalf("Latest(p1, nobody) = %v, %v; want none", ok, err)
	}
}

// testCore runs Finish, RateLimited, List, Stats and Trim once each, to
// prove the scripts also work on another Redis.
func testCore(t *testing.T, b *bundle) {
	if _, err := b.store.RateLimited(b.ctx, "t1"); err != nil {
		t.Fatalf("RateLimited: %v", err)
	}
	old := sent("t1", "p1", "u1")
	old.FinishedAt = longAgo()
	if got := b.finish(t, old); got.Attempts != 2 {
		t.Fatalf("Attempts = %d, want 2", got.Attempts)
	}
	b.finish(t, old)
	b.finish(t, dead("t2", "p1", "u2", ReasonRejected, "003-002"))
	page, err := b.store.List(b.ctx, Filter{ProjectID: "p1", Limit: 1})
	if err != nil || len(page.Records) != 1 || page.Records[0].TaskID != "t2" || page.NextCursor == "" {
		t.Fatalf("List page 1 = %+v, %v; want t2 and a cursor", page, err)
	}
	page, err = b.store.List(b.ctx, Filter{ProjectID: "p1", Limit: 1, Cursor: page.NextCursor})
	if err != nil || len(page.Records) != 1 || page.Records[0].TaskID != "t1" {
		t.Fatalf("List page 2 = %+v, %v; want t1", page, err)
	}
	wantStats(t, b.stats(t), 1, 1, map[string]int64{"rejected": 1}, map[string]int64{"003-002": 1})
	if n, err := b.store.Trim(b.ctx); n != 1 || err != nil {
		t.Fatalf("Trim = %d, %v; want 1", n, err)
	}
	wantStats(t, b.stats(t), 0, 1, map[string]int64{"rejected": 1}, map[string]int64{"003-002": 1})
}

func TestFinishIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.finish(t, dead("t1", "p1", "u1", ReasonRejected, "003-002"))
	b.finish(t, dead("t1", "p1", "u1", ReasonRejected, "003-002"))
	wantStats(t, b.stats(t), 0, 1, map[string]int64{"rejected": 1}, map[string]int64{"003-002": 1})

	// A re-run that ends differently replaces the record and its counts.
	b.clock.Advance(time.Minute)
	b.finish(t, sent("t1", "p1", "u1"))
	wantStats(t, b.stats(t), 1, 0, map[string]int64{}, map[string]int64{})
	for _, f := range []Filter{{Status: StatusDeadLetter}, {Code: "003-002"}, {Reason: ReasonRejected}} {
		if page := list(t, b, f); len(page.Records) != 0 {
			t.Errorf("List(%+v) = %v, want none", f, ids(page.Records))
		}
	}
	page := list(t, b, Filter{})
	if len(page.Records) != 1 || page.Records[0].Status != StatusSent || !page.Records[0].FinishedAt.Equal(b.clock.Now()) {
		t.Fatalf("List = %+v, want the one sent record", page.Records)
	}
}

// TestSentRecordStays: an email that went out stays sent. A re-run of the
// task (after a crash between the record and asynq's done) that ends
// otherwise writes nothing, and gets the sent record back.
func TestSentRecordStays(t *testing.T) {
	t.Parallel()
	for _, be := range []struct {
		name  string
		start func(testing.TB) *redistest.Server
	}{{"redis", redistest.Start}, {"embedded", redistest.StartEmbedded}} {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			b := setupOn(t, be.start(t))
			first := b.finish(t, sent("t1", "p1", "u1"))
			b.clock.Advance(time.Minute)
			if _, err := b.store.RateLimited(b.ctx, "t1"); err != nil {
				t.Fatal(err)
			}
			again := dead("t1", "p1", "u1", ReasonRejected, "003-002")
			again.Attempts = 2
			got := b.finish(t, again)
			if got.Status != StatusSent || got.Attempts != 1 || !got.FinishedAt.Equal(first.FinishedAt) {
				t.Errorf("Finish returned %+v, want the sent record %+v", got, first)
			}
			wantStats(t, b.stats(t), 1, 0, map[string]int64{}, map[string]int64{})
			if rec, ok, err := b.store.Get(b.ctx, "t1"); err != nil || !ok || rec.Status != StatusSent || rec.Attempts != 1 {
				t.Errorf("Get = %+v, %v, %v", rec, ok, err)
			}
			if page := list(t, b, Filter{Status: StatusDeadLetter}); len(page.Records) != 0 {
				t.Errorf("dead letters %v, want none", ids(page.Records))
			}
			if n, _ := b.rdb.Exists(b.ctx, b.store.of("t1").ratePrefix+"t1").Result(); n != 0 {
				t.Error("the 429 state of a finished task is left behind")
			}
			// In one batch too, after the sent record; and a sent re-run still
			// replaces a sent record, a sent one replaces a dead letter.
			b.clock.Advance(time.Minute)
			out, err := b.store.FinishAll(b.ctx, []Record{dead("t2", "p1", "u2", ReasonExhausted, ""), sent("t3", "p1", "u3"), dead("t3", "p1", "u3", ReasonExhausted, ""), sent("t1", "p1", "u1")})
			if err != nil {
				t.Fatal(err)
			}
			if out[0].Status != StatusDeadLetter || out[1].Status != StatusSent || out[2].Status != StatusSent || out[2].TaskID != "t3" ||
				out[3].Status != StatusSent || !out[3].FinishedAt.Equal(b.clock.Now()) {
				t.Errorf("FinishAll = %+v", out)
			}
			b.finish(t, sent("t2", "p1", "u2"))
			wantStats(t, b.stats(t), 3, 0, map[string]int64{}, map[string]int64{})
		})
	}
}

func TestRateLimited(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := 1; i <= 3; i++ {
		st, err := b.store.RateLimited(b.ctx, "t1")
		if err != nil {
			t.Fatalf("RateLimited: %v", err)
		}
		if want := time.Duration(i-1) * time.Second; st.Calls != i || st.Waited != want {
			t.Fatalf("RateLimited #%d = %+v, want %d calls and %s of waits", i, st, i, want)
		}
		if err := b.store.RateWait(b.ctx, "t1", time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if held, err := b.store.Held(b.ctx, "t1", 3*time.Second); err != nil || held != 3*time.Second {
		t.Fatalf("Held = %s, %v", held, err)
	}
	if held, err := b.store.Held(b.ctx, "t1", 2*time.Second); err != nil || held != 5*time.Second {
		t.Fatalf("Held again = %s, %v; want the total", held, err)
	}
	ttl := b.rdb.PTTL(b.ctx, "resendq:outcome-rl:t1").Val()
	if ttl <= DefaultRetention-time.Minute || ttl > DefaultRetention {
		t.Fatalf("rate state TTL = %s, want about %s", ttl, DefaultRetention)
	}
	rec := sent("t1", "p1", "u1")
	rec.Attempts = 2
	if got := b.finish(t, rec); got.Attempts != 5 {
		t.Fatalf("Finish Attempts = %d, want 2 passed + 3 rate-limited", got.Attempts)
	}
	if got, _, _ := b.store.Latest(b.ctx, "p1", "u1"); got.Attempts != 5 {
		t.Fatalf("Latest Attempts = %d, want 5", got.Attempts)
	}
	if n := b.rdb.Exists(b.ctx, "resendq:outcome-rl:t1").Val(); n != 0 {
		t.Fatal("rate state survived Finish")
	}
	st, err := b.store.RateLimited(b.ctx, "t1")
	if err != nil || st.Calls != 1 || st.Waited != 0 {
		t.Fatalf("RateLimited after Finish = %+v, %v; want a fresh state", st, err)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	wantStats(t, b.stats(t), 0, 0, map[string]int64{}, map[string]int64{})
	for i := range 10 {
		b.finish(t, sent(fmt.Sprint("s", i), "p1", "u"))
	}
	b.finish(t, dead("d1", "p1", "u", ReasonRejected, "003-002"))
	b.finish(t, dead("d2", "p1", "u", ReasonRejected, "003-002"))
	b.finish(t, dead("d3", "p1", "u", ReasonRejected, "010-011"))
	b.finish(t, dead("d4", "p1", "u", ReasonExhausted, ""))
	b.finish(t, dead("d5", "p1", "u", ReasonInvalid, "a:b\nc"))
	wantStats(t, b.stats(t), 10, 5,
		map[string]int64{"rejected": 3, "exhausted": 1, "invalid": 1},
		map[string]int64{"003-002": 2, "010-011": 1, "a:b\nc": 1})
}

func TestStatsJSON(t *testing.T) {
	t.Parallel()
	b := setup(t)
	raw, err := jsonString(b.stats(t))
	if err != nil || raw != `{"sent":0,"dead_letter":0,"by_reason":{},"by_code":{},"dead_by_project":{},"replayed":0,"replayed_by_reason":{},"replayed_by_code":{},"replayed_by_project":{}}` {
		t.Fatalf("empty Stats JSON = %s, %v", raw, err)
	}
	b.finish(t, sent("s1", "p", "u"))
	b.finish(t, dead("d1", "p", "u", ReasonRejected, "003-002"))
	raw, _ = jsonString(b.stats(t))
	if want := `{"sent":1,"dead_letter":1,"by_reason":{"rejected":1},"by_code":{"003-002":1},"dead_by_project":{"p":1},"replayed":0,"replayed_by_reason":{},"replayed_by_code":{},"replayed_by_project":{}}`; raw != want {
		t.Fatalf("Stats JSON = %s, want %s", raw, want)
	}
}

func TestTrim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old := func(r Record) Record { r.FinishedAt = longAgo(); return r }
	for i := range 1200 { // more than two batches
		b.finish(t, old(dead(fmt.Sprint("old", i), "p1", "old-user", ReasonRejected, "003-002")))
	}
	b.finish(t, old(sent("old-sent", "p1", "both")))
	recent := sent("new1", "p1", "both")
	recent.FinishedAt = time.Now().Add(-DefaultRetention + time.Minute) // 30 days old less a minute
	b.finish(t, recent)
	b.finish(t, dead("new2", "p2", "new-user", ReasonExhausted, ""))

	// The store's own clock does not matter: Redis's decides.
	b.clock.Advance(365 * 24 * time.Hour)
	if n, err := b.store.Trim(b.ctx); n != 1201 || err != nil {
		t.Fatalf("Trim = %d, %v; want 1201", n, err)
	}
	wantStats(t, b.stats(t), 1, 1, map[string]int64{"exhausted": 1}, map[string]int64{})
	if got := ids(list(t, b, Filter{}).Records); !reflect.DeepEqual(got, []string{"new2", "new1"}) {
		t.Fatalf("List after Trim = %v", got)
	}
	if _, ok, err := b.store.Latest(b.ctx, "p1", "old-user"); ok || err != nil {
		t.Fatalf("Latest(old-user) = %v, %v; want none", ok, err)
	}
	if got, ok, _ := b.store.Latest(b.ctx, "p1", "both"); !ok || got.TaskID != "new1" {
		t.Fatalf("Latest(both) = %+v, %v; want new1", got, ok)
	}
	wantKeys(t, b, map[string]int64{
		"resendq:outcome-index:all": 2, "resendq:outcome-index:status:sent": 1,
		"resendq:outcome-index:status:dead_letter": 1, "resendq:outcome-index:reason:exhausted": 1,
		"resendq:outcome-index:project:p1": 1, "resendq:outcome-index:project:p2": 1,
		"resendq:outcome-index:user:both": 1, "resendq:outcome-index:user:new-user": 1,
		"resendq:outcome:new1": 6, "resendq:outcome:new2": 6, "resendq:outcome-stats": 4,
	})
}

// wantKeys checks that Redis holds exactly the given keys with the given
// sizes (ZCARD or HLEN).
func wantKeys(t *testing.T, b *bundle, want map[string]int64) {
	t.Helper()
	keys := b.rdb.Keys(b.ctx, "*").Val()
	got := map[string]int64{}
	for _, k := range keys {
		switch b.rdb.Type(b.ctx, k).Val() {
		case "zset":
			got[k] = b.rdb.ZCard(b.ctx, k).Val()
		case "hash":
			got[k] = b.rdb.HLen(b.ctx, k).Val()
		default:
			got[k] = -1
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("keys = %v\nwant %v", got, want)
	}
}

func TestRunRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old := sent("t1", "p", "u")
	old.FinishedAt = longAgo()
	b.finish(t, old)
	ctx, cancel := context.WithCancel(b.ctx)
	calls := make(chan int, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.store.RunRetention(ctx, time.Millisecond, func(removed int, err error) {
			if err != nil {
				t.Errorf("Trim: %v", err)
			}
			calls <- removed
		})
	}()
	if got := <-calls; got != 1 {
		t.Fatalf("first Trim removed %d, want 1", got)
	}
	if err := b.clock.BlockUntilContext(ctx, 1); err != nil { // the ticker
		t.Fatal(err)
	}
	b.clock.Advance(time.Millisecond)
	if got := <-calls; got != 0 {
		t.Fatalf("second Trim removed %d, want 0", got)
	}
	cancel()
	<-done
}

func TestValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bad := func(mod func(*Record)) Record { r := sent("t1", "p", "u"); mod(&r); return r }
	records := map[string]Record{
		"task_id": bad(func(r *Record) { r.TaskID = "" }),
		"status is required: one of sent, dead_letter": bad(func(r *Record) { r.Status = "" }),
		"status \"ok\": want one of sent, dead_letter": bad(func(r *Record) { r.Status = "ok" }),
		"reason \"rejected\": a sent record":           bad(func(r *Record) { r.Reason = ReasonRejected }),
		"reason is required: one of rejected, rate_limited, exhausted, outage, invalid": bad(func(r *Record) {
			r.Status = StatusDeadLetter
		}),
		"attempts \"-1\": must not be negative": bad(func(r *Record) { r.Attempts = -1 }),
	}
	for want, rec := range records {
		_, err := b.store.Finish(b.ctx, rec)
		wantInvalid(t, err, want)
	}
	filters := map[string]Filter{
		"status \"x\": want one of sent, dead_letter":                                  {Status: "x"},
		"reason \"y\": want one of rejected, rate_limited, exhausted, outage, invalid": {Reason: "y"},
		"reason \"rejected\": sent records have no reason":                             {Status: StatusSent, Reason: ReasonRejected},
		"limit \"-1\": must not be negative":                                           {Limit: -1},
		"since":                                                                        {Since: epoch, Until: epoch},
		"cursor \"%%%\"":                                                               {Cursor: "%%%"},
		"cursor \"bm9wZQ\"":                                                            {Cursor: "bm9wZQ"},
	}
	for want, f := range filters {
		_, err := b.store.List(b.ctx, f)
		wantInvalid(t, err, want)
	}
	_, _, err := b.store.Latest(b.ctx, "p", "  ")
	wantInvalid(t, err, "username")
	_, err = b.store.RateLimited(b.ctx, "")
	wantInvalid(t, err, "task_id")
}

func wantInvalid(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want ErrInvalid mentioning %q", err, want)
	}
}

func TestRedisGone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.Stop()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if _, err := b.store.Finish(ctx, sent("t1", "p", "u")); err == nil || errors.Is(err, ErrInvalid) {
		t.Fatalf("Finish without Redis = %v, want a Redis error", err)
	}
}

func TestKeyPrefix(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := NewStore(b.rdb, Options{KeyPrefix: "other:", Clock: b.clock})
	if _, err := s.Finish(b.ctx, sent("t1", "p", "u")); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	for _, k := range b.rdb.Keys(b.ctx, "*").Val() {
		if !strings.HasPrefix(k, "other:outcome") {
			t.Errorf("key %q lacks the prefix", k)
		}
	}
	if st := b.stats(t); st.Sent != 0 {
		t.Errorf("a Store with the default prefix sees %d sent", st.Sent)
	}
}
