package outcome

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func list(t testing.TB, b *bundle, f Filter) Page {
	t.Helper()
	page, err := b.store.List(b.ctx, f)
	if err != nil {
		t.Fatalf("List(%+v): %v", f, err)
	}
	return page
}

func ids(recs []Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.TaskID
	}
	return out
}

// listAll follows the cursors of f to the end and returns the task IDs and
// the number of pages.
func listAll(t testing.TB, b *bundle, f Filter, between func()) ([]string, int) {
	t.Helper()
	var all []string
	for pages := 1; ; pages++ {
		page := list(t, b, f)
		all = append(all, ids(page.Records)...)
		if page.NextCursor == "" {
			return all, pages
		}
		if pages > 1000 {
			t.Fatal("List does not end")
		}
		f.Cursor = page.NextCursor
		if between != nil {
			between()
		}
	}
}

func TestListFilters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	add := func(r Record, batch string) {
		r.BatchID = batch
		b.finish(t, r)
		b.clock.Advance(time.Second)
	}
	add(sent("s1", "p1", "ann@example.com"), "")
	add(dead("d1", "p1", "ann@example.com", ReasonRejected, "003-002"), "b1")
	add(dead("d2", "p2", "ann@example.com", ReasonRejected, "010-011"), "b1")
	add(dead("d3", "p1", "bob:1", ReasonExhausted, ""), "b2")
	add(sent("s2", "p2", "bob:1"), "b2")
	add(dead("d4", "p1", "bob", ReasonRateLimited, ""), "")
	add(dead("d5", "p2", "bob", ReasonInvalid, "0"), "b1")
	at := func(i int) time.Time { return epoch.Add(time.Duration(i) * time.Second) }

	tests := []struct {
		f    Filter
		want []string
	}{
		{Filter{}, []string{"d5", "d4", "s2", "d3", "d2", "d1", "s1"}},
		{Filter{Username: " ann@example.com"}, []string{"d2", "d1", "s1"}},
		{Filter{Username: "bob"}, []string{"d5", "d4"}},
		{Filter{Username: "bob:1"}, []string{"s2", "d3"}},
		{Filter{ProjectID: "p1"}, []string{"d4", "d3", "d1", "s1"}},
		{Filter{Status: StatusSent}, []string{"s2", "s1"}},
		{Filter{Status: StatusDeadLetter}, []string{"d5", "d4", "d3", "d2", "d1"}},
		{Filter{Reason: ReasonRejected}, []string{"d2", "d1"}},
		{Filter{Reason: ReasonRateLimited}, []string{"d4"}},
		{Filter{Code: "003-002"}, []string{"d1"}},
		{Filter{Code: "0"}, []string{"d5"}},
		{Filter{Code: "nope"}, nil},
		{Filter{BatchID: "b1"}, []string{"d5", "d2", "d1"}},
		{Filter{Username: "ann@example.com", ProjectID: "p1"}, []string{"d1", "s1"}},
		{Filter{Username: "ann@example.com", Status: StatusDeadLetter, ProjectID: "p2"}, []string{"d2"}},
		{Filter{Status: StatusDeadLetter, ProjectID: "p1", Reason: ReasonExhausted}, []string{"d3"}},
		{Filter{BatchID: "b2", Status: StatusSent}, []string{"s2"}},
		{Filter{BatchID: "b1", Code: "010-011", Username: "ann@example.com"}, []string{"d2"}},
		{Filter{Since: at(2)}, []string{"d5", "d4", "s2", "d3", "d2"}},
		{Filter{Until: at(2)}, []string{"d1", "s1"}},
		{Filter{Since: at(1), Until: at(4)}, []string{"d3", "d2", "d1"}},
		{Filter{Since: at(1).Add(time.Nanosecond), Until: at(4).Add(time.Nanosecond)}, []string{"s2", "d3", "d2"}},
		{Filter{Status: StatusDeadLetter, Since: at(3), Until: at(6)}, []string{"d4", "d3"}},
		{Filter{Since: at(7)}, nil},
		{Filter{Until: at(0)}, nil},
	}
	for _, tt := range tests {
		got, _ := listAll(t, b, tt.f, nil)
		if !slices.Equal(got, tt.want) {
			t.Errorf("List(%+v) = %v, want %v", tt.f, got, tt.want)
		}
	}
}

func TestListPaging(t *testing.T) {
	t.Parallel()
	for _, step := range []time.Duration{time.Millisecond, 0} { // distinct times, then all equal
		t.Run(fmt.Sprint("step=", step), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			var want []string
			for i := range 250 {
				id := fmt.Sprintf("t%03d", i)
				b.finish(t, sent(id, "p1", "u"))
				want = append(want, id)
				b.clock.Advance(step)
			}
			slices.Reverse(want)
			n := 0
			got, pages := listAll(t, b, Filter{Limit: 100}, func() {
				n++ // newer records between pages must not show up
				b.clock.Advance(time.Millisecond)
				b.finish(t, sent(fmt.Sprint("new", n), "p1", "u"))
			})
			if pages != 3 || !slices.Equal(got, want) {
				t.Fatalf("%d pages, IDs %v\nwant 3 pages, IDs %v", pages, got, want)
			}
		})
	}
}

func TestListCursorOfMovedRecord(t *testing.T) {
	t.Parallel()
	for _, step := range []time.Duration{time.Millisecond, 0} {
		t.Run(fmt.Sprint("step=", step), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			var want []string
			for i := range 30 {
				id := fmt.Sprintf("t%02d", i)
				b.finish(t, sent(id, "p1", "u"))
				want = append(want, id)
				b.clock.Advance(step)
			}
			slices.Reverse(want)
			page := list(t, b, Filter{Limit: 10})
			last := page.Records[9]
			// The cursor's record is finished again later: it leaves its place.
			b.clock.Advance(time.Second)
			b.finish(t, sent(last.TaskID, "p1", "u"))
			rest, _ := listAll(t, b, Filter{Limit: 10, Cursor: page.NextCursor}, nil)
			if got := append(ids(page.Records), rest...); !slices.Equal(got, want) {
				t.Fatalf("IDs %v\nwant %v", got, want)
			}
		})
	}
}

func TestListScanBudget(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.finish(t, sent("match", "p2", "u"))
	b.clock.Advance(time.Millisecond)
	for i := range 1200 { // sent in p1 or dead letters in p2: no match
		b.finish(t, sent(fmt.Sprint("s", i), "p1", "u"))
		b.finish(t, dead(fmt.Sprint("d", i), "p2", "u", ReasonExhausted, ""))
		b.clock.Advance(time.Millisecond)
	}
	f := Filter{Status: StatusSent, ProjectID: "p2", Limit: 10}
	page := list(t, b, f)
	if len(page.Records) != 0 || page.NextCursor == "" {
		t.Fatalf("first page = %v, %q; want no records and a cursor", ids(page.Records), page.NextCursor)
	}
	got, pages := listAll(t, b, f, nil)
	if !reflect.DeepEqual(got, []string{"match"}) || pages != 2 {
		t.Fatalf("List = %v in %d pages, want [match] in 2", got, pages)
	}
}

func TestListLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 1005 {
		b.finish(t, sent(fmt.Sprint("t", i), "p", "u"))
	}
	if n := len(list(t, b, Filter{}).Records); n != DefaultLimit {
		t.Errorf("default page holds %d records, want %d", n, DefaultLimit)
	}
	if n := len(list(t, b, Filter{Limit: 5000}).Records); n != MaxLimit {
		t.Errorf("page of limit 5000 holds %d records, want %d", n, MaxLimit)
	}
	page := list(t, b, Filter{Limit: 1005})
	if page.NextCursor == "" {
		t.Fatal("no cursor after a cut page")
	}
	if n := len(list(t, b, Filter{Limit: 5000, Cursor: page.NextCursor}).Records); n != 5 {
		t.Errorf("second page holds %d records, want 5", n)
	}
}

func TestKeysAreEscaped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.finish(t, dead("t1", "p:1", "a:b", ReasonRejected, "x:y"))
	b.finish(t, dead("t2", "p", "a", ReasonRejected, "x"))
	b.finish(t, dead("t3", "p", "a\nb c%41", ReasonRejected, "x\ny"))
	for _, tt := range []struct {
		f    Filter
		want []string
	}{
		{Filter{Username: "a:b"}, []string{"t1"}},
		{Filter{Username: "a"}, []string{"t2"}},
		{Filter{Username: "a\nb c%41"}, []string{"t3"}},
		{Filter{Username: "a\nb cA"}, nil},
		{Filter{ProjectID: "p:1"}, []string{"t1"}},
		{Filter{Code: "x:y"}, []string{"t1"}},
		{Filter{Code: "x"}, []string{"t2"}},
	} {
		if got, _ := listAll(t, b, tt.f, nil); !slices.Equal(got, tt.want) {
			t.Errorf("List(%+v) = %v, want %v", tt.f, got, tt.want)
		}
	}
	if got, ok, _ := b.store.Latest(b.ctx, "p:1", "a:b"); !ok || got.TaskID != "t1" {
		t.Errorf("Latest(p:1, a:b) = %+v, %v", got, ok)
	}
	wantStats(t, b.stats(t), 0, 3, map[string]int64{"rejected": 3},
		map[string]int64{"x:y": 1, "x": 1, "x\ny": 1})
	if b.rdb.Exists(b.ctx, "resendq:outcome-index:user:a%3Ab").Val() != 1 {
		t.Error("no index key user:a%3Ab")
	}
}
