package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/web"
)

// TestProducerAPIAndOutcomesOnACluster: on a 3-master Redis Cluster, the
// producer endpoints enqueue one resend and a batch and look them up, and
// the outcome, dead-letter and support pages read records spread over the
// masters.
func TestProducerAPIAndOutcomesOnACluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := redistest.StartCluster(t, 3)
	rdb := c.Client(t)
	store := outcome.NewStore(rdb, outcome.Options{})
	h, err := web.New(web.Options{Redis: rdb, Outcomes: store, Token: testToken, UIWrite: true, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{http: httptest.NewServer(h)}
	t.Cleanup(b.http.Close)

	a := b.call(t, http.MethodPost, "/api/v1/resends", testToken, nil, resendBody("john@example.com"), true)
	if a.status != http.StatusAccepted {
		t.Fatalf("POST one: %d %s", a.status, a.body)
	}
	one := a.result(t)
	var items []string
	for i := range 20 {
		items = append(items, fmt.Sprintf(`{"project_id":%q,"username":"user%d@example.com"}`, projectID, i))
	}
	a = b.call(t, http.MethodPost, "/api/v1/resends:batch", testToken, nil, `{"items":[`+strings.Join(items, ",")+`]}`, true)
	if a.status != http.StatusOK && a.status != http.StatusAccepted {
		t.Fatalf("POST a batch: %d %s", a.status, a.body)
	}
	if n := strings.Count(a.body, `"task_id"`); n != 20 {
		t.Fatalf("the batch's answer names %d tasks, want 20: %s", n, a.body)
	}
	if st := b.call(t, http.MethodGet, "/api/v1/resends/"+one.TaskID, testToken, nil, "", true); st.status != http.StatusOK || !strings.Contains(st.body, `"state":"pending"`) {
		t.Fatalf("GET the one: %d %s", st.status, st.body)
	}

	// As a worker would: john's resend ends as a dead letter, user0's is sent.
	for _, rec := range []outcome.Record{
		{TaskID: one.TaskID, ProjectID: projectID, Username: "john@example.com", Queue: tasks.QueueSignup, Status: outcome.StatusDeadLetter,
			Reason: outcome.ReasonRejected, ErrorCode: "010-012", HTTPStatus: 404},
		{TaskID: "sent-0", ProjectID: projectID, Username: "user0@example.com", Queue: tasks.QueueSignup, Status: outcome.StatusSent, HTTPStatus: 204},
	} {
		if _, err := store.Finish(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	if st := b.call(t, http.MethodGet, "/api/v1/resends/"+one.TaskID, testToken, nil, "", true); st.status != http.StatusOK || !strings.Contains(st.body, `"state":"dead_letter"`) {
		t.Errorf("GET the one once final: %d %s", st.status, st.body)
	}
	status, body := b.get(t, "/api/v1/outcomes?username=john%40example.com", bearer())
	var page outcome.Page
	if err := json.Unmarshal([]byte(body), &page); status != http.StatusOK || err != nil || len(page.Records) != 1 {
		t.Errorf("GET /api/v1/outcomes?username=john: %d %s", status, body)
	}
	if status, body = b.get(t, "/api/v1/dead-letters/stats", bearer()); status != http.StatusOK || !strings.Contains(body, `"010-012"`) {
		t.Errorf("dead-letter stats: %d %s", status, body)
	}
	a = b.call(t, http.MethodPost, "/api/v1/dead-letters/replay", testToken, nil, `{"code":"010-012","dry_run":true}`, true)
	if a.status != http.StatusOK || !strings.Contains(a.body, `"matched":1`) {
		t.Errorf("a dry-run replay: %d %s", a.status, a.body)
	}
	if status, body = b.get(t, "/support/?username=john%40example.com", bearer()); status != http.StatusOK || !strings.Contains(body, "010-012") {
		t.Errorf("the support page of john: %d %.300s", status, body)
	}
}
