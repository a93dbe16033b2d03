// Package worker processes resend tasks: it calls the Login API, classifies
// the answer (Classify, the outcome table), schedules retries and records
// every final outcome.
package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/loginapi"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
	"github.com/resendq/resendq/tasks"
)

// API is the Login API as the handler needs it; *loginapi.Client is one.
type API interface {
	ResendConfirmation(ctx context.Context, req loginapi.Request) (status int, err error)
}

// Outcomes is where the handler records rate-limited calls and final
// outcomes; *outcome.Store is one.
type Outcomes interface {
	RateLimited(ctx context.Context, taskID string) (outcome.RateState, error)
	// RateWait records the wait a task's 429 asked for.
	RateWait(ctx context.Context, taskID string, d time.Duration) error
	// Finish keeps a sent record: it returns that record instead of
	// replacing it with one of another status.
	Finish(ctx context.Context, rec outcome.Record) (outcome.Record, error)
	Get(ctx context.Context, taskID string) (outcome.Record, bool, error)
	// Exist reports, for each task, whether it has a record.
	Exist(ctx context.Context, taskIDs []string) ([]bool, error)
	// Held adds d to the time a task has been held back by outages and
	// returns the total.
	Held(ctx context.Context, taskID string, d time.Duration) (time.Duration, error)
	// AddAttempt adds a call that did not end the task to its history.
	AddAttempt(ctx context.Context, taskID string, at outcome.Attempt) error
}

// RateLimiter is the fleet's flow control of calls per project: pauses
// after a 429, rates, and the outage circuit (*ratelimit.Limiter).
type RateLimiter interface {
	// Wait returns once a call for the project may be made (perhaps as the
	// probe of an open circuit), or how much later it may and why (without
	// waiting), or ctx's error.
	Wait(ctx context.Context, project string) (ratelimit.Permit, error)
	// Check says, without a round trip, whether a call Wait let go must be
	// held back after all (a pause or an outage that began meanwhile).
	Check(project string, probe bool) ratelimit.Permit
	// Done tells what came of a call; for a failed one, whether the
	// project is in an outage.
	Done(ctx context.Context, project string, r ratelimit.Result, probe bool) (ratelimit.Verdict, error)
	// CoolDown pauses the calls for the project on every worker for d.
	CoolDown(ctx context.Context, project string, d time.Duration) (started bool, until time.Time, err error)
}

// Observer is told of every API call, retry and final outcome (metrics).
// All methods must be safe for concurrent use and fast.
type Observer interface {
	APICall(status int, err error, took time.Duration)
	Retry(cause outcome.Cause)
	Outcome(rec outcome.Record)
	// RateLimitPause is told when a 429 here paused a project's calls on
	// every worker.
	RateLimitPause()
	// RateLimitWait is told how long a call waited for a pause or the
	// fleet's rate, when it waited.
	RateLimitWait(d time.Duration)
	// Flow is told when this worker opens or closes a project's circuit or
	// changes its adaptive rate.
	Flow(e ratelimit.Event)
}

type nopObserver struct{}

func (nopObserver) APICall(int, error, time.Duration) {}
func (nopObserver) Retry(outcome.Cause)               {}
func (nopObserver) Outcome(outcome.Record)            {}
func (nopObserver) RateLimitPause()                   {}
func (nopObserver) RateLimitWait(time.Duration)       {}
func (nopObserver) Flow(ratelimit.Event)              {}

// Defaults of Handler's limits.
const (
	DefaultMaxAttempts      = 8
	DefaultRateLimitMaxWait = 24 * time.Hour
	DefaultOutageMaxWait    = 24 * time.Hour
)

// Handler is the asynq handler of tasks.TypeResend.
type Handler struct {
	API      API
	Outcomes Outcomes
	// Log receives one line per final outcome (Info for sent, Warn for dead
	// letters) and one Debug line per retry. Default: logrus.StandardLogger().
	Log logrus.FieldLogger
	// Observer is told of calls, retries and outcomes. Default: none.
	Observer Observer
	// Limiter holds calls back while the project is rate limited (a 429 on
	// any worker) or over the fleet's rate. Default: none.
	Limiter RateLimiter
	// Clock times calls and retries, stamps outcomes and log lines, and
	// paces the outcome write's own retries. Default: the real clock.
	Clock clockwork.Clock
	// Backoff is the delay between retries. Defaults: see Backoff.
	Backoff Backoff
	// MaxAttempts caps the calls that end in a transient failure (5xx,
	// timeout, connection error); rate-limited calls do not count. Default 8,
	// at most the task's asynq MaxRetry.
	MaxAttempts int
	// RateLimitMaxWait caps the total of the waits a task's own 429s ask
	// for (each the larger of its Retry-After and the backoff); then it is
	// dead-lettered as rate_limited. The time a task is held back by its
	// project's pause or the fleet's rate never counts: the whole project's
	// limits are the fleet's to wait out, and counting them would
	// dead-letter the tasks of a long backlog that the API never refused.
	// Default 24h.
	RateLimitMaxWait time.Duration
	// OutageMaxWait caps the total time a task may be held back by outages
	// of its project (its circuit open: the API failing most calls), over
	// every hold-back; then it is dead-lettered as outage. A failure during
	// an outage spends none of MaxAttempts. Default 24h.
	OutageMaxWait time.Duration

	group  outcomeGroup           // outcomes waiting to be written together
	acks   *ackGate               // when set (by NewServer), a sent outcome is written after the handler returns
	calls  chan struct{}          // one token per call in flight, when NewServer caps them
	stop   chan struct{}          // closed when the Server shuts down: no new calls
	logOut atomic.Pointer[logOut] // what logOutcome knows of the log output
}

var _ asynq.Handler = (*Handler)(nil)

// attempt is one run of a task: what asynq says of it and what came of it.
type attempt struct {
	taskID   string
	queue    string
	retried  int
	maxRetry int
	task     tasks.Resend
}

// ProcessTask runs one attempt of a resend task.
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) (err error) {
	a := attemptOf(ctx)
	defer func() {
		if p := recover(); p != nil {
			// A bug, not an answer of the API: retry it as a transient
			// failure, so that the attempt cap bounds it and its end is recorded.
			a.task, _ = tasks.Decode(t.Payload())
			err = h.transient(ctx, a, callResult{err: fmt.Errorf("panic: %v", p)}, outcome.CauseInternal)
		}
	}()
	return h.process(ctx, a, t.Payload())
}

func (h *Handler) process(ctx context.Context, a attempt, payload []byte) error {
	r, err := tasks.Decode(payload)
	a.task = r
	if err != nil {
		rec := h.record(a, outcome.StatusDeadLetter, outcome.ReasonInvalid, 0, nil)
		rec.Attempts, rec.ErrorDescription = 0, err.Error() // no call was made
		return h.finish(ctx, rec, &deadLetterError{msg: "invalid task: " + err.Error(), cause: err})
	}
	if a.retried > 0 && h.sentBefore(ctx, a) {
		return nil
	}
	c, err := h.call(ctx, r)
	switch {
	case err != nil:
		return err // shutting down or out of time, as below
	case c.held.Later > 0:
		// The project is paused by a 429, over the fleet's rate or in an
		// outage, for longer than is worth holding a slot, or the worker
		// is stopping: come back then. No call was made; nothing counts
		// against the task.
		return h.holdBack(ctx, a, c.held, callResult{})
	}
	if ctx.Err() != nil {
		// Shutting down or out of time: asynq hands the task back or retries it.
		return ctx.Err()
	}
	action, cause := Classify(c.status, c.err)
	if h.Limiter != nil {
		result := ratelimit.Answered
		switch action {
		case Retry:
			result = ratelimit.Failed
		case WaitRateLimit:
			result = ratelimit.RateLimited
		}
		v, err := h.Limiter.Done(ctx, r.ProjectID, result, c.probe)
		if err != nil {
			h.log(h.fields(a)).WithError(err).Debug("flow control: the call's result was not shared with the fleet")
		}
		if action == Retry && v.Outage {
			// The project's circuit is open: the failure is the fleet's to
			// wait out, not the task's.
			return h.holdBack(ctx, a, ratelimit.Permit{Later: v.Later, Hold: ratelimit.HoldOutage}, c)
		}
	}
	switch action {
	case Send:
		return h.finish(ctx, h.record(a, outcome.StatusSent, "", c.status, nil), nil)
	case Reject:
		rec := h.record(a, outcome.StatusDeadLetter, outcome.ReasonRejected, c.status, c.err)
		return h.finish(ctx, rec, &deadLetterError{msg: c.err.Error(), cause: c.err})
	case WaitRateLimit:
		return h.rateLimited(ctx, a, c)
	default:
		return h.transient(ctx, a, c, cause)
	}
}

// errHeldBack is the error of a task handed back without a call: its
// project is paused or over the fleet's rate, or the worker is stopping.
var errHeldBack = errors.New("held back before calling the Login API (rate limit or shutdown)")

// errOutage is the error of a task held back by its project's outage.
var errOutage = errors.New("held back: the Login API is failing the project's calls (outage); will be retried after the next probe")

// holdBack hands a task back to asynq without counting an attempt, to come
// back after permit.Later. A task held for an outage has that time added to
// its total; once the total passes OutageMaxWait it is dead-lettered with
// reason "outage" instead (c: the failed call that made it wait, if any;
// the zero callResult when none was made).
func (h *Handler) holdBack(ctx context.Context, a attempt, permit ratelimit.Permit, c callResult) error {
	if permit.Hold != ratelimit.HoldOutage {
		h.observer().Retry(outcome.CausePaused)
		h.log(h.fields(a)).WithFields(logrus.Fields{"retry_in": permit.Later.String(), "hold": permit.Hold.String()}).
			Debug("resend handed back without a call (rate limit or shutdown), will be retried")
		reason := outcome.ReasonRateLimited
		if permit.Hold == ratelimit.NoHold {
			reason = outcome.ReasonExhausted // the worker is stopping
		}
		return &retryError{err: errHeldBack, delay: permit.Later, failure: false, reason: reason}
	}
	held, err := h.Outcomes.Held(ctx, a.taskID, permit.Later)
	if err != nil {
		h.log(h.fields(a)).WithError(err).Warn("time held for an outage not recorded")
	}
	if limit := h.outageMaxWait(); held > limit {
		rec := h.record(a, outcome.StatusDeadLetter, outcome.ReasonOutage, c.status, c.err)
		rec.Attempts = a.retried + btoi(c.made())
		msg := fmt.Sprintf("held for %s by an outage of the Login API, over the %s cap", (held + 99*time.Millisecond).Truncate(100*time.Millisecond), limit) // rounded up: over the cap
		if rec.ErrorDescription == "" {
			rec.ErrorDescription = msg
		}
		return h.finish(ctx, rec, &deadLetterError{msg: msg, cause: errOutage})
	}
	if c.made() {
		h.addAttempt(ctx, a, c, outcome.CauseOutage)
	}
	h.observer().Retry(outcome.CauseOutage)
	h.log(h.fields(a)).WithFields(logrus.Fields{"retry_in": permit.Later.String(), "held": held.String()}).
		Debug("resend held back: the Login API is failing the project's calls")
	return &retryError{err: errOutage, delay: permit.Later, failure: false, reason: outcome.ReasonOutage}
}

// callResult is what call did: held back a task (held), or made its call.
type callResult struct {
	held   ratelimit.Permit
	probe  bool // the call was its project's probe of an open circuit
	status int
	err    error
	at     time.Time     // when the call was made
	took   time.Duration // how long it took
}

// made reports whether a call was made and answered or failed.
func (c callResult) made() bool { return c.err != nil || c.status != 0 }

// call makes the API call of r: once the project's flow control allows it
// (see Limiter), in one of the worker's call slots. It makes no call, and
// returns how long the task should give its slot up for (held), when the
// flow control holds it back or the worker is stopping. err is ctx's error.
func (h *Handler) call(ctx context.Context, r tasks.Resend) (callResult, error) {
	clock := h.clock()
	var permit ratelimit.Permit
	if h.Limiter != nil {
		start := clock.Now()
		var err error
		if permit, err = h.Limiter.Wait(ctx, r.ProjectID); err != nil || permit.Later > 0 {
			return callResult{held: permit}, err
		}
		if waited := clock.Since(start); waited > time.Millisecond {
			h.observer().RateLimitWait(waited)
		}
	}
	stopping := callResult{held: ratelimit.Permit{Later: time.Second}}
	if h.calls != nil {
		select {
		case h.calls <- struct{}{}:
		case <-ctx.Done():
			return callResult{}, ctx.Err()
		case <-h.stop:
			return stopping, nil
		}
		defer func() { <-h.calls }() // on a panic too
	}
	select {
	case <-h.stop:
		// Tasks that have not called yet (those held ready) go back
		// rather than make the shutdown wait for their calls.
		return stopping, nil
	default:
	}
	if h.Limiter != nil {
		// A 429 may have paused the project, or failures opened its
		// circuit, while this task waited for its slot.
		if held := h.Limiter.Check(r.ProjectID, permit.Probe); held.Later > 0 {
			return callResult{held: held}, nil
		}
	}
	start := clock.Now()
	status, callErr := h.API.ResendConfirmation(ctx, loginapi.Request{
		ProjectID: r.ProjectID, Username: r.Username, LoginURL: r.LoginURL, Payload: r.Payload,
	})
	took := clock.Since(start)
	h.observer().APICall(status, callErr, took)
	return callResult{probe: permit.Probe, status: status, err: callErr, at: start, took: took}, nil
}

func attemptOf(ctx context.Context) attempt {
	var a attempt
	a.taskID, _ = asynq.GetTaskID(ctx)
	a.queue, _ = asynq.GetQueueName(ctx)
	a.retried, _ = asynq.GetRetryCount(ctx)
	a.maxRetry, _ = asynq.GetMaxRetry(ctx)
	return a
}

// transient retries a 5xx, 408, timeout or connection error (cause) of
// call c until the attempt cap, then dead-letters the task with reason
// "exhausted".
func (h *Handler) transient(ctx context.Context, a attempt, c callResult, cause outcome.Cause) error {
	status, callErr := c.status, c.err
	failures := a.retried + 1
	if limit := h.attemptLimit(a); failures >= limit {
		rec := h.record(a, outcome.StatusDeadLetter, outcome.ReasonExhausted, status, callErr)
		msg := fmt.Sprintf("gave up after %d failed attempts: %v", failures, callErr)
		return h.finish(ctx, rec, &deadLetterError{msg: msg, cause: callErr})
	}
	h.addAttempt(ctx, a, c, cause)
	h.observer().Retry(cause)
	delay := h.Backoff.Delay(a.retried)
	h.log(h.fields(a)).WithFields(logrus.Fields{
		"cause": cause, "status": status, "retry_in": delay.String(),
	}).Debug("resend will be retried")
	return &retryError{err: callErr, delay: delay, failure: true, reason: outcome.ReasonExhausted}
}

// attemptLimit is the number of failed attempts after which a task is
// exhausted: MaxAttempts, but never more than asynq's MaxRetry allows while
// leaving room for rate-limited retries (asynq archives a task whose retry
// count reached MaxRetry whatever the error).
func (h *Handler) attemptLimit(a attempt) int {
	limit := h.MaxAttempts
	if limit <= 0 {
		limit = DefaultMaxAttempts
	}
	if a.maxRetry > 0 && limit > a.maxRetry {
		limit = a.maxRetry
	}
	return max(limit, 1)
}

// rateLimited retries the 429 of call c after max(Retry-After, backoff)
// without counting a failure, until the waits its own 429s asked for add
// up to more than RateLimitMaxWait.
func (h *Handler) rateLimited(ctx context.Context, a attempt, c callResult) error {
	status, callErr := c.status, c.err
	state, err := h.Outcomes.RateLimited(ctx, a.taskID)
	if err != nil {
		// Without the state the wait cap cannot be enforced: count the call as
		// a failure so that the attempt cap bounds the task instead.
		c.err = fmt.Errorf("%w (rate-limit state unavailable: %v)", callErr, err)
		return h.transient(ctx, a, c, outcome.CauseRateLimited)
	}
	delay := h.Backoff.Delay(state.Calls - 1)
	pause := delay // the project's pause: the API's Retry-After, or else the backoff
	var apiErr *loginapi.Error
	if errors.As(callErr, &apiErr) && apiErr.RetryAfter > 0 {
		pause, delay = apiErr.RetryAfter, max(delay, apiErr.RetryAfter)
	}
	h.coolDown(ctx, a, pause)
	// The wait as asynq will keep it: due on a whole second.
	counted := roundUpDue(h.clock().Now(), delay)
	waited := state.Waited
	capWait := h.rateLimitMaxWait()
	var msg string
	switch {
	case a.maxRetry > 0 && a.retried >= a.maxRetry:
		// asynq archives a task at its MaxRetry whatever the error says.
		msg = fmt.Sprintf("rate limited with no retry left (MaxRetry %d): %v", a.maxRetry, callErr)
	case waited+counted > capWait:
		msg = fmt.Sprintf("rate limited: its own 429s asked for %s of waits, over the %s cap: %v", waited.Round(time.Second), capWait, callErr)
	}
	if msg != "" {
		rec := h.record(a, outcome.StatusDeadLetter, outcome.ReasonRateLimited, status, callErr)
		rec.Attempts = a.retried // this call is counted among the task's 429s already
		return h.finish(ctx, rec, &deadLetterError{msg: msg, cause: callErr})
	}
	if err := h.Outcomes.RateWait(ctx, a.taskID, counted); err != nil {
		h.log(h.fields(a)).WithError(err).Warn("the wait a 429 asked for was not recorded")
	}
	h.addAttempt(ctx, a, c, outcome.CauseRateLimited)
	h.observer().Retry(outcome.CauseRateLimited)
	h.log(h.fields(a)).WithFields(logrus.Fields{
		"cause": outcome.CauseRateLimited, "status": status, "retry_in": delay.String(), "rate_limited_calls": state.Calls,
	}).Debug("resend rate limited, will be retried")
	return &retryError{err: callErr, delay: delay, failure: false, reason: outcome.ReasonRateLimited}
}

// coolDown pauses the calls of a's project on every worker for d (the
// 429's Retry-After, or the task's backoff when it has none), and logs it
// when this 429 started the pause.
func (h *Handler) coolDown(ctx context.Context, a attempt, d time.Duration) {
	if h.Limiter == nil {
		return
	}
	started, until, err := h.Limiter.CoolDown(ctx, a.task.ProjectID, d)
	f := logrus.Fields{"project_id": a.task.ProjectID, "until": until.UTC().Format(time.RFC3339Nano), "pause": h.clock().Until(until).Round(time.Millisecond).String()}
	switch {
	case err != nil:
		h.log(f).WithError(err).Warn("Login API rate limit: the other workers could not be told to pause")
	case started:
		h.observer().RateLimitPause()
		h.log(f).Warn("Login API rate limit: calls for the project paused on every worker")
	}
}

// record builds the final outcome record of attempt a.
func (h *Handler) record(a attempt, st outcome.Status, reason outcome.Reason, status int, callErr error) outcome.Record {
	rec := outcome.Record{
		TaskID: a.taskID, ProjectID: a.task.ProjectID, Username: a.task.Username,
		LoginURL: a.task.LoginURL, Payload: a.task.Payload, Queue: a.queue, BatchID: a.task.BatchID,
		ReplayOf: a.task.ReplayOf, Status: st, Reason: reason, HTTPStatus: status, Attempts: a.retried + 1,
		EnqueuedAt: a.task.EnqueuedAt, FinishedAt: h.clock().Now(),
	}
	var apiErr *loginapi.Error
	switch {
	case errors.As(callErr, &apiErr):
		rec.HTTPStatus, rec.ErrorCode, rec.ErrorDescription = apiErr.StatusCode, apiErr.Code, apiErr.Description
	case callErr != nil:
		rec.ErrorDescription = callErr.Error()
	}
	return rec
}

// addAttempt adds call c, which did not end the task, to the task's
// attempt history, with the cause of its retry. Its error text names the
// user masked, as logs do. Only calls short of a final outcome go there (the
// final one is the record's), so a task sent on its first call costs no
// round trip for it. A failed write is logged and otherwise ignored: the
// history is for people, the task goes on.
func (h *Handler) addAttempt(ctx context.Context, a attempt, c callResult, cause outcome.Cause) {
	at := outcome.Attempt{At: c.at, HTTPStatus: c.status, Cause: cause, Latency: c.took}
	if at.At.IsZero() {
		at.At = h.clock().Now()
	}
	var apiErr *loginapi.Error
	if errors.As(c.err, &apiErr) {
		at.HTTPStatus, at.ErrorCode = apiErr.StatusCode, apiErr.Code
	}
	if c.err != nil {
		at.Error = c.err.Error()
		if u := a.task.Username; u != "" {
			at.Error = strings.ReplaceAll(at.Error, u, tasks.MaskEmail(u))
		}
	}
	if err := h.Outcomes.AddAttempt(ctx, a.taskID, at); err != nil {
		h.log(h.fields(a)).WithError(err).Warn("attempt not added to the task's history")
	}
}

// sentBefore reports whether an earlier run of the task sent the email
// already: asynq runs a task again when its worker died after the outcome
// record was written but before the task was marked done (such a re-run
// counts as a retry). It logs the case; the task then ends without a second
// email. When the record cannot be read, the call goes ahead: a second
// email is better than none. A first run is not looked up (that would cost
// every task a round trip): the other way a task comes back, asynq's
// hand-back at shutdown, happens only to calls still running when the
// shutdown timeout ends, and that timeout outlasts a call (--http-timeout)
// and its record's write, with no new call started once the shutdown began.
func (h *Handler) sentBefore(ctx context.Context, a attempt) bool {
	rec, ok, err := h.Outcomes.Get(ctx, a.taskID)
	if err != nil || !ok || rec.Status != outcome.StatusSent {
		return false
	}
	h.logOutcome(logrus.InfoLevel, "resend skipped: an earlier run of the task sent the email", rec)
	return true
}

// finish stores the final outcome, logs it once and returns result, the
// error that tells asynq what to do with the task (nil: done).
func (h *Handler) finish(ctx context.Context, rec outcome.Record, result error) error {
	if result == nil && rec.Status == outcome.StatusSent && h.acks != nil {
		if bo, ok := h.Outcomes.(GroupOutcomes); ok && h.finishLater(bo, rec) {
			return nil
		}
	}
	stored, err := h.storeOutcome(ctx, rec)
	return h.finished(rec, stored, err, result)
}

// finished logs and counts the outcome rec, stored as stored or not (err),
// and returns result (see finish).
func (h *Handler) finished(rec, stored outcome.Record, err, result error) error {
	switch {
	case err == nil && stored.Status == outcome.StatusSent && rec.Status != outcome.StatusSent:
		// Another run of the task sent the email (see sentBefore); its record
		// stays, and this run's answer only goes to the log.
		h.log(outcomeFields(rec)).WithField("recorded", "sent").
			Info("resend answer not recorded: another run of the task sent the email")
		return nil
	case err != nil:
		// The email went out (or was refused) already: retrying the task would
		// send it again, so the task still ends; say loudly what was lost.
		h.log(outcomeFields(stored)).WithError(err).Error("outcome record could not be written")
	case rec.Status == outcome.StatusSent:
		h.logOutcome(logrus.InfoLevel, "confirmation email sent", stored)
	default:
		h.logOutcome(logrus.WarnLevel, "resend dead-lettered", stored)
	}
	h.observer().Outcome(stored)
	return result
}

// How storeOutcome writes a record while Redis fails: each try bounded by
// outcomeWriteTry, tries outcomeWriteBackoff apart at first, doubled up to
// outcomeWriteBackoffMax, for outcomeWriteWindow on the handler's clock.
// The email has gone out by then: the record is what tells support so, and
// what keeps a later run of the task from sending a second one. A Redis
// restart or a Sentinel failover takes seconds to tens of seconds, and
// asynq runs a task again only once its 30 s lease has expired and its
// recoverer (every minute) has seen it: a minute covers both.
const (
	outcomeWriteTry        = 5 * time.Second
	outcomeWriteBackoff    = 100 * time.Millisecond
	outcomeWriteBackoffMax = time.Second
	outcomeWriteWindow     = time.Minute
)

// storeOutcome writes rec, trying again while Redis fails, for
// outcomeWriteWindow at most.
func (h *Handler) storeOutcome(ctx context.Context, rec outcome.Record) (outcome.Record, error) {
	clock := h.clock()
	start := clock.Now()
	for delay := outcomeWriteBackoff; ; delay = min(2*delay, outcomeWriteBackoffMax) {
		// The task's own context may be spent; the write gets its own.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outcomeWriteTry)
		stored, err := h.finishOutcome(wctx, rec)
		cancel()
		if err == nil {
			return stored, nil
		}
		if clock.Since(start)+delay > outcomeWriteWindow {
			return rec, err
		}
		<-clock.After(delay)
	}
}

func outcomeFields(rec outcome.Record) logrus.Fields {
	f := logrus.Fields{
		"task_id": rec.TaskID, "project_id": rec.ProjectID, "username": tasks.MaskEmail(rec.Username),
		"queue": rec.Queue, "status": rec.Status, "attempts": rec.Attempts,
	}
	if rec.HTTPStatus != 0 {
		f["http_status"] = rec.HTTPStatus
	}
	if rec.Reason != "" {
		f["reason"] = rec.Reason
	}
	if rec.ErrorCode != "" {
		f["code"] = rec.ErrorCode
	}
	if rec.BatchID != "" {
		f["batch_id"] = rec.BatchID
	}
	return f
}

func (h *Handler) fields(a attempt) logrus.Fields {
	return logrus.Fields{
		"task_id": a.taskID, "project_id": a.task.ProjectID, "username": tasks.MaskEmail(a.task.Username),
		"queue": a.queue, "retried": a.retried,
	}
}

// realClock is the default Clock.
var realClock = clockwork.NewRealClock()

func (h *Handler) clock() clockwork.Clock {
	if h.Clock != nil {
		return h.Clock
	}
	return realClock
}

// log starts a log line with fields, stamped by the handler's clock.
func (h *Handler) log(f logrus.Fields) *logrus.Entry {
	return h.logger().WithFields(f).WithTime(h.clock().Now())
}

func (h *Handler) logger() logrus.FieldLogger {
	if h.Log != nil {
		return h.Log
	}
	return logrus.StandardLogger()
}

func (h *Handler) observer() Observer {
	if h.Observer != nil {
		return h.Observer
	}
	return nopObserver{}
}

func (h *Handler) outageMaxWait() time.Duration {
	if h.OutageMaxWait > 0 {
		return h.OutageMaxWait
	}
	return DefaultOutageMaxWait
}

func (h *Handler) rateLimitMaxWait() time.Duration {
	if h.RateLimitMaxWait > 0 {
		return h.RateLimitMaxWait
	}
	return DefaultRateLimitMaxWait
}
