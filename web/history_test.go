package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/web"
)

// TestOutcomeWithItsHistory: GET /api/v1/outcomes/{task_id} answers what
// `resendq outcomes show --json` prints, as api/openapi.yaml says.
func TestOutcomeWithItsHistory(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	// "down..." fails with 500: one retry, then exhausted at 2 attempts.
	b.runWorker(t, "down@example.com", "sent@example.com")
	ctx := context.Background()
	show := func(user string) (answer, outcome.Timeline) {
		t.Helper()
		rec, ok, err := b.store.Latest(ctx, projectID, user)
		if err != nil || !ok {
			t.Fatalf("no record of %s: %v", user, err)
		}
		a := b.call(t, http.MethodGet, "/api/v1/outcomes/"+rec.TaskID, testToken, nil, "", true)
		var tl outcome.Timeline
		if err := json.Unmarshal([]byte(a.body), &tl); a.status != http.StatusOK || err != nil {
			t.Fatalf("GET the outcome of %s: %d %s (%v)", user, a.status, a.body, err)
		}
		if tl.TaskID != rec.TaskID || tl.Record == nil || tl.Record.TaskID != rec.TaskID {
			t.Errorf("%s: %s, want the record of task %s", user, a.body, rec.TaskID)
		}
		return a, tl
	}
	_, down := show("down@example.com")
	if down.Record.Reason != outcome.ReasonExhausted || len(down.History) != 1 {
		t.Fatalf("down: %+v, want exhausted after one attempt in the history", down)
	}
	if h := down.History[0]; h.HTTPStatus != 500 || h.Cause != outcome.CauseServerError || h.Latency <= 0 || h.At.After(down.Record.FinishedAt) {
		t.Errorf("down: attempt %+v, want a 500 before the record", h)
	}
	a, sent := show("sent@example.com")
	if sent.Record.Status != outcome.StatusSent || len(sent.History) != 0 || !strings.Contains(a.body, `"history":[]`) {
		t.Errorf("sent: %s, want the record and an empty history", a.body)
	}

	// A task still retrying has a history and no record yet.
	if err := b.store.AddAttempt(ctx, "running", outcome.Attempt{HTTPStatus: 429, ErrorCode: "0", Cause: outcome.CauseRateLimited}); err != nil {
		t.Fatal(err)
	}
	a = b.call(t, http.MethodGet, "/api/v1/outcomes/running", testToken, nil, "", true)
	if a.status != http.StatusOK || !strings.Contains(a.body, `"record":null`) || !strings.Contains(a.body, `"cause":"rate_limited"`) {
		t.Errorf("a running task: %d %s", a.status, a.body)
	}
	a = b.call(t, http.MethodGet, "/api/v1/outcomes/no-such-task", testToken, nil, "", true)
	if code, field := a.apiError(t); a.status != http.StatusNotFound || code != "not_found" || field != "task_id" {
		t.Errorf("an unknown task: %d %s", a.status, a.body)
	}
	if status, _ := b.get(t, "/api/v1/outcomes/running?verbose=1", bearer()); status != http.StatusBadRequest {
		t.Errorf("with a parameter: %d, want 400", status)
	}
	if status, _ := b.do(t, http.MethodPost, "/api/v1/outcomes/running", bearer(), nil); status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", status)
	}
	if status, body := b.get(t, "/api/v1/outcomes/stats", bearer()); status != http.StatusOK || !strings.Contains(body, `"dead_letter":1`) {
		t.Errorf("stats beside {task_id}: %d %s", status, body)
	}
}

func TestProducerTokenDoesNotReadHistories(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) { o.ProducerToken = producerToken })
	if err := b.store.AddAttempt(context.Background(), "t1", outcome.Attempt{HTTPStatus: 503, Cause: outcome.CauseServerError}); err != nil {
		t.Fatal(err)
	}
	if status, body := b.get(t, "/api/v1/outcomes/t1", "Bearer "+producerToken); status != http.StatusForbidden {
		t.Errorf("GET /api/v1/outcomes/t1 with the producer token: %d %s, want 403", status, body)
	}
}

// TestSpecListsEveryCause: the causes api/openapi.yaml lists are
// outcome.Causes().
func TestSpecListsEveryCause(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromFile("../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(doc.Components.Schemas["Attempt"].Value.Properties["cause"].Value.Enum)
	if want := fmt.Sprint(outcome.Causes()); got != want {
		t.Errorf("api/openapi.yaml lists the causes %s, want %s", got, want)
	}
}
