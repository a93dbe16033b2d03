package loginapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is a non-2xx answer of the Login API. Branch on StatusCode and Code,
// never on Description: its text may change.
type Error struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Code is error.code of the JSON error body, e.g. "003-002"; empty when
	// the body is not that JSON.
	Code string
	// Description is error.description, or http.StatusText(StatusCode) when
	// the body does not carry one.
	Description string
	// RetryAfter is the wait the Retry-After header asks for (seconds or an
	// HTTP date); 0 when absent, invalid or in the past.
	RetryAfter time.Duration
}

// Error returns "login api 404 003-002: User not found." or, without a
// code, "login api 503: Service Unavailable".
func (e *Error) Error() string {
	s := "login api " + strconv.Itoa(e.StatusCode)
	if e.Code != "" {
		s += " " + e.Code
	}
	return s + ": " + e.Description
}

// errorBody is the JSON error shape of the API:
// {"error":{"code":"003-061","description":"Object not found.","details":{}}}.
type errorBody struct {
	Error *struct {
		Code        json.RawMessage `json:"code"`
		Description string          `json:"description"`
	} `json:"error"`
}

// CheckResponse turns an HTTP response into an error: nil for 2xx (the body
// is left unread), otherwise a *Error built from the status, the JSON error
// body (at most 64 KiB of it is read) and the Retry-After header, relative to
// now. The caller still closes resp.Body.
func CheckResponse(resp *http.Response, now time.Time) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	var data []byte
	if resp.Body != nil {
		data, _ = io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	}
	return answerError(resp.StatusCode, resp.Header.Get("Retry-After"), data, now)
}

// answerError is the *Error of a non-2xx answer: its status, its
// Retry-After header (relative to now) and its body.
func answerError(status int, retryAfter string, body []byte, now time.Time) *Error {
	e := &Error{StatusCode: status}
	if d, ok := ParseRetryAfter(retryAfter, now); ok {
		e.RetryAfter = d
	}
	e.Code, e.Description = parseErrorBody(body)
	if e.Description == "" {
		e.Description = http.StatusText(status)
	}
	return e
}

// parseErrorBody extracts error.code and error.description; both are empty
// when data is not the API's JSON error. A numeric code is kept as written.
func parseErrorBody(data []byte) (code, description string) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return "", ""
	}
	var body errorBody
	if json.Unmarshal(data, &body) != nil || body.Error == nil {
		return "", ""
	}
	raw := body.Error.Code
	switch {
	case len(raw) > 0 && raw[0] == '"':
		_ = json.Unmarshal(raw, &code)
	case len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9'):
		code = string(raw)
	}
	return code, body.Error.Description
}

// ParseRetryAfter parses a Retry-After value in either form: delta-seconds
// ("120") or an HTTP date (the three formats of http.ParseTime), the latter
// relative to now. A date in the past gives (0, true). An empty, negative,
// malformed or unrepresentably large value gives (0, false). Values are not
// capped: that is the caller's policy.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > math.MaxInt64/int64(time.Second) {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// IsRateLimited reports whether err is, or wraps, a *Error with status 429.
func IsRateLimited(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusTooManyRequests
}
