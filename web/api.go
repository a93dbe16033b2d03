package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/outcome"
)

// listParams are the query parameters of GET /api/v1/outcomes, the filters
// of `resendq outcomes list`.
var listParams = []string{"username", "project_id", "status", "reason", "code", "batch_id", "since", "until", "limit", "cursor"}

// outcomesAPI serves the read-only JSON API over the outcome records.
type outcomesAPI struct {
	store Outcomes
	log   logrus.FieldLogger
	clock clockwork.Clock
}

// list answers GET /api/v1/outcomes with one page of records, newest first:
// {"records":[...],"next_cursor":"..."}. Pass next_cursor as cursor for the
// next page; it is absent on the last one.
func (a *outcomesAPI) list(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r.URL.Query(), a.clock.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	page, err := a.store.List(r.Context(), f)
	switch {
	case errors.Is(err, outcome.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case err != nil:
		a.fail(w, r, err)
	default:
		writeJSON(w, http.StatusOK, page)
	}
}

// stats answers GET /api/v1/outcomes/stats with the object printed by
// `resendq outcomes stats --json`.
func (a *outcomesAPI) stats(w http.ResponseWriter, r *http.Request) {
	for name := range r.URL.Query() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q: /api/v1/outcomes/stats takes none", name))
		return
	}
	st, err := a.store.Stats(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *outcomesAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.log.WithError(err).WithField("path", r.URL.Path).Error("api: cannot read outcome records")
	writeError(w, http.StatusServiceUnavailable, "cannot read outcome records: "+err.Error())
}

// parseFilter reads the query of GET /api/v1/outcomes. Every error names the
// parameter at fault.
func parseFilter(q url.Values, now time.Time) (outcome.Filter, error) {
	var f outcome.Filter
	for name, values := range q {
		if !slices.Contains(listParams, name) {
			return f, fmt.Errorf("unknown parameter %q: want one of %s", name, strings.Join(listParams, ", "))
		}
		if len(values) > 1 {
			return f, fmt.Errorf("parameter %q is given %d times; give it once", name, len(values))
		}
	}
	f.Username = strings.TrimSpace(q.Get("username"))
	f.ProjectID = q.Get("project_id")
	f.Code = q.Get("code")
	f.BatchID = q.Get("batch_id")
	f.Cursor = q.Get("cursor")
	switch s := outcome.Status(q.Get("status")); s {
	case "", outcome.StatusSent, outcome.StatusDeadLetter:
		f.Status = s
	default:
		return f, fmt.Errorf("status %q: want sent or dead_letter", s)
	}
	switch rs := outcome.Reason(q.Get("reason")); rs {
	case "", outcome.ReasonRejected, outcome.ReasonRateLimited, outcome.ReasonExhausted, outcome.ReasonInvalid:
		f.Reason = rs
	default:
		return f, fmt.Errorf("reason %q: want rejected, rate_limited, exhausted or invalid", rs)
	}
	var err error
	if f.Since, err = parseTime("since", q.Get("since"), now); err != nil {
		return f, err
	}
	if f.Until, err = parseTime("until", q.Get("until"), now); err != nil {
		return f, err
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > outcome.MaxLimit {
			return f, fmt.Errorf("limit %q: want a whole number from 1 to %d (default %d)", s, outcome.MaxLimit, outcome.DefaultLimit)
		}
		f.Limit = n
	}
	return f, nil
}

// parseTime reads a time given as RFC 3339 or as a duration back from now
// ("24h", "90m").
func parseTime(name, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want a time such as 2026-11-25T10:00:00Z or a duration back such as 24h", name, s)
}

// errorBody is the JSON body of every API error.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		_ = json.NewEncoder(&buf).Encode(errorBody{Error: "encode answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
