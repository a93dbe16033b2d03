package web_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/web"
)

// TestSupportPageInABrowser is what a support agent does with a user on the
// phone, in headless Chromium with JavaScript off, by keyboard: search the
// user, see the dead letter with its Login API code, replay it once the
// cause is fixed, and see the email sent.
func TestSupportPageInABrowser(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) { o.UIWrite = true })
	api := fake.New()
	api.Script("john@example.com", fake.Behavior{Status: 400, Code: "010-012", Description: "Callback URL not found."})
	b.runWorkerOn(t, clientOf(t, api), "john@example.com", "alice@example.com")

	ctx := newBrowser(t)
	base, err := url.Parse(b.http.URL)
	if err != nil {
		t.Fatal(err)
	}
	base.User = url.UserPassword("support", testToken)
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatalf("turn JavaScript off: %v", err)
	}
	step(t, ctx, "open the support page with JavaScript off",
		chromedp.Navigate(base.String()+web.SupportPath),
		chromedp.WaitVisible(`#username`),
	)
	step(t, ctx, "type the username and press Enter",
		chromedp.Focus(`#username`),
		chromedp.SendKeys(`#username`, "john@example.com\r"),
		chromedp.WaitVisible(xpathText("code", "010-012")),
	)
	text := pageText(ctx)
	for _, want := range []string{"Resends of john@example.com", "dead letter", "rejected", "Callback URL not found."} {
		if !strings.Contains(text, want) {
			t.Errorf("the user's page lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "alice@example.com") {
		t.Errorf("the user's page shows another user:\n%s", text)
	}
	screenshot(t, ctx, "support-user.png")

	// The callback URL is fixed: replay.
	api.Script("john@example.com", fake.Behavior{})
	step(t, ctx, "replay the dead letter",
		chromedp.Click(`//button[starts-with(@aria-label, "Replay dead letter")]`),
		chromedp.WaitVisible(xpathText("p", "Replayed 1 dead letter")),
	)
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, ok, err := b.store.Latest(context.Background(), projectID, "john@example.com")
		if err != nil {
			t.Fatal(err)
		}
		if ok && rec.Status == outcome.StatusSent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replay was not sent within 30s: %+v", rec)
		}
		time.Sleep(50 * time.Millisecond)
	}
	step(t, ctx, "see it sent",
		chromedp.Navigate(base.String()+web.SupportPath+"?username=john%40example.com&project_id="+projectID),
		chromedp.WaitVisible(xpathText("span", "sent")),
	)
	text = pageText(ctx)
	for _, want := range []string{"replay of", "replayed as"} {
		if !strings.Contains(text, want) {
			t.Errorf("after the replay the page lacks %q:\n%s", want, text)
		}
	}
	if api.Count("john@example.com") != 2 {
		t.Errorf("the API got %d calls for john, want 2", api.Count("john@example.com"))
	}
	screenshot(t, ctx, "support-user-replayed.png")

	step(t, ctx, "the dead letters by code",
		chromedp.Navigate(base.String()+web.SupportPath+"dead-letters"),
		chromedp.WaitVisible(xpathText("code", "010-012")),
	)
	if text := pageText(ctx); !strings.Contains(text, "1 dead letters: 0 open, 1 replayed") {
		t.Errorf("the dead letters page:\n%s", text)
	}
	screenshot(t, ctx, "support-dead-letters.png")
}

func TestSupportPageIsReadOnlyWithoutWriteAccess(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.deadLetters(t, "010-012")
	status, body := b.get(t, web.SupportPath+"?username=010-012-a%40example.com", bearer())
	if status != http.StatusOK || !strings.Contains(body, "replay needs --ui-write") || strings.Contains(body, `action="/support/replay"`) {
		t.Errorf("user page without write access: %d\n%s", status, body)
	}
	if status, body := b.get(t, web.SupportPath+"dead-letters?confirm=purge&code=010-012", bearer()); status != 200 || strings.Contains(body, "Yes, purge") {
		t.Errorf("dead letters page without write access: %d\n%s", status, body)
	}
	if resp, _ := b.postForm(t, web.SupportPath+"dead-letters/purge", "code=010-012"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("purge without write access: %d", resp.StatusCode)
	}
	if st, _ := b.store.DeadLetters(context.Background()); st.Total != 1 {
		t.Errorf("dead letters after a refused purge: %+v", st)
	}
	if status, _ := b.get(t, web.SupportPath, ""); status != http.StatusUnauthorized {
		t.Errorf("support page without the token: %d", status)
	}
}

func TestSupportPageShowsTheAttemptHistory(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	for _, a := range []outcome.Attempt{
		{HTTPStatus: 503, ErrorCode: "0", Cause: outcome.CauseServerError, Latency: 40 * time.Millisecond},
		{Cause: outcome.CauseTimeout, Latency: 10 * time.Second, Error: "login api: timeout"},
	} {
		if err := b.store.AddAttempt(ctx, "slow-1", a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.store.Finish(ctx, outcome.Record{TaskID: "slow-1", ProjectID: projectID, Username: "slow@example.com",
		Queue: tasks.QueueSignup, Status: outcome.StatusSent, HTTPStatus: 204, Attempts: 3}); err != nil {
		t.Fatal(err)
	}
	status, body := b.get(t, web.SupportPath+"?username=slow%40example.com", bearer())
	for _, want := range []string{"2 earlier attempt(s)", "HTTP 503", "server_error", "no answer", "timeout, 10s", "login api: timeout"} {
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("the page lacks %q: %d\n%s", want, status, body)
		}
	}
}

func TestSupportPagePurgesACodeAfterConfirming(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) { o.UIWrite = true })
	b.deadLetters(t, "003-002", "003-002", "010-012")
	status, body := b.get(t, web.SupportPath+"dead-letters?confirm=purge&code=003-002", bearer())
	if status != 200 || !strings.Contains(body, "2 dead letters, open and replayed, would be deleted") || !strings.Contains(body, "Yes, purge") {
		t.Fatalf("confirmation: %d\n%s", status, body)
	}
	if st, _ := b.store.DeadLetters(context.Background()); st.Total != 3 {
		t.Fatalf("the confirmation step changed data: %+v", st)
	}
	resp, _ := b.postForm(t, web.SupportPath+"dead-letters/purge", "code=003-002")
	if resp.StatusCode != 200 || resp.Request.URL.Path != web.SupportPath+"dead-letters" {
		t.Errorf("after the purge: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	if st, _ := b.store.DeadLetters(context.Background()); st.Total != 1 || st.ByCode["010-012"].Open != 1 {
		t.Errorf("after the purge: %+v", st)
	}
}

func TestSupportPageShowsAndCancelsABatch(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *web.Options) { o.UIWrite = true })
	client := asynq.NewClientFromRedisClient(b.rdb)
	for _, u := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		r := tasks.Resend{ProjectID: projectID, Username: u, BatchID: "b1"}
		task, _ := tasks.NewTask(r)
		if _, err := client.Enqueue(task, tasks.Options(tasks.QueueBulk, enqueue.BatchTaskID("b1", r))...); err != nil {
			t.Fatal(err)
		}
	}
	status, body := b.get(t, web.SupportPath+"batches?batch_id=b1&confirm=cancel", bearer())
	if status != 200 || !strings.Contains(body, "<th scope=\"row\">Waiting</th><td>3</td>") || !strings.Contains(body, "Yes, cancel") {
		t.Fatalf("batch page: %d\n%s", status, body)
	}
	resp, page := b.postForm(t, web.SupportPath+"batches/cancel", "batch_id=b1")
	if resp.StatusCode != 200 || !strings.Contains(page, "Batch b1: cancelled 3") || !strings.Contains(page, "cancelled 3</span>") {
		t.Errorf("after the cancel: %d\n%s", resp.StatusCode, page)
	}
	if status, body := b.get(t, web.SupportPath+"batches?batch_id=not%20an%20id", bearer()); status != 200 || !strings.Contains(body, "class=\"error\"") {
		t.Errorf("a bad batch ID: %d\n%s", status, body)
	}
}

// postForm posts a form with the token, as the support page's buttons do,
// following the redirect; it returns the last answer and its body.
func (b *bundle) postForm(t *testing.T, path, form string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.http.URL+path, strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", bearer())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}
