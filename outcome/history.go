package outcome

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// Limits of a task's attempt history.
const (
	// MaxHistory is how many attempts a task's history keeps: the newest.
	MaxHistory = 20
	// MaxAttemptError is the most bytes of Attempt.Error kept; longer texts
	// are cut on a character boundary.
	MaxAttemptError = 300
)

// Attempt is one call of a task to the Login API that did not end the
// task: the call was retried, or the task was held back after it. The call
// that ends a task is told by its Record, not by its history.
type Attempt struct {
	// At is when the call was made; AddAttempt sets it to now when zero.
	At time.Time
	// HTTPStatus is the status of the answer; 0 when there was none (a
	// timeout, a connection error).
	HTTPStatus int
	// ErrorCode is the API's error code of the answer (e.g. "0"), if any.
	ErrorCode string
	// Cause says why the task was retried.
	Cause Cause
	// Latency is how long the call took.
	Latency time.Duration
	// Error is the call's error text, if any, cut to MaxAttemptError bytes.
	// It is shown to operators: the caller leaves out email addresses and
	// secrets.
	Error string
}

// attemptJSON is the JSON form of an Attempt, in Redis and in answers.
type attemptJSON struct {
	At         time.Time `json:"at"`
	HTTPStatus int       `json:"http_status"`
	ErrorCode  string    `json:"error_code,omitempty"`
	Cause      Cause     `json:"cause"`
	LatencyMS  float64   `json:"latency_ms"`
	Error      string    `json:"error,omitempty"`
}

// MarshalJSON encodes a as {"at", "http_status", "error_code", "cause",
// "latency_ms", "error"}, its latency in milliseconds to the microsecond.
func (a Attempt) MarshalJSON() ([]byte, error) {
	return json.Marshal(attemptJSON{
		At: a.At, HTTPStatus: a.HTTPStatus, ErrorCode: a.ErrorCode, Cause: a.Cause,
		LatencyMS: float64(a.Latency.Microseconds()) / 1000, Error: a.Error,
	})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (a *Attempt) UnmarshalJSON(b []byte) error {
	var j attemptJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*a = Attempt{
		At: j.At, HTTPStatus: j.HTTPStatus, ErrorCode: j.ErrorCode, Cause: j.Cause,
		Latency: time.Duration(math.Round(j.LatencyMS*1000)) * time.Microsecond, Error: j.Error,
	}
	return nil
}

// AddAttempt appends a to the history of a task that is not final yet, in
// one round trip, keeping the newest MaxHistory attempts. Like the task's
// running state (see RateLimited), the history expires after the retention
// period while the task goes on; once the task is finished it lives as
// long as the record and Trim removes both. At is cut to milliseconds.
func (s *Store) AddAttempt(ctx context.Context, taskID string, a Attempt) error {
	if taskID == "" {
		return &FieldError{Field: "task_id", Problem: "is empty"}
	}
	if !slices.Contains(causes, a.Cause) {
		return &FieldError{Field: "cause", Value: string(a.Cause), Problem: "want one of " + join(causes)}
	}
	if a.At.IsZero() {
		a.At = s.clock.Now()
	}
	a.At = time.UnixMilli(a.At.UnixMilli()).UTC()
	a.Error = cut(a.Error, MaxAttemptError)
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("outcome: encode an attempt of task %s: %w", taskID, err)
	}
	err = addAttemptScript.Run(ctx, s.rdb, []string{s.of(taskID).historyPrefix + taskID, s.of(taskID).ratePrefix + taskID},
		body, MaxHistory, s.retention.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("outcome: record an attempt of task %s: %w", taskID, err)
	}
	return nil
}

// cut returns s cut to at most n bytes, on a character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// History returns the attempt history of a task, oldest first: none when
// the task made no call short of its end (a task sent on its first call),
// or when it is unknown.
func (s *Store) History(ctx context.Context, taskID string) ([]Attempt, error) {
	items, err := s.rdb.LRange(ctx, s.of(taskID).historyPrefix+taskID, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("outcome: attempt history of task %s: %w", taskID, err)
	}
	return decodeHistory(taskID, items)
}

func decodeHistory(taskID string, items []string) ([]Attempt, error) {
	out := make([]Attempt, len(items))
	for i, it := range items {
		if err := json.Unmarshal([]byte(it), &out[i]); err != nil {
			return nil, fmt.Errorf("outcome: decode attempt history of task %s: %w", taskID, err)
		}
	}
	return out, nil
}

// Timeline is what is known of one task: its outcome record once it is
// final, and the attempts that did not end it.
type Timeline struct {
	// TaskID is the task's ID.
	TaskID string `json:"task_id"`
	// Record is the task's outcome record; nil while the task is not final.
	Record *Record `json:"record"`
	// History is the task's attempt history, oldest first; never nil.
	History []Attempt `json:"history"`
}

// Timeline returns the record and the attempt history of a task in one
// round trip, and false when it has neither: a task never enqueued, one
// still waiting for its first call, one sent on its first call whose
// record is being written, or one trimmed after the retention period.
func (s *Store) Timeline(ctx context.Context, taskID string) (Timeline, bool, error) {
	if taskID == "" {
		return Timeline{}, false, &FieldError{Field: "task_id", Problem: "is empty"}
	}
	var rec *redis.SliceCmd
	var hist *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		sh := s.of(taskID)
		rec = p.HMGet(ctx, sh.recordPrefix+taskID, "record", "attempts")
		hist = p.LRange(ctx, sh.historyPrefix+taskID, 0, -1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Timeline{}, false, fmt.Errorf("outcome: timeline of task %s: %w", taskID, err)
	}
	tl := Timeline{TaskID: taskID}
	if tl.History, err = decodeHistory(taskID, hist.Val()); err != nil {
		return Timeline{}, false, err
	}
	if vals := rec.Val(); len(vals) == 2 {
		if body, ok := vals[0].(string); ok {
			attempts, _ := vals[1].(string)
			r, err := decode(body, attempts)
			if err != nil {
				return Timeline{}, false, err
			}
			tl.Record = &r
		}
	}
	return tl, tl.Record != nil || len(tl.History) > 0, nil
}
