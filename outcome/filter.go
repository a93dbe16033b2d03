package outcome

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FilterParams are the names of the parameters of a Filter as text: the
// query parameters of the HTTP API, and the command line's flags with "-"
// for "_" (--project-id for project_id).
var FilterParams = []string{"username", "project_id", "status", "reason", "code", "batch_id", "state", "since", "until", "limit", "cursor"}

// FieldError says which parameter of a filter or record is wrong, and why.
// It wraps ErrInvalid.
type FieldError struct {
	// Field is the parameter's name, as in FilterParams.
	Field string
	// Value is the value given, quoted in messages; empty when it says
	// nothing (a missing or unknown parameter).
	Value string
	// Problem says what is wrong, e.g. "want one of sent, dead_letter".
	Problem string
}

func (e *FieldError) Error() string { return ErrInvalid.Error() + ": " + e.Describe(e.Field) }

func (e *FieldError) Unwrap() error { return ErrInvalid }

// Describe says what is wrong, calling the field name: a flag ("--status")
// on the command line, the parameter ("status") over HTTP.
func (e *FieldError) Describe(name string) string {
	if e.Value != "" {
		return fmt.Sprintf("%s %q: %s", name, e.Value, e.Problem)
	}
	return name + " " + e.Problem
}

// ParseFilter reads a Filter from parameters given as text, named as in
// FilterParams (another name is an error): status and reason as their
// values, since and until as RFC 3339 times or durations back from now
// ("24h"), limit as a whole number from 1 to MaxLimit. Empty values are
// left out. It checks the Filter as List would; every error is a
// *FieldError.
func ParseFilter(params map[string]string, now time.Time) (Filter, error) {
	var f Filter
	for name := range params {
		if !slices.Contains(FilterParams, name) {
			return f, &FieldError{Field: name, Problem: "is not a filter; want one of " + strings.Join(FilterParams, ", ")}
		}
	}
	f.Username = strings.TrimSpace(params["username"])
	f.ProjectID = params["project_id"]
	f.Status = Status(params["status"])
	f.Reason = Reason(params["reason"])
	f.Code = params["code"]
	f.BatchID = params["batch_id"]
	f.State = State(params["state"])
	f.Cursor = params["cursor"]
	var err error
	if f.Since, err = parseTime("since", params["since"], now); err != nil {
		return f, err
	}
	if f.Until, err = parseTime("until", params["until"], now); err != nil {
		return f, err
	}
	if s := params["limit"]; s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return f, &FieldError{Field: "limit", Value: s, Problem: fmt.Sprintf("want a whole number from 1 to %d (default %d)", MaxLimit, DefaultLimit)}
		}
		f.Limit = n
	}
	return f, f.Validate()
}

// parseTime reads a time given as RFC 3339 or as a duration back from now.
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
	return time.Time{}, &FieldError{Field: name, Value: s, Problem: "want a time such as 2026-11-25T10:00:00Z or a duration back such as 24h"}
}
