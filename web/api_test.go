package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
	"github.com/resendq/resendq/web"
)

// now is where the clock of the API tests stands: when the tests started.
// Records finish in the three hours before it.
var now = time.Now().UTC().Truncate(time.Millisecond)

const otherProject = "0b6f6bb8-31f4-4a29-8d52-6c8f9d1e2a77"

// seed writes nine records, finished a minute apart from three hours
// before now on, and returns them as stored, newest first. Usernames cycle
// user0..user2; user1's are dead letters (404 003-002), user2's belong to
// otherProject.
func seed(t *testing.T, b *bundle) []outcome.Record {
	t.Helper()
	var recs []outcome.Record
	for i := range 9 {
		rec := outcome.Record{
			TaskID: fmt.Sprintf("task-%d", i), ProjectID: projectID, Queue: "signup",
			Username: fmt.Sprintf("user%d@example.com", i%3), Status: outcome.StatusSent, HTTPStatus: 204, Attempts: 1,
			EnqueuedAt: now.Add(-3 * time.Hour), FinishedAt: now.Add(-3*time.Hour + time.Duration(i)*time.Minute),
		}
		switch i % 3 {
		case 1:
			rec.Status, rec.Reason, rec.HTTPStatus, rec.ErrorCode, rec.ErrorDescription =
				outcome.StatusDeadLetter, outcome.ReasonRejected, 404, "003-002", "User not found."
		case 2:
			rec.ProjectID = otherProject
		}
		stored, err := b.store.Finish(context.Background(), rec)
		if err != nil {
			t.Fatal(err)
		}
		recs = append([]outcome.Record{stored}, recs...)
	}
	return recs
}

func setupAPI(t *testing.T) (*bundle, []outcome.Record) {
	b := setup(t, func(o *web.Options) { o.Clock = clockwork.NewFakeClockAt(now) })
	return b, seed(t, b)
}

// list calls GET /api/v1/outcomes?query and decodes the page.
func list(t *testing.T, b *bundle, query string) outcome.Page {
	t.Helper()
	status, body := b.get(t, "/api/v1/outcomes?"+query, bearer())
	if status != http.StatusOK {
		t.Fatalf("GET /api/v1/outcomes?%s: %d %s", query, status, body)
	}
	var page outcome.Page
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return page
}

func taskIDs(recs []outcome.Record) []string {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.TaskID
	}
	return ids
}

func TestListOutcomesFilters(t *testing.T) {
	t.Parallel()
	b, all := setupAPI(t)
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"", taskIDs(all)},
		{"username=user1%40example.com", []string{"task-7", "task-4", "task-1"}},
		{"username=+user1%40example.com+", []string{"task-7", "task-4", "task-1"}},
		{"status=dead_letter", []string{"task-7", "task-4", "task-1"}},
		{"status=sent&project_id=" + otherProject, []string{"task-8", "task-5", "task-2"}},
		{"reason=rejected&code=003-002", []string{"task-7", "task-4", "task-1"}},
		{"code=003-019", []string{}},
		{"project_id=" + projectID + "&status=sent", []string{"task-6", "task-3", "task-0"}},
		{"since=" + url.QueryEscape(now.Add(-3*time.Hour+6*time.Minute).Format(time.RFC3339)), []string{"task-8", "task-7", "task-6"}},
		{"since=174m", []string{"task-8", "task-7", "task-6"}},
		{"until=" + url.QueryEscape(now.Add(-3*time.Hour+2*time.Minute).Format(time.RFC3339)), []string{"task-1", "task-0"}},
	} {
		page := list(t, b, c.query)
		if got := taskIDs(page.Records); !reflect.DeepEqual(got, c.want) {
			t.Errorf("?%s: %v, want %v", c.query, got, c.want)
		}
		if page.NextCursor != "" {
			t.Errorf("?%s: next_cursor %q on a last page", c.query, page.NextCursor)
		}
	}
	page := list(t, b, "username=user2%40example.com")
	if !reflect.DeepEqual(page.Records[0], all[0]) {
		t.Errorf("record as served:\n%+v\nwant as stored:\n%+v", page.Records[0], all[0])
	}
}

func TestListOutcomesPages(t *testing.T) {
	t.Parallel()
	b, all := setupAPI(t)
	var got []string
	query := "limit=4"
	for pages := 1; ; pages++ {
		page := list(t, b, query)
		if len(page.Records) > 4 {
			t.Fatalf("page %d has %d records, limit 4", pages, len(page.Records))
		}
		got = append(got, taskIDs(page.Records)...)
		if page.NextCursor == "" {
			break
		}
		if pages > 5 {
			t.Fatal("cursor does not end")
		}
		query = "limit=4&cursor=" + url.QueryEscape(page.NextCursor)
	}
	if want := taskIDs(all); !reflect.DeepEqual(got, want) {
		t.Errorf("pages hold %v, want %v", got, want)
	}
}

func TestListOutcomesRejectsBadParameters(t *testing.T) {
	t.Parallel()
	b, _ := setupAPI(t)
	for query, names := range map[string]string{
		"status=bounced":                 `status "bounced"`,
		"reason=lost":                    `reason "lost"`,
		"status=sent&reason=rejected":    "reason",
		"limit=0":                        `limit "0"`,
		"limit=1001":                     `limit "1001"`,
		"limit=ten":                      `limit "ten"`,
		"since=yesterday":                `since "yesterday"`,
		"since=-1h":                      `since "-1h"`,
		"until=2026-13-01":               `until "2026-13-01"`,
		"cursor=%25%25":                  "cursor",
		"user=bob":                       `user is not a filter`,
		"status=sent&status=dead_letter": `parameter "status" is given 2 times`,
	} {
		status, body := b.get(t, "/api/v1/outcomes?"+query, bearer())
		var e struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || status != http.StatusBadRequest || e.Error.Code != "invalid" || !strings.Contains(e.Error.Message, names) {
			t.Errorf("?%s: %d %s, want 400 with an error naming %s", query, status, body, names)
		}
	}
}

func TestOutcomeStatsIsTheCLIObject(t *testing.T) {
	t.Parallel()
	b, _ := setupAPI(t)
	status, body := b.get(t, "/api/v1/outcomes/stats", bearer())
	if status != http.StatusOK {
		t.Fatalf("GET /api/v1/outcomes/stats: %d %s", status, body)
	}
	st, err := b.store.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(st) // what `resendq outcomes stats --json` prints
	if strings.TrimSpace(body) != string(want) {
		t.Errorf("stats %s, want %s", body, want)
	}
	if st.Sent != 6 || st.DeadLetter != 3 || st.ByCode["003-002"] != 3 {
		t.Errorf("stats %+v, want 6 sent, 3 dead letters with code 003-002", st)
	}
	if status, _ := b.get(t, "/api/v1/outcomes/stats?since=1h", bearer()); status != http.StatusBadRequest {
		t.Errorf("stats with a parameter: %d, want 400", status)
	}
}

func TestAPIErrorsAreJSON(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	status, body := b.get(t, "/api/v1/outcome", bearer())
	if status != http.StatusNotFound || !strings.HasPrefix(body, `{"error":{"code":"not_found","message":"no API endpoint GET /api/v1/outcome`) {
		t.Errorf("GET an unknown API path: %d %s, want a JSON 404", status, body)
	}
	status, _ = b.do(t, http.MethodPost, "/api/v1/outcomes", bearer(), nil)
	if status != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/v1/outcomes: %d, want 405", status)
	}
	b.redis.Stop()
	status, body = b.get(t, "/api/v1/outcomes/stats", bearer())
	if status != http.StatusServiceUnavailable || strings.TrimSpace(body) != `{"error":{"code":"unavailable","message":"cannot read outcome records: Redis unavailable"}}` {
		t.Errorf("stats with Redis stopped: %d %s, want a JSON 503 that names no address", status, body)
	}
}

func TestAPIAnswersAreNotStored(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	resp := mustDo(t, b, http.MethodGet, "/api/v1/outcomes", bearer())
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json; charset=utf-8" {
		t.Errorf("Content-Type %q", got)
	}
}

func TestFlowIsTheStatusObject(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	status, body := b.get(t, "/api/v1/flow", bearer())
	if status != http.StatusOK || strings.TrimSpace(body) != `{"projects":[]}` {
		t.Fatalf("GET /api/v1/flow of a quiet fleet: %d %s", status, body)
	}
	l := ratelimit.New(b.rdb, ratelimit.Options{})
	if _, _, err := l.CoolDown(context.Background(), projectID, time.Minute); err != nil {
		t.Fatal(err)
	}
	status, body = b.get(t, "/api/v1/flow", bearer())
	var got struct{ Projects []ratelimit.State }
	if err := json.Unmarshal([]byte(body), &got); status != http.StatusOK || err != nil || len(got.Projects) != 1 ||
		got.Projects[0].Project != projectID || got.Projects[0].PausedSeconds <= 0 || got.Projects[0].Open {
		t.Errorf("GET /api/v1/flow during a pause: %d %s (%v)", status, body, err)
	}
	if status, _ := b.get(t, "/api/v1/flow", ""); status != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/flow without the token: %d", status)
	}
	b.redis.Stop()
	status, body = b.get(t, "/api/v1/flow", bearer())
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "Redis unavailable") {
		t.Errorf("with Redis stopped: %d %s", status, body)
	}
}
