package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/outcome"
)

// SupportPath is where the support page is served.
const SupportPath = "/support/"

//go:embed templates/*.html
var templateFS embed.FS

var supportTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"ms": func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	"dash": func(s string) string {
		if s == "" {
			return "–"
		}
		return s
	},
}).ParseFS(templateFS, "templates/*.html"))

// supportPage serves the support page: every resend of a user, newest first,
// and the dead letters grouped by code; with write access, a dead letter
// can be replayed, and the dead letters of a code replayed or purged after a
// confirmation step. Server-rendered, no JavaScript.
type supportPage struct {
	*deadLettersAPI
}

// userLimit is how many of a user's records the page shows.
const userLimit = 100

// userView is what the page shows of one user.
type userView struct {
	Username, ProjectID string
	Searched            bool
	Records             []userRecord
	More                bool // more than userLimit records
	Write               bool
	Message             string
	Error               string
}

// userRecord is a record with its attempt history, oldest first.
type userRecord struct {
	outcome.Record
	History []outcome.Attempt
}

// user answers GET /support/: the search form, and the resends of the
// username in the query (of project_id, when given).
func (p *supportPage) user(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v := userView{
		Username: strings.TrimSpace(q.Get("username")), ProjectID: strings.TrimSpace(q.Get("project_id")),
		Write: p.write, Message: q.Get("done"),
	}
	if v.Username != "" {
		v.Searched = true
		page, err := p.store.List(r.Context(), outcome.Filter{Username: v.Username, ProjectID: v.ProjectID, Limit: userLimit})
		switch {
		case errors.Is(err, outcome.ErrInvalid):
			v.Error = err.Error()
		case err != nil:
			p.log.WithError(err).WithField("path", r.URL.Path).Error("support: cannot read outcome records")
			v.Error = "cannot read outcome records: Redis unavailable; try again"
		default:
			v.More = page.NextCursor != ""
			for _, rec := range page.Records {
				ur := userRecord{Record: rec}
				if rec.Attempts > 1 { // only a task called more than once has a history
					tl, _, err := p.store.Timeline(r.Context(), rec.TaskID)
					if err != nil {
						p.log.WithError(err).WithField("path", r.URL.Path).Error("support: cannot read an attempt history")
					}
					ur.History = tl.History
				}
				v.Records = append(v.Records, ur)
			}
		}
	}
	p.render(w, "user.html", v)
}

// replayOne answers POST /support/replay: replay one dead letter (task_id),
// then back to its user.
func (p *supportPage) replayOne(w http.ResponseWriter, r *http.Request) {
	back := url.Values{"username": {r.PostFormValue("username")}}
	if pid := r.PostFormValue("project_id"); pid != "" {
		back.Set("project_id", pid)
	}
	if !p.write {
		p.readOnly(w)
		return
	}
	id := r.PostFormValue("task_id")
	sel := enqueue.Selection{TaskIDs: []string{id}}
	sum, err := p.enq.ReplayDeadLetters(r.Context(), enqueue.ReplayOptions{Selection: sel})
	p.audit(r, "support replay", sel, sum.String(), err)
	if msg, ok := p.failed(r, err); !ok {
		back.Set("done", msg)
	} else {
		back.Set("done", replayMessage(sum))
	}
	http.Redirect(w, r, SupportPath+"?"+back.Encode(), http.StatusSeeOther)
}

func replayMessage(s enqueue.ReplaySummary) string {
	switch {
	case s.Replayed > 0:
		return fmt.Sprintf("Replayed %d dead letter(s): the new resends are queued.", s.Replayed)
	case s.AlreadyReplayed > 0:
		return "Already replayed: nothing sent again."
	case s.Superseded > 0:
		return "Not replayed: superseded. The user was sent an email since, has a newer dead letter to replay, or a resend on its way."
	case s.StillInvalid > 0:
		return "Not replayed: the request is invalid."
	}
	return "Nothing to replay."
}

// codeRow is one line of the dead letters by code.
type codeRow struct {
	Code string
	outcome.OpenReplayed
}

// deadLettersView is what the page shows of the dead letters.
type deadLettersView struct {
	Stats   outcome.DeadLetterStats
	Codes   []codeRow
	Write   bool
	Message string
	Error   string
	// Confirm, when set, asks to confirm Action on the dead letters of Code.
	Confirm *confirmView
}

type confirmView struct {
	Action, Code string
	Replay       enqueue.ReplaySummary
	Purge        enqueue.PurgeSummary
}

// deadLetters answers GET /support/dead-letters: the dead letters by code,
// open and replayed; with ?confirm=replay|purge&code=C, what that would do
// and a button to do it.
func (p *supportPage) deadLetters(w http.ResponseWriter, r *http.Request) {
	v := deadLettersView{Write: p.write, Message: r.URL.Query().Get("done")}
	st, err := p.store.DeadLetters(r.Context())
	if err != nil {
		p.log.WithError(err).WithField("path", r.URL.Path).Error("support: cannot read dead letters")
		v.Error = "cannot read dead letters: Redis unavailable; try again"
		p.render(w, "deadletters.html", v)
		return
	}
	v.Stats = st
	for code, n := range st.ByCode {
		v.Codes = append(v.Codes, codeRow{code, n})
	}
	sort.Slice(v.Codes, func(i, j int) bool {
		if v.Codes[i].Open != v.Codes[j].Open {
			return v.Codes[i].Open > v.Codes[j].Open
		}
		return v.Codes[i].Code < v.Codes[j].Code
	})
	if action, code := r.URL.Query().Get("confirm"), r.URL.Query().Get("code"); action != "" && p.write {
		c := &confirmView{Action: action, Code: code}
		sel := enqueue.Selection{Filter: outcome.Filter{Code: code, State: outcome.StateOpen}}
		switch action {
		case "replay":
			c.Replay, err = p.enq.ReplayDeadLetters(r.Context(), enqueue.ReplayOptions{Selection: sel, DryRun: true})
		case "purge":
			sel.Filter.State = ""
			c.Purge, err = p.enq.PurgeDeadLetters(r.Context(), enqueue.PurgeOptions{Selection: sel, DryRun: true})
		default:
			err = fmt.Errorf("%w: unknown action %q", outcome.ErrInvalid, action)
		}
		if msg, ok := p.failed(r, err); !ok {
			v.Error = msg
		} else {
			v.Confirm = c
		}
	}
	p.render(w, "deadletters.html", v)
}

// codeAction answers POST /support/dead-letters/{action}: replay the open
// dead letters of a code, or purge all of them, once confirmed.
func (p *supportPage) codeAction(w http.ResponseWriter, r *http.Request) {
	if !p.write {
		p.readOnly(w)
		return
	}
	code := r.PostFormValue("code")
	if code == "" {
		http.Error(w, "code is required", http.StatusBadRequest)
		return
	}
	var done string
	var err error
	switch action := r.PathValue("action"); action {
	case "replay":
		sel := enqueue.Selection{Filter: outcome.Filter{Code: code, State: outcome.StateOpen}}
		var sum enqueue.ReplaySummary
		sum, err = p.enq.ReplayDeadLetters(r.Context(), enqueue.ReplayOptions{Selection: sel})
		p.audit(r, "support replay", sel, sum.String(), err)
		done = fmt.Sprintf("Code %s: %s.", code, sum)
	case "purge":
		sel := enqueue.Selection{Filter: outcome.Filter{Code: code}}
		var sum enqueue.PurgeSummary
		sum, err = p.enq.PurgeDeadLetters(r.Context(), enqueue.PurgeOptions{Selection: sel})
		p.audit(r, "support purge", sel, sum.String(), err)
		done = fmt.Sprintf("Code %s: %s.", code, sum)
	default:
		http.NotFound(w, r)
		return
	}
	if msg, ok := p.failed(r, err); !ok {
		done = msg
	}
	http.Redirect(w, r, SupportPath+"dead-letters?"+url.Values{"done": {done}}.Encode(), http.StatusSeeOther)
}

// batchView is what the page shows of a batch.
type batchView struct {
	BatchID  string
	Searched bool
	Status   enqueue.BatchStatus
	Codes    []string
	Write    bool
	Confirm  bool
	Message  string
	Error    string
}

// batch answers GET /support/batches: where the batch of the query
// (batch_id) stands; with confirm=cancel, a button to cancel what of it is
// not sent yet.
func (p *supportPage) batch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v := batchView{BatchID: strings.TrimSpace(q.Get("batch_id")), Write: p.write, Message: q.Get("done")}
	if v.BatchID != "" {
		v.Searched = true
		st, err := p.enq.BatchStatus(r.Context(), v.BatchID)
		if msg, ok := p.failed(r, batchErr(err)); !ok {
			v.Error = msg
		} else {
			v.Status = st
			for c := range st.ByCode {
				v.Codes = append(v.Codes, c)
			}
			sort.Strings(v.Codes)
			v.Confirm = q.Get("confirm") == "cancel" && p.write && st.Waiting > 0
		}
	}
	p.render(w, "batch.html", v)
}

// cancelBatch answers POST /support/batches/cancel: cancel the batch
// (batch_id) once confirmed, then back to it.
func (p *supportPage) cancelBatch(w http.ResponseWriter, r *http.Request) {
	if !p.write {
		p.readOnly(w)
		return
	}
	id := r.PostFormValue("batch_id")
	sum, err := p.enq.CancelBatch(r.Context(), id)
	p.audit(r, "support batch cancel", enqueue.Selection{Filter: outcome.Filter{BatchID: id}}, sum.String(), err)
	done := fmt.Sprintf("Batch %s: %s.", id, sum)
	if msg, ok := p.failed(r, batchErr(err)); !ok {
		done = msg
	}
	http.Redirect(w, r, SupportPath+"batches?"+url.Values{"batch_id": {id}, "done": {done}}.Encode(), http.StatusSeeOther)
}

// batchErr makes a bad batch ID an invalid argument.
func batchErr(err error) error {
	if err != nil && strings.HasPrefix(err.Error(), "batch ID ") {
		return fmt.Errorf("%w: %w", outcome.ErrInvalid, err)
	}
	return err
}

// failed turns err into a message for the page; ok when there is none.
func (p *supportPage) failed(r *http.Request, err error) (string, bool) {
	var nd *enqueue.NotDeadLetterError
	switch {
	case err == nil:
		return "", true
	case errors.As(err, &nd), errors.Is(err, outcome.ErrInvalid):
		return err.Error(), false
	case errors.Is(err, context.Canceled):
		return "stopped: the request was cancelled", false
	}
	p.log.WithError(err).WithField("path", r.URL.Path).Error("support: dead letters changed in part")
	return "stopped part way: Redis unavailable; the same action again finishes it", false
}

func (p *supportPage) readOnly(w http.ResponseWriter) {
	http.Error(w, "read-only: start the worker with --ui-write to replay or purge dead letters", http.StatusForbidden)
}

func (p *supportPage) render(w http.ResponseWriter, name string, v any) {
	var b strings.Builder
	if err := supportTemplates.ExecuteTemplate(&b, name, v); err != nil {
		p.log.WithError(err).Error("support: render " + name)
		http.Error(w, "cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(b.String()))
}
