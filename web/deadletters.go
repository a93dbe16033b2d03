package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/outcome"
)

// deadLettersAPI serves the dead letters: read them and count them, and,
// with write access, replay or purge them.
type deadLettersAPI struct {
	*outcomesAPI
	enq   *enqueue.Enqueuer
	write bool // Options.UIWrite
}

// list answers GET /api/v1/dead-letters as GET /api/v1/outcomes answers
// for status=dead_letter (its filters, state=open|replayed among them).
func (a *deadLettersAPI) list(w http.ResponseWriter, r *http.Request) {
	a.listOf(w, r, outcome.StatusDeadLetter)
}

// stats answers GET /api/v1/dead-letters/stats with the object printed by
// `resendq dlq stats --json`.
func (a *deadLettersAPI) stats(w http.ResponseWriter, r *http.Request) {
	a.count(w, r, func(ctx context.Context) (any, error) { return a.store.DeadLetters(ctx) })
}

// selector is the JSON body of the replay and purge endpoints: which dead
// letters, as the filters of the outcomes API, task IDs, or all of them.
type selector struct {
	Code      string   `json:"code,omitempty"`
	Reason    string   `json:"reason,omitempty"`
	ProjectID string   `json:"project_id,omitempty"`
	BatchID   string   `json:"batch_id,omitempty"`
	Username  string   `json:"username,omitempty"`
	State     string   `json:"state,omitempty"`
	Since     string   `json:"since,omitempty"`
	Until     string   `json:"until,omitempty"`
	TaskIDs   []string `json:"task_ids,omitempty"`
	All       bool     `json:"all,omitempty"`
	// Queue is where replays go (replay only): bulk (default) or signup.
	Queue  string `json:"queue,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// selection reads the request's selector; it answers 400 itself and
// returns false when the selector is wrong.
func (a *deadLettersAPI) selection(w http.ResponseWriter, r *http.Request, replay bool) (selector, enqueue.Selection, bool) {
	var s selector
	if !decodeBody(w, r, MaxResendBody, &s) {
		return s, enqueue.Selection{}, false
	}
	if s.Queue != "" && !replay {
		writeFieldError(w, http.StatusBadRequest, codeInvalid, "queue", "a purge takes no queue")
		return s, enqueue.Selection{}, false
	}
	params := map[string]string{
		"code": s.Code, "reason": s.Reason, "project_id": s.ProjectID, "batch_id": s.BatchID,
		"username": s.Username, "state": s.State, "since": s.Since, "until": s.Until,
	}
	f, err := outcome.ParseFilter(params, a.clock.Now())
	if err != nil {
		badFilter(w, err)
		return s, enqueue.Selection{}, false
	}
	sel := enqueue.Selection{Filter: f, TaskIDs: s.TaskIDs, All: s.All}
	if err := sel.Check(); err != nil {
		msg := err.Error()
		if errors.Is(err, enqueue.ErrNoSelection) {
			msg = "select dead letters by a filter (code, reason, project_id, batch_id, username, state, since, until), by task_ids, or all of them (\"all\": true)"
		}
		writeError(w, http.StatusBadRequest, codeInvalid, msg)
		return s, enqueue.Selection{}, false
	}
	if !s.DryRun && !a.write {
		writeError(w, http.StatusForbidden, codeForbidden,
			"this worker's HTTP surface is read-only: start it with --ui-write to replay or purge dead letters (a dry run works without)")
		return s, enqueue.Selection{}, false
	}
	return s, sel, true
}

// replay answers POST /api/v1/dead-letters/replay with the replay's
// summary, as `resendq dlq replay --json` prints it.
func (a *deadLettersAPI) replay(w http.ResponseWriter, r *http.Request) {
	s, sel, ok := a.selection(w, r, true)
	if !ok {
		return
	}
	opts := enqueue.ReplayOptions{Selection: sel, Queue: s.Queue, DryRun: s.DryRun}
	if err := opts.Check(); err != nil {
		writeFieldError(w, http.StatusBadRequest, codeInvalid, "queue", err.Error())
		return
	}
	sum, err := a.enq.ReplayDeadLetters(r.Context(), opts)
	if !s.DryRun {
		a.audit(r, "dlq replay", sel, sum.String(), err)
	}
	a.answer(w, r, sum, err)
}

// purge answers POST /api/v1/dead-letters/purge with the purge's summary,
// as `resendq dlq purge --json` prints it.
func (a *deadLettersAPI) purge(w http.ResponseWriter, r *http.Request) {
	s, sel, ok := a.selection(w, r, false)
	if !ok {
		return
	}
	sum, err := a.enq.PurgeDeadLetters(r.Context(), enqueue.PurgeOptions{Selection: sel, DryRun: s.DryRun})
	if !s.DryRun {
		a.audit(r, "dlq purge", sel, sum.String(), err)
	}
	a.answer(w, r, sum, err)
}

// answer writes a summary, or the error that stopped the work.
func (a *deadLettersAPI) answer(w http.ResponseWriter, r *http.Request, sum any, err error) {
	var nd *enqueue.NotDeadLetterError
	switch {
	case errors.As(err, &nd):
		writeFieldError(w, http.StatusBadRequest, codeInvalid, "task_ids", err.Error())
	case err != nil:
		a.log.WithError(err).WithField("path", r.URL.Path).Error("api: dead letters changed in part")
		unavailable(w, fmt.Sprintf("stopped part way (%v): Redis unavailable; the same request again finishes it", sum))
	default:
		writeJSON(w, http.StatusOK, sum)
	}
}

// audit writes the one log line of a change to dead letters over HTTP.
func (a *deadLettersAPI) audit(r *http.Request, what string, sel enqueue.Selection, result string, err error) {
	from := "http " + r.RemoteAddr
	if fwd := r.Header.Get("X-Forwarded-For"); fwd != "" {
		from += " for " + strings.TrimSpace(strings.Split(fwd, ",")[0])
	}
	e := a.log.WithField("audit", what).WithField("selection", sel.String()).WithField("result", result).WithField("from", from)
	if err != nil {
		e.WithError(err).Warn("dead letters changed in part")
		return
	}
	e.Info("dead letters changed")
}
