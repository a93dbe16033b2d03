package fake

import (
	"strings"
)

// DemoKind is one of the built-in conventions of DemoRules: usernames whose
// local part (before any "@") starts with Prefix, ignoring case, get
// Behavior.
type DemoKind struct {
	// Prefix starts the username's local part.
	Prefix string
	// Behavior is how the API answers those usernames.
	Behavior Behavior
	// Answers says so in words, for help texts.
	Answers string
}

// DemoKinds are the conventions of DemoRules, in the order to show them.
// "confirmed" stands for an account already confirmed; the API's real code
// for it is not documented.
var DemoKinds = []DemoKind{
	{"unknown", Behavior{Status: 404, Code: "003-002", Description: "User not found."}, `404 003-002 "User not found."`},
	{"badproject", Behavior{Status: 400, Code: "003-019", Description: "Project not found."}, `400 003-019 "Project not found."`},
	{"confirmed", Behavior{Status: 422, Code: "003-061", Description: "Object not found."}, `422 003-061 "Object not found."`},
	{"ratelimited", Behavior{RateLimited: 2, RetryAfter: "1"}, "429 with Retry-After: 1 twice, then 204"},
	{"flaky", Behavior{ServerErrors: 2}, "503 twice, then 204"},
	{"down", Behavior{Status: 500, Description: "Internal Server Error"}, "500 every time"},
}

// DemoRules are the built-in conventions of DemoKinds, for SetRules: a
// username whose local part starts with a kind's prefix gets its behaviour.
// Any other username gets (Behavior{}, false): the default applies, 204
// unless changed.
func DemoRules(username string) (Behavior, bool) {
	local, _, _ := strings.Cut(username, "@")
	for _, k := range DemoKinds {
		if hasPrefixFold(local, k.Prefix) {
			return k.Behavior, true
		}
	}
	return Behavior{}, false
}

// DemoHelp describes DemoKinds in lines of "prefix...@ → answer".
func DemoHelp() string {
	var b strings.Builder
	for _, k := range DemoKinds {
		b.WriteString(k.Prefix + "...@ → " + k.Answers + "\n")
	}
	b.WriteString("anything else → 204\n")
	return b.String()
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
