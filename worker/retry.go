package worker

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"

	"github.com/resendq/resendq/outcome"
)

// Backoff is the exponential backoff between retries of a transient failure
// or a rate-limited call: Initial, doubled each time, with ±50% jitter
// (cenkalti/backoff), never more than Max.
type Backoff struct {
	// Initial is the first delay. Default 1s.
	Initial time.Duration
	// Max caps every delay. Default 5m.
	Max time.Duration
	// Jitter is the randomization factor in [0,1]. Default 0.5; a negative
	// value means none (for tests).
	Jitter float64
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = time.Second
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Minute
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Jitter == 0 {
		b.Jitter = 0.5
	}
	if b.Jitter < 0 {
		b.Jitter = 0
	}
	return b
}

// Delay is the delay before retry number n (0 for the first retry).
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	eb := &backoff.ExponentialBackOff{
		InitialInterval:     b.Initial,
		RandomizationFactor: b.Jitter,
		Multiplier:          2,
		MaxInterval:         b.Max,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	eb.Reset()
	d := eb.NextBackOff()
	for i := 0; i < n && d < b.Max; i++ {
		d = eb.NextBackOff()
	}
	return min(d, b.Max) // the jitter may overshoot the cap; Max is a promise
}

// retryError asks asynq to retry a task after Delay. Failure says whether
// the attempt counts toward the task's MaxRetry (a 429 does not).
type retryError struct {
	err     error
	delay   time.Duration
	failure bool
	// reason is the dead letter's, should asynq archive the task instead
	// (no retry left).
	reason outcome.Reason
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// deadLetterError archives a task in asynq (its dead letter) with a message
// that says why, e.g. "login api 404 003-002: User not found.".
type deadLetterError struct {
	msg   string
	cause error
}

func (e *deadLetterError) Error() string   { return e.msg }
func (e *deadLetterError) Unwrap() []error { return []error{e.cause, asynq.SkipRetry} }

// RetryDelayFunc is the asynq RetryDelayFunc of the worker: the delay the
// handler chose, with the due time rounded up to a whole second of clock
// because asynq stores due times in whole Unix seconds (a Retry-After is
// never undercut). Errors the handler did not produce get fallback.Delay(n).
func RetryDelayFunc(clock clockwork.Clock, fallback Backoff) asynq.RetryDelayFunc {
	return func(n int, err error, _ *asynq.Task) time.Duration {
		d := fallback.Delay(n)
		var re *retryError
		if errors.As(err, &re) {
			d = re.delay
		}
		return roundUpDue(clock.Now(), d)
	}
}

// roundUpDue stretches d so that now+d falls on a whole second.
func roundUpDue(now time.Time, d time.Duration) time.Duration {
	due := now.Add(d)
	whole := due.Truncate(time.Second)
	if whole.Before(due) {
		whole = whole.Add(time.Second)
	}
	return whole.Sub(now)
}

// IsFailure is the asynq IsFailure of the worker: a rate-limited attempt does
// not count toward MaxRetry; everything else does.
func IsFailure(err error) bool {
	var re *retryError
	if errors.As(err, &re) {
		return re.failure
	}
	return err != nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
