package outcome

import "slices"

// Cause says why a task was retried rather than finished: what became of
// one attempt short of a final outcome. Logs and metrics use these names.
type Cause string

// The causes of a retry.
const (
	// CauseRateLimited: the API answered 429.
	CauseRateLimited Cause = "rate_limited"
	// CauseTimeout: the API answered 408, or nothing in time.
	CauseTimeout Cause = "timeout"
	// CauseServerError: the API answered 5xx (or an unexpected status).
	CauseServerError Cause = "server_error"
	// CauseConnection: no answer at all (connection refused or reset).
	CauseConnection Cause = "connection"
	// CausePaused: no call was made: the task was handed back because its
	// project's calls were paused or over the fleet's rate, or its worker
	// was stopping.
	CausePaused Cause = "paused"
	// CauseOutage: held back, without spending an attempt, because the
	// Login API is failing the project's calls (its circuit is open).
	CauseOutage Cause = "outage"
	// CauseInternal: the worker failed on the task (a panic): a bug.
	CauseInternal Cause = "internal"
)

var causes = []Cause{CauseRateLimited, CauseTimeout, CauseServerError, CauseConnection, CausePaused, CauseOutage, CauseInternal}

// Causes lists every cause of a retry: the one list of the vocabulary.
func Causes() []Cause { return slices.Clone(causes) }
