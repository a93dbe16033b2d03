package web

import (
	"bytes"
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
func (a *outcomesAPI) list(w http.ResponseWriter, r *http.Request) {
	params, err := queryParams(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f, err := outcome.ParseFilter(params, a.clock.Now())
	if err != nil {
		badFilter(w, err)
		return
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

// fail answers 503 for a failure of Redis, whose text (addresses, keys)
// goes to the log, not to the client.
func (a *outcomesAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	a.log.WithError(err).WithField("path", r.URL.Path).Error("api: cannot read outcome records")
	writeError(w, http.StatusServiceUnavailable, "cannot read outcome records: Redis unavailable")
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
		writeError(w, http.StatusBadRequest, fe.Describe(fe.Field))
		return
	}
	writeError(w, http.StatusBadRequest, err.Error())
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

// flowAPI answers GET /api/v1/flow with the object printed by `resendq
// status --json`: {"projects":[...]}, each a ratelimit.State.
type flowAPI struct {
	rdb redis.UniversalClient
	log logrus.FieldLogger
}

func (f flowAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for name := range r.URL.Query() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q: /api/v1/flow takes none", name))
		return
	}
	states, err := ratelimit.Status(r.Context(), f.rdb, "")
	if err != nil {
		f.log.WithError(err).WithField("path", r.URL.Path).Error("api: cannot read the fleet's flow control")
		writeError(w, http.StatusServiceUnavailable, "cannot read the fleet's flow control: Redis unavailable")
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Projects []ratelimit.State `json:"projects"`
	}{append([]ratelimit.State{}, states...)})
}
