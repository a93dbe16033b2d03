package outcome

import (
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid is wrapped by every error that rejects a caller's argument (a
// Record, Filter or cursor), so that callers can answer "bad request" with
// errors.Is(err, ErrInvalid).
var ErrInvalid = errors.New("outcome: invalid argument")

// Status is the final state of a resend task.
type Status string

// The final states of a task.
const (
	// StatusSent means the API answered 204: the email was sent.
	StatusSent Status = "sent"
	// StatusDeadLetter means the task gave up; Reason says why.
	StatusDeadLetter Status = "dead_letter"
)

// Reason says why a task became a dead letter; it is empty for sent tasks.
type Reason string

// The reasons for a dead letter.
const (
	// ReasonRejected means the API refused the call with a 4xx other than 408 and 429.
	ReasonRejected Reason = "rejected"
	// ReasonRateLimited means the API kept answering 429 until the wait cap was spent.
	ReasonRateLimited Reason = "rate_limited"
	// ReasonExhausted means transient failures (5xx, 408, timeouts) outlasted the retry cap.
	ReasonExhausted Reason = "exhausted"
	// ReasonInvalid means the task payload did not decode or validate.
	ReasonInvalid Reason = "invalid"
	// ReasonOutage means the Login API failed the project's calls (its
	// circuit open) for longer than the task may be held.
	ReasonOutage Reason = "outage"
	// ReasonCancelled means an operator cancelled the task's batch before
	// it was sent (`resendq batch cancel`); a replay may send it later.
	ReasonCancelled Reason = "cancelled"
)

var (
	statuses = []Status{StatusSent, StatusDeadLetter}
	reasons  = []Reason{ReasonRejected, ReasonRateLimited, ReasonExhausted, ReasonOutage, ReasonInvalid, ReasonCancelled}
)

// Reasons lists every dead-letter reason, in the order to show them: the
// one list of the vocabulary, for flags, metrics and summaries.
func Reasons() []Reason { return slices.Clone(reasons) }

// Record is the final outcome of one resend task, one per TaskID.
type Record struct {
	// TaskID is the asynq task ID; it identifies the record.
	TaskID string `json:"task_id"`
	// ProjectID is the Login project the call was made for.
	ProjectID string `json:"project_id"`
	// Username is the username or email address, stored after strings.TrimSpace.
	Username string `json:"username"`
	// LoginURL is the login_url query parameter of the call, if any.
	LoginURL string `json:"login_url,omitempty"`
	// Payload is the payload query parameter of the call, if any.
	Payload string `json:"payload,omitempty"`
	// Queue is the asynq queue the task ran in.
	Queue string `json:"queue"`
	// BatchID groups the tasks of one batch resend; empty for single ones.
	BatchID string `json:"batch_id,omitempty"`
	// Status is the final state.
	Status Status `json:"status"`
	// Reason says why a dead letter gave up; empty when Status is sent.
	Reason Reason `json:"reason,omitempty"`
	// HTTPStatus is the last HTTP status seen; 0 if none.
	HTTPStatus int `json:"http_status,omitempty"`
	// ErrorCode is the API's error code (e.g. "003-002") of the last answer, if any.
	ErrorCode string `json:"error_code,omitempty"`
	// ErrorDescription is the API's error text of the last answer, if any.
	ErrorDescription string `json:"error_description,omitempty"`
	// Attempts counts the calls made to the API, rate-limited ones included.
	Attempts int `json:"attempts"`
	// EnqueuedAt is when the task was enqueued.
	EnqueuedAt time.Time `json:"enqueued_at"`
	// FinishedAt is when the task reached its outcome, in milliseconds;
	// Finish sets it to the current time when it is zero.
	FinishedAt time.Time `json:"finished_at"`
	// ReplayOf is the task ID of the dead letter this task replayed; empty
	// for a first try.
	ReplayOf string `json:"replay_of,omitempty"`
	// ReplayedAs is the task ID of the replay of this dead letter, once it
	// was replayed (MarkReplayed); empty while it is open.
	ReplayedAs string `json:"replayed_as,omitempty"`
	// ReplayedAt is when it was replayed, in milliseconds; zero while open.
	ReplayedAt time.Time `json:"replayed_at,omitzero"`
}

// validate checks a record passed to Finish.
func (r *Record) validate() error {
	if r.TaskID == "" {
		return &FieldError{Field: "task_id", Problem: "is empty"}
	}
	if err := checkStatus(r.Status, false); err != nil {
		return err
	}
	switch {
	case r.Status == StatusSent && r.Reason != "":
		return &FieldError{Field: "reason", Value: string(r.Reason), Problem: "a sent record has no reason"}
	case r.Status == StatusDeadLetter:
		if err := checkReason(r.Reason, false); err != nil {
			return err
		}
	}
	if r.Attempts < 0 {
		return &FieldError{Field: "attempts", Value: strconv.Itoa(r.Attempts), Problem: "must not be negative"}
	}
	return nil
}

// checkStatus rejects an unknown status, and an empty one unless optional.
func checkStatus(s Status, optional bool) error {
	switch {
	case (optional && s == "") || slices.Contains(statuses, s):
		return nil
	case s == "":
		return &FieldError{Field: "status", Problem: "is required: one of " + join(statuses)}
	}
	return &FieldError{Field: "status", Value: string(s), Problem: "want one of " + join(statuses)}
}

// checkReason rejects an unknown reason, and an empty one unless optional.
func checkReason(r Reason, optional bool) error {
	switch {
	case (optional && r == "") || slices.Contains(reasons, r):
		return nil
	case r == "":
		return &FieldError{Field: "reason", Problem: "is required: one of " + join(reasons)}
	}
	return &FieldError{Field: "reason", Value: string(r), Problem: "want one of " + join(reasons)}
}

func join[T ~string](values []T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// appendIndexes appends the suffixes of the index keys that list r,
// newline-separated.
func (r *Record) appendIndexes(b []byte) []byte {
	b = append(b, "all\nstatus:"...)
	b = append(b, r.Status...)
	if r.Reason != "" {
		b = append(b, "\nreason:"...)
		b = append(b, r.Reason...)
	}
	if r.ErrorCode != "" {
		b = appendEscaped(append(b, "\ncode:"...), r.ErrorCode)
	}
	if r.ProjectID != "" {
		b = appendEscaped(append(b, "\nproject:"...), r.ProjectID)
	}
	if r.Username != "" {
		b = appendEscaped(append(b, "\nuser:"...), r.Username)
	}
	if r.BatchID != "" {
		b = appendEscaped(append(b, "\nbatch:"...), r.BatchID)
	}
	return b
}

// appendCounters appends the fields of the stats hash that count r,
// newline-separated.
func (r *Record) appendCounters(b []byte) []byte {
	b = append(b, r.Status...)
	if r.Reason != "" {
		b = append(b, "\nreason:"...)
		b = append(b, r.Reason...)
	}
	if r.ErrorCode != "" {
		b = appendEscaped(append(b, "\ncode:"...), r.ErrorCode)
	}
	if r.Status == StatusDeadLetter && r.ProjectID != "" {
		b = appendEscaped(append(b, "\ndead-project:"...), r.ProjectID)
	}
	return b
}

// replayCounters are the fields of the stats hash that count r as replayed,
// newline-separated.
func (r *Record) replayCounters() string {
	b := []byte("replayed")
	if r.Reason != "" {
		b = append(append(b, "\nreplayed-reason:"...), r.Reason...)
	}
	if r.ErrorCode != "" {
		b = appendEscaped(append(b, "\nreplayed-code:"...), r.ErrorCode)
	}
	if r.ProjectID != "" {
		b = appendEscaped(append(b, "\nreplayed-project:"...), r.ProjectID)
	}
	return string(b)
}

// escape makes s safe as the last part of a key and as an item of a
// newline-separated list: every byte other than ASCII letters, digits and
// "-._@+~" becomes %XX, so ':' and '\n' never appear.
func escape(s string) string {
	for i := 0; i < len(s); i++ {
		if !isPlain(s[i]) {
			return string(appendEscaped(make([]byte, 0, len(s)+16), s))
		}
	}
	return s
}

// appendEscaped appends s escaped as escape does.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isPlain(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return b
}

func isPlain(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '@' || c == '+' || c == '~'
}

// unescape reverses escape.
func unescape(s string) string {
	u, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return u
}
