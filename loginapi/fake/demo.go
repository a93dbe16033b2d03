package fake

import "strings"

// DemoRules are built-in conventions for demos, for SetRules. They key on
// the start of the username's local part (before any "@"), ignoring case:
//
//	unknown...     404 "003-002" User not found.
//	badproject...  400 "003-019" Project not found.
//	confirmed...   422 "003-061" Object not found. (stands for an account
//	               already confirmed; the real code for it is not documented)
//	ratelimited... 429 with Retry-After: 1 twice, then 204
//	flaky...       503 twice, then 204
//	down...        500 every time (the worker ends it as exhausted)
//
// Any other username gets (Behavior{}, false): the default applies, 204
// unless changed.
func DemoRules(username string) (Behavior, bool) {
	local, _, _ := strings.Cut(username, "@")
	switch {
	case hasPrefixFold(local, "unknown"):
		return Behavior{Status: 404, Code: "003-002", Description: "User not found."}, true
	case hasPrefixFold(local, "badproject"):
		return Behavior{Status: 400, Code: "003-019", Description: "Project not found."}, true
	case hasPrefixFold(local, "confirmed"):
		return Behavior{Status: 422, Code: "003-061", Description: "Object not found."}, true
	case hasPrefixFold(local, "ratelimited"):
		return Behavior{RateLimited: 2, RetryAfter: "1"}, true
	case hasPrefixFold(local, "flaky"):
		return Behavior{ServerErrors: 2}, true
	case hasPrefixFold(local, "down"):
		return Behavior{Status: 500, Description: "Internal Server Error"}, true
	}
	return Behavior{}, false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
