package worker

import (
	"errors"
	"net/http"

	"github.com/resendq/resendq/loginapi"
	"github.com/resendq/resendq/outcome"
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
// what an answer of the Login API means, and, for a retry, its cause. status
// is the HTTP status (0 when no response arrived) and err what
// loginapi.Client returned.
//
//	the API answered                          action          cause          final outcome
//	2xx                                       Send                           sent
//	400, 404, 409, 422, other 4xx but 408/429 Reject                         dead_letter rejected (error_code from the body)
//	429                                       WaitRateLimit   rate_limited   sent later, or dead_letter rate_limited
//	5xx (and 1xx, 3xx)                        Retry           server_error   sent later, or dead_letter exhausted
//	408, or no answer in time                 Retry           timeout        sent later, or dead_letter exhausted
//	no answer (refused, reset)                Retry           connection     sent later, or dead_letter exhausted
//	(a task payload that does not decode)     —                              dead_letter invalid (see Handler)
func Classify(status int, err error) (Action, outcome.Cause) {
	var apiErr *loginapi.Error
	if errors.As(err, &apiErr) {
		status = apiErr.StatusCode
	} else if err != nil {
		if isTimeout(err) {
			return Retry, outcome.CauseTimeout
		}
		return Retry, outcome.CauseConnection
	}
	switch {
	case status >= 200 && status < 300:
		return Send, ""
	case status == http.StatusTooManyRequests:
		return WaitRateLimit, outcome.CauseRateLimited
	case status == http.StatusRequestTimeout:
		return Retry, outcome.CauseTimeout
	case status >= 400 && status < 500:
		return Reject, ""
	default: // 5xx, and anything unexpected (1xx, 3xx) is treated as transient
		return Retry, outcome.CauseServerError
	}
}
