package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/tasks"
)

// Body size limits of the enqueue endpoints.
const (
	// MaxResendBody bounds the body of POST /api/v1/resends.
	MaxResendBody = 1 << 20
	// MaxBatchBody bounds the body of POST /api/v1/resends:batch.
	MaxBatchBody = 16 << 20
)

// IdempotencyHeader is the header of a request's idempotency key.
const IdempotencyHeader = "Idempotency-Key"

// resendsAPI serves the enqueue endpoints and the status look-up.
type resendsAPI struct {
	enq *enqueue.Enqueuer
	// group writes the single enqueues that come together in one Redis
	// call (group commit).
	group *enqueue.Grouper
	log   logrus.FieldLogger
}

// resendRequest is one resend as a producer sends it. Unknown fields are
// refused: a misspelt login_url must not go unnoticed.
type resendRequest struct {
	ProjectID string `json:"project_id"`
	Username  string `json:"username"`
	LoginURL  string `json:"login_url,omitempty"`
	Payload   string `json:"payload,omitempty"`
}

func (r resendRequest) resend() tasks.Resend {
	return tasks.Resend{ProjectID: r.ProjectID, Username: r.Username, LoginURL: r.LoginURL, Payload: r.Payload}.Normalize()
}

// request is the normalized form of a request, which its fingerprint
// under an idempotency key is made of.
func request(r tasks.Resend) resendRequest {
	return resendRequest{ProjectID: r.ProjectID, Username: r.Username, LoginURL: r.LoginURL, Payload: r.Payload}
}

// create answers POST /api/v1/resends: 202 and the enqueue's result.
func (a *resendsAPI) create(w http.ResponseWriter, r *http.Request) {
	var req resendRequest
	if !decodeBody(w, r, MaxResendBody, &req) {
		return
	}
	rs := req.resend()
	if err := rs.Validate(); err != nil {
		invalid(w, err)
		return
	}
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	if key == "" {
		res, err := a.group.Enqueue(r.Context(), rs, "")
		if err != nil {
			a.failEnqueue(w, r, err)
			return
		}
		writeJSON(w, http.StatusAccepted, res)
		return
	}
	fp, _ := json.Marshal(struct {
		Path string
		Req  resendRequest
	}{"resends", request(rs)})
	answer, replayed, err := a.enq.Once(r.Context(), key, fp, func(ctx context.Context, taskID func(int) string) ([]byte, error) {
		res, err := a.group.Enqueue(ctx, rs, taskID(0))
		if err != nil {
			return nil, err
		}
		return json.Marshal(res)
	})
	if err != nil {
		a.failEnqueue(w, r, err)
		return
	}
	var res enqueue.Result
	if err := json.Unmarshal(answer, &res); err != nil {
		a.failEnqueue(w, r, fmt.Errorf("the stored answer of the Idempotency-Key: %w", err))
		return
	}
	if replayed {
		res.Duplicate = true
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusAccepted, res)
}

// batchRequest is the body of POST /api/v1/resends:batch; each item is
// decoded on its own, so that a bad one is reported as its own result.
type batchRequest struct {
	Items []json.RawMessage `json:"items"`
}

// batchItem is one result of a batch, in the order of the request's
// items: a result, or the error of an item that was not enqueued.
type batchItem struct {
	*enqueue.Result
	Error *apiError `json:"error,omitempty"`
}

// batchAnswer is the answer of POST /api/v1/resends:batch.
type batchAnswer struct {
	Items []batchItem `json:"items"`
}

// errUnsettled is the error of a batch some of whose items may or may not
// have been enqueued: the whole batch answers 503, to be tried again.
var errUnsettled = errors.New("some items could not be enqueued: Redis failed")

// batch answers POST /api/v1/resends:batch: 200 and one result per item.
// Invalid items are reported and skipped; the valid ones are enqueued
// together. Should Redis fail for any item, the answer is 503: sending
// the batch again (with the same Idempotency-Key, or within the dedup
// window) enqueues only what is missing.
func (a *resendsAPI) batch(w http.ResponseWriter, r *http.Request) {
	var req batchRequest
	if !decodeBody(w, r, MaxBatchBody, &req) {
		return
	}
	switch n := len(req.Items); {
	case req.Items == nil:
		writeFieldError(w, http.StatusBadRequest, codeInvalid, "items", "items is required: {\"items\": [{\"project_id\": ..., \"username\": ...}, ...]}")
		return
	case n == 0:
		writeFieldError(w, http.StatusBadRequest, codeInvalid, "items", "items is empty")
		return
	case n > enqueue.MaxMany:
		writeFieldError(w, http.StatusBadRequest, codeInvalid, "items", fmt.Sprintf("%d items; at most %d in one batch", n, enqueue.MaxMany))
		return
	}
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	rs := make([]tasks.Resend, len(req.Items))
	norm := make([]resendRequest, len(req.Items))
	bad := make(map[int]*apiError) // items that are not a resend object
	for i, raw := range req.Items {
		var it resendRequest
		if e := decodeStrict(raw, &it); e != nil {
			e.Message = fmt.Sprintf("items[%d]: %s", i, e.Message)
			if e.Field != "" {
				e.Field = fmt.Sprintf("items[%d].%s", i, e.Field)
			}
			bad[i] = e
			norm[i] = resendRequest{Payload: string(raw)} // still part of the request's fingerprint
			continue
		}
		rs[i] = it.resend()
		norm[i] = request(rs[i])
	}
	run := func(ctx context.Context, taskID func(int) string) ([]byte, error) {
		results, err := a.enq.EnqueueMany(ctx, rs, taskID)
		if err != nil {
			return nil, err
		}
		ans := batchAnswer{Items: make([]batchItem, len(results))}
		for i, res := range results {
			var ve *tasks.ValidationError
			switch {
			case bad[i] != nil:
				ans.Items[i].Error = bad[i]
			case errors.As(res.Err, &ve):
				ans.Items[i].Error = &apiError{Code: codeInvalid, Message: fmt.Sprintf("items[%d]: %s", i, ve.Error()), Field: fmt.Sprintf("items[%d].%s", i, ve.Field)}
			case errors.Is(res.Err, enqueue.ErrBusy):
				return nil, res.Err
			case res.Err != nil:
				a.log.WithError(res.Err).WithField("task_id", res.TaskID).Error("api: enqueue of a batch item failed")
				return nil, errUnsettled
			default:
				ans.Items[i].Result = &res.Result
			}
		}
		return json.Marshal(ans)
	}
	var answer []byte
	var replayed bool
	var err error
	if key == "" {
		answer, err = run(r.Context(), nil)
	} else {
		fp, _ := json.Marshal(struct {
			Path  string
			Items []resendRequest
		}{"resends:batch", norm})
		answer, replayed, err = a.enq.Once(r.Context(), key, fp, run)
	}
	if err != nil {
		a.failEnqueue(w, r, err)
		return
	}
	if !replayed {
		writeRaw(w, http.StatusOK, answer)
		return
	}
	var ans batchAnswer
	if err := json.Unmarshal(answer, &ans); err != nil {
		a.failEnqueue(w, r, fmt.Errorf("the stored answer of the Idempotency-Key: %w", err))
		return
	}
	for _, it := range ans.Items {
		if it.Result != nil {
			it.Duplicate = true
		}
	}
	w.Header().Set("Idempotent-Replayed", "true")
	writeJSON(w, http.StatusOK, ans)
}

// get answers GET /api/v1/resends/{task_id}: where the resend stands.
func (a *resendsAPI) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("task_id")
	st, err := a.enq.Lookup(r.Context(), id)
	switch {
	case errors.Is(err, enqueue.ErrNotFound):
		writeFieldError(w, http.StatusNotFound, codeNotFound, "task_id", "no resend with task ID "+id+" (never enqueued, or done longer ago than outcome records are kept)")
	case err != nil:
		a.log.WithError(err).WithField("task_id", id).Error("api: cannot look up a resend")
		unavailable(w, "cannot look up the resend: Redis unavailable")
	default:
		writeJSON(w, http.StatusOK, st)
	}
}

// failEnqueue answers an enqueue that failed: 409 for a reused
// idempotency key, 400 for a bad one, else 503 (Redis, too few replicas
// acknowledged it, or a concurrent enqueue of the user not finished: try
// again).
func (a *resendsAPI) failEnqueue(w http.ResponseWriter, r *http.Request, err error) {
	var ve *tasks.ValidationError
	var re *enqueue.ReplicasError
	switch {
	case errors.Is(err, enqueue.ErrIdempotencyConflict):
		writeFieldError(w, http.StatusConflict, codeConflict, IdempotencyHeader, err.Error())
	case errors.As(err, &ve):
		invalid(w, err)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
	case errors.As(err, &re):
		a.log.WithField("path", r.URL.Path).WithField("replicas_acked", re.Acked).WithField("replicas_wanted", re.Want).
			Warn("api: enqueued, but too few Redis replicas acknowledged it")
		unavailable(w, re.Error()+"; try again with the same Idempotency-Key, or within the dedup window")
	default:
		a.log.WithError(err).WithField("path", r.URL.Path).Error("api: enqueue failed")
		msg := "the resend could not be enqueued: Redis unavailable; try again (with the same Idempotency-Key, no second email is sent)"
		if errors.Is(err, enqueue.ErrBusy) {
			msg = "another enqueue for this user has not finished; try again"
		}
		unavailable(w, msg)
	}
}

// idempotencyKey returns the request's idempotency key ("" if none), or
// answers 400 for a bad one.
func idempotencyKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	values := r.Header.Values(IdempotencyHeader)
	switch len(values) {
	case 0:
		return "", true
	case 1:
		if err := enqueue.CheckIdempotencyKey(values[0]); err != nil {
			writeFieldError(w, http.StatusBadRequest, codeInvalid, IdempotencyHeader, IdempotencyHeader+" "+err.Error())
			return "", false
		}
		return values[0], true
	default:
		writeFieldError(w, http.StatusBadRequest, codeInvalid, IdempotencyHeader, IdempotencyHeader+" is given more than once")
		return "", false
	}
}

// invalid answers 400 for a resend that breaks the contract.
func invalid(w http.ResponseWriter, err error) {
	var ve *tasks.ValidationError
	if errors.As(err, &ve) {
		writeFieldError(w, http.StatusBadRequest, codeInvalid, ve.Field, ve.Error())
		return
	}
	writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
}

// decodeBody reads a JSON body of at most limit bytes into v, or answers
// 415, 413 or 400 and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeFieldError(w, http.StatusUnsupportedMediaType, codeMediaType, "Content-Type",
			fmt.Sprintf("Content-Type %q: send the body as application/json", r.Header.Get("Content-Type")))
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("the body is over %d bytes; send less at once", limit))
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, codeInvalidJSON, "read the body: "+err.Error())
		return false
	}
	if e := decodeStrict(body, v); e != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: *e})
		return false
	}
	return true
}

// decodeStrict decodes one JSON value, and nothing after it, into v,
// refusing unknown fields. Its error names the field at fault, if one is.
func decodeStrict(data []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the JSON value")
		}
	}
	if err == nil {
		return nil
	}
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return &apiError{Code: codeInvalidJSON, Field: typeErr.Field,
			Message: fmt.Sprintf("%s: want a %s, got a JSON %s", typeErr.Field, typeErr.Type.Kind(), typeErr.Value)}
	case errors.As(err, &typeErr):
		return &apiError{Code: codeInvalidJSON, Message: "want a JSON object, got a JSON " + typeErr.Value}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &apiError{Code: codeInvalidJSON, Field: field, Message: fmt.Sprintf("unknown field %q", field)}
	case errors.As(err, &syntaxErr):
		return &apiError{Code: codeInvalidJSON, Message: fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, err)}
	case errors.Is(err, io.EOF):
		return &apiError{Code: codeInvalidJSON, Message: "the body is empty; send a JSON object"}
	default:
		return &apiError{Code: codeInvalidJSON, Message: "malformed JSON: " + err.Error()}
	}
}

// writeRaw writes an encoded JSON answer.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
