package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
)

// outcomesAPI serves the read-only JSON API over the outcome records.
type outcomesAPI struct {
	store Outcomes
	log   logrus.FieldLogger
	clock clockwork.Clock
}

// list answers GET /api/v1/outcomes with one page of records, newest first:
// {"records":[...],"next_cursor":"..."}. Pass next_cursor as cursor for the
// next page; it is absent on the last one.
func (a *outcomesAPI) list(w http.ResponseWriter, r *http.Request) { a.listOf(w, r, "") }

// listOf answers a list of records with the filters of the query; with
// only set, of that status only (a status parameter is then refused).
func (a *outcomesAPI) listOf(w http.ResponseWriter, r *http.Request, only outcome.Status) {
	params, err := queryParams(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
		return
	}
	if _, ok := params["status"]; ok && only != "" {
		writeFieldError(w, http.StatusBadRequest, codeInvalid, "status", fmt.Sprintf("%s lists %s records only; use /api/v1/outcomes for others", r.URL.Path, only))
		return
	}
	f, err := outcome.ParseFilter(params, a.clock.Now())
	if err != nil {
		badFilter(w, err)
		return
	}
	if only != "" {
		f.Status = only
	}
	page, err := a.store.List(r.Context(), f)
	switch {
	case errors.Is(err, outcome.ErrInvalid):
		badFilter(w, err)
	case err != nil:
		a.fail(w, r, err)
	default:
		writeJSON(w, http.StatusOK, page)
	}
}

// stats answers GET /api/v1/outcomes/stats with the object printed by
// `resendq outcomes stats --json`.
func (a *outcomesAPI) stats(w http.ResponseWriter, r *http.Request) {
	a.count(w, r, func(ctx context.Context) (any, error) { return a.store.Stats(ctx) })
}

// count answers a request for counts, which takes no parameter.
func (a *outcomesAPI) count(w http.ResponseWriter, r *http.Request, read func(context.Context) (any, error)) {
	for name := range r.URL.Query() {
		writeFieldError(w, http.StatusBadRequest, codeInvalid, name, fmt.Sprintf("unknown parameter %q: %s takes none", name, r.URL.Path))
		return
	}
	v, err := read(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// show answers GET /api/v1/outcomes/{task_id} with the object printed by
// `resendq outcomes show --json`: {"task_id", "record", "history"}, the
// record null while the task is not final, the history its attempts
// before the last one, oldest first.
func (a *outcomesAPI) show(w http.ResponseWriter, r *http.Request) {
	for name := range r.URL.Query() {
		writeFieldError(w, http.StatusBadRequest, codeInvalid, name, fmt.Sprintf("unknown parameter %q: /api/v1/outcomes/{task_id} takes none", name))
		return
	}
	id := r.PathValue("task_id")
	tl, ok, err := a.store.Timeline(r.Context(), id)
	switch {
	case err != nil:
		a.fail(w, r, err)
	case !ok:
		writeFieldError(w, http.StatusNotFound, codeNotFound, "task_id", "no outcome record and no attempt history for task ID "+id+
			" (never enqueued, not called yet, or done longer ago than outcome records are kept)")
	default:
		writeJSON(w, http.StatusOK, tl)
	}
}

// fail answers 503 for a failure of Redis, whose text (addresses, keys)
// goes to the log, not to the client.
func (a *outcomesAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.log.WithError(err).WithField("path", r.URL.Path).Error("api: cannot read outcome records")
	unavailable(w, "cannot read outcome records: Redis unavailable")
}

// queryParams are the parameters of a query, each given once.
func queryParams(q url.Values) (map[string]string, error) {
	params := make(map[string]string, len(q))
	for name, values := range q {
		if len(values) > 1 {
			return nil, fmt.Errorf("parameter %q is given %d times; give it once", name, len(values))
		}
		params[name] = values[0]
	}
	return params, nil
}

// badFilter answers 400 for a filter the outcome package refused.
func badFilter(w http.ResponseWriter, err error) {
	var fe *outcome.FieldError
	if errors.As(err, &fe) {
		writeFieldError(w, http.StatusBadRequest, codeInvalid, fe.Field, fe.Describe(fe.Field))
		return
	}
	writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
}

// Codes of API errors: what went wrong, for programs; the message says it
// for people.
const (
	codeInvalid          = "invalid"                // a parameter or a field breaks the contract (field names it)
	codeInvalidJSON      = "invalid_json"           // the body is not the JSON asked for
	codeUnauthorized     = "unauthorized"           // no token, or a wrong one
	codeForbidden        = "forbidden"              // the token may not do this
	codeNotFound         = "not_found"              // no such endpoint, or no such resend
	codeMethodNotAllowed = "method_not_allowed"     // the endpoint takes other methods
	codeConflict         = "idempotency_conflict"   // the Idempotency-Key was used for another request
	codeTooLarge         = "too_large"              // the body is over its limit
	codeMediaType        = "unsupported_media_type" // the body is not application/json
	codeUnavailable      = "unavailable"            // Redis fails: try again (same Idempotency-Key)
)

// apiError is the error of every API answer that is not a success.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the parameter, field or header at fault, when one is.
	Field string `json:"field,omitempty"`
}

// errorBody is the JSON body of every API error: {"error":{...}}.
type errorBody struct {
	Error apiError `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: apiError{Code: code, Message: msg}})
}

func writeFieldError(w http.ResponseWriter, status int, code, field, msg string) {
	writeJSON(w, status, errorBody{Error: apiError{Code: code, Message: msg, Field: field}})
}

// unavailable answers 503 with Retry-After: Redis fails, and the request
// may be tried again.
func unavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, codeUnavailable, msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		_ = json.NewEncoder(&buf).Encode(errorBody{Error: apiError{Code: "internal", Message: "encode answer: " + err.Error()}})
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// flowAPI answers GET /api/v1/flow with the object printed by `resendq
// status --json`: {"projects":[...]}, each a ratelimit.State.
type flowAPI struct {
	rdb redis.UniversalClient
	log logrus.FieldLogger
}

func (f flowAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for name := range r.URL.Query() {
		writeFieldError(w, http.StatusBadRequest, codeInvalid, name, fmt.Sprintf("unknown parameter %q: /api/v1/flow takes none", name))
		return
	}
	states, err := ratelimit.Status(r.Context(), f.rdb, "")
	if err != nil {
		f.log.WithError(err).WithField("path", r.URL.Path).Error("api: cannot read the fleet's flow control")
		unavailable(w, "cannot read the fleet's flow control: Redis unavailable")
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Projects []ratelimit.State `json:"projects"`
	}{append([]ratelimit.State{}, states...)})
}
