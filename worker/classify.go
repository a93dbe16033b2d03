package worker

import (
	"errors"
	"net/http"

	"github.com/resendq/resendq/loginapi"
)

// Action is what the worker does with one answer of the Login API.
type Action int

// The actions of the outcome table.
const (
	// Send: the API accepted the request (2xx); the outcome is "sent".
	Send Action = iota
	// Reject: the API refused the request for good (4xx other than 408 and
	// 429); dead-letter now with reason "rejected" and the API's error code.
	Reject
	// WaitRateLimit: the API answered 429; retry after max(Retry-After,
	// backoff) without counting a failure, until the rate-limit wait cap is
	// spent (then dead-letter with reason "rate_limited").
	WaitRateLimit
	// Retry: a transient failure (5xx, 408, timeout, connection error); retry
	// with exponential backoff until the attempt cap (then dead-letter with
	// reason "exhausted").
	Retry
)

func (a Action) String() string {
	switch a {
	case Send:
		return "send"
	case Reject:
		return "reject"
	case WaitRateLimit:
		return "wait_rate_limit"
	case Retry:
		return "retry"
	}
	return "unknown"
}

// Classify is the outcome table of the design, the one place that decides
// what an answer of the Login API means. status is the HTTP status (0 when
// no response arrived) and err what loginapi.Client returned.
//
//	the API answered                          action          final outcome
//	2xx                                       Send            sent
//	400, 404, 409, 422, other 4xx but 408/429 Reject          dead_letter rejected (error_code from the body)
//	429                                       WaitRateLimit   sent later, or dead_letter rate_limited
//	5xx, 408, timeout, connection error       Retry           sent later, or dead_letter exhausted
//	(a task payload that does not decode)     —               dead_letter invalid (see Handler)
func Classify(status int, err error) Action {
	var apiErr *loginapi.Error
	if errors.As(err, &apiErr) {
		status = apiErr.StatusCode
	} else if err != nil {
		return Retry // no answer: timeout, connection refused or reset
	}
	switch {
	case status >= 200 && status < 300:
		return Send
	case status == http.StatusTooManyRequests:
		return WaitRateLimit
	case status == http.StatusRequestTimeout:
		return Retry
	case status >= 400 && status < 500:
		return Reject
	default: // 5xx, and anything unexpected (1xx, 3xx) is treated as transient
		return Retry
	}
}

// retryCause names why a task is retried, for metrics and logs.
func retryCause(err error) string {
	var apiErr *loginapi.Error
	switch {
	case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests:
		return "rate_limited"
	case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusRequestTimeout:
		return "timeout"
	case errors.As(err, &apiErr):
		return "server_error"
	case isTimeout(err):
		return "timeout"
	default:
		return "connection"
	}
}
