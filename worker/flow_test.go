package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/ratelimit"
	"github.com/resendq/resendq/tasks"
)

// otherProject is a second Login project, whose calls go on while the
// test project's fail.
const otherProject = "0b8c6f1e-6b9a-4e4f-9d2c-5f3a1b2c3d4e"

// outagePipeline is a pipeline of two workers with a quick retry budget
// (3 attempts, 10–100ms apart) and a probe every second.
func outagePipeline(t *testing.T, edit func(*Options)) *pipeline {
	t.Helper()
	p := newPipeline(t, redistest.Start, func(o *Options) {
		o.OutageProbe = time.Second
		if edit != nil {
			edit(o)
		}
	})
	p.run(t)
	runWorker(t, p.newWorker(t))
	return p
}

// enqueueN enqueues n resends of project, for users prefix0@example.com...
func (p *pipeline) enqueueN(t *testing.T, project, prefix string, n int) []string {
	t.Helper()
	var users []string
	for i := range n {
		u := fmt.Sprintf("%s%d@example.com", prefix, i)
		if _, err := p.enq.Enqueue(context.Background(), tasks.Resend{ProjectID: project, Username: u}); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	return users
}

// circuit returns the fleet's flow control of project, as an operator reads it.
func (p *pipeline) circuit(t *testing.T, project string) ratelimit.State {
	t.Helper()
	all, err := ratelimit.Status(context.Background(), p.rdb, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range all {
		if st.Project == project {
			return st
		}
	}
	return ratelimit.State{Project: project}
}

// callsOf counts the API's calls for project.
func (p *pipeline) callsOf(project string) int {
	n := 0
	for _, c := range p.api.Calls() {
		if c.ProjectID == project {
			n++
		}
	}
	return n
}

// TestOutageLongerThanTheRetryBudgetDeadLettersNothing: the API fails every
// call of a project for much longer than a task's own retries last (3
// attempts within a second or two). Two workers share the project's
// circuit: once it is open, only one probe a second goes out, fleet-wide,
// and no task spends its attempts; the first probe after the outage
// closes it, and every resend is sent.
func TestOutageLongerThanTheRetryBudgetDeadLettersNothing(t *testing.T) {
	t.Parallel()
	p := outagePipeline(t, nil)
	p.api.SetOutage(testProject, 503)
	users := p.enqueueN(t, testProject, "u", 40)
	waitFor(t, func() bool { return p.circuit(t, testProject).Open }, "the circuit to open")
	time.Sleep(200 * time.Millisecond) // the calls in flight when it opened come back
	opened := p.callsOf(testProject)
	// The outage goes on for 5 more seconds: at most a probe a second.
	time.Sleep(5 * time.Second)
	during := p.callsOf(testProject) - opened
	t.Logf("%d calls before the circuit opened, %d in the 5s after", opened, during)
	if during > 6 {
		t.Errorf("%d calls in 5s of an open circuit, want one probe a second", during)
	}
	if st, _ := p.store.Stats(context.Background()); st.DeadLetter != 0 {
		t.Fatalf("dead letters during the outage: %+v", st)
	}
	p.api.EndOutage(testProject)
	for _, u := range users {
		if rec := p.waitOutcome(t, u, 30*time.Second); rec.Status != outcome.StatusSent {
			t.Errorf("%s: %+v", u, rec)
		}
	}
	if st := p.circuit(t, testProject); st.Open {
		t.Errorf("the circuit is still open: %+v", st)
	}
}

// TestAProjectInAnOutageDoesNotSlowAnother: while one project's calls
// fail and its resends are held, another project's resends all go out,
// each with one call.
func TestAProjectInAnOutageDoesNotSlowAnother(t *testing.T) {
	t.Parallel()
	p := outagePipeline(t, nil)
	p.api.SetOutage(testProject, 502)
	held := p.enqueueN(t, testProject, "held", 40)
	waitFor(t, func() bool { return p.circuit(t, testProject).Open }, "the circuit to open")
	others := p.enqueueN(t, otherProject, "other", 40)
	for _, u := range others {
		rec, ok := p.waitOutcomeOf(t, otherProject, u, 30*time.Second)
		if !ok || rec.Status != outcome.StatusSent || p.api.Count(u) != 1 {
			t.Errorf("%s of the other project: %+v, %d calls", u, rec, p.api.Count(u))
		}
	}
	if !p.circuit(t, testProject).Open || p.circuit(t, otherProject).Open {
		t.Fatalf("circuits: %+v, %+v; want only the failing project's open", p.circuit(t, testProject), p.circuit(t, otherProject))
	}
	if st, _ := p.store.Stats(context.Background()); st.DeadLetter != 0 || st.Sent != int64(len(others)) {
		t.Fatalf("while the outage goes on: %+v; want the other project's sent and nothing dead", st)
	}
	p.api.EndOutage(testProject)
	for _, u := range held {
		if rec := p.waitOutcome(t, u, 30*time.Second); rec.Status != outcome.StatusSent {
			t.Errorf("%s: %+v", u, rec)
		}
	}
}

// TestOneFailingUserDoesNotOpenTheCircuit: the API fails every call for
// one user, among the successes of the others: the circuit stays closed,
// and that user's resend is exhausted by its own attempts.
func TestOneFailingUserDoesNotOpenTheCircuit(t *testing.T) {
	t.Parallel()
	p := outagePipeline(t, nil)
	p.api.Script("broken@example.com", fake.Behavior{Status: 500})
	p.enqueue(t, "broken@example.com")
	users := p.enqueueN(t, testProject, "fine", 60)
	rec := p.waitOutcome(t, "broken@example.com", 30*time.Second)
	if rec.Reason != outcome.ReasonExhausted || rec.Attempts != 3 {
		t.Errorf("the failing user's record %+v, want exhausted after 3 attempts", rec)
	}
	for _, u := range users {
		if rec := p.waitOutcome(t, u, 30*time.Second); rec.Status != outcome.StatusSent {
			t.Errorf("%s: %+v", u, rec)
		}
	}
	if st := p.circuit(t, testProject); st.Open {
		t.Errorf("the circuit opened for one user's failures: %+v", st)
	}
}

// TestOutageMaxWaitCountsEveryHoldBack: an outage that outlasts
// OutageMaxWait dead-letters what it held, with reason outage, once the
// task's hold-backs (each shorter than the cap) add up to more than it.
func TestOutageMaxWaitCountsEveryHoldBack(t *testing.T) {
	t.Parallel()
	const maxWait = 3 * time.Second
	p := outagePipeline(t, func(o *Options) { o.OutageMaxWait = maxWait })
	p.api.SetOutage(testProject, 503)
	users := p.enqueueN(t, testProject, "u", 10)
	for _, u := range users {
		rec := p.waitOutcome(t, u, 30*time.Second)
		if rec.Status != outcome.StatusDeadLetter || rec.Reason != outcome.ReasonOutage || rec.ErrorDescription == "" {
			t.Errorf("%s: %+v, want a dead letter of reason outage", u, rec)
		}
		if rec.Attempts > 3 {
			t.Errorf("%s: %d attempts, want no more than its own budget", u, rec.Attempts)
		}
	}
	page, err := p.store.List(context.Background(), outcome.Filter{Reason: outcome.ReasonOutage})
	if err != nil || len(page.Records) != len(users) {
		t.Fatalf("outage dead letters: %d, %v", len(page.Records), err)
	}
	for _, rec := range page.Records {
		text := p.archived(t, rec.TaskID) // "held for 4s by an outage of the Login API, over the 3s cap"
		f := strings.Fields(text)
		if len(f) < 3 || f[0] != "held" {
			t.Errorf("archive text %q", text)
			continue
		}
		held, _ := time.ParseDuration(f[2])
		// Each hold-back lasts at most a probe interval and its settling
		// time: the cap is passed by their sum, not by one of them.
		if held <= maxWait || held > maxWait+3*time.Second {
			t.Errorf("%s held %s in all, want just over the %s cap", rec.TaskID, held, maxWait)
		}
	}
}

// TestAdaptiveRateConvergesUnderAServerLimit: two workers without a rate
// drain a backlog through an API that allows 20 calls a second: their
// rate is learned from the first 429s and ends close to the limit, and
// every resend is sent.
func TestAdaptiveRateConvergesUnderAServerLimit(t *testing.T) {
	t.Parallel()
	p := outagePipeline(t, func(o *Options) { o.RateLimitMaxWait = time.Hour })
	p.api.SetRateLimit(20, 2)
	users := p.enqueueN(t, testProject, "u", 160)
	for _, u := range users {
		if rec := p.waitOutcome(t, u, 60*time.Second); rec.Status != outcome.StatusSent {
			t.Errorf("%s: %+v", u, rec)
		}
	}
	st := p.circuit(t, testProject)
	t.Logf("rate %.1f calls a second at the end; %d of %d calls answered 429", st.Rate, p.api.RateLimited(), p.api.Total())
	if st.Rate < 10 || st.Rate > 26 {
		t.Errorf("the fleet's rate ended at %.1f calls a second, want close to the API's 20", st.Rate)
	}
	if limited := p.api.RateLimited(); limited > int64(len(users))/4 {
		t.Errorf("%d calls answered 429 for %d resends", limited, len(users))
	}
}

// waitOutcomeOf polls until the user's outcome record in project exists.
func (p *pipeline) waitOutcomeOf(t *testing.T, project, username string, within time.Duration) (outcome.Record, bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		rec, ok, err := p.store.Latest(context.Background(), project, username)
		if err != nil {
			t.Fatal(err)
		}
		if ok || time.Now().After(deadline) {
			return rec, ok
		}
		time.Sleep(50 * time.Millisecond)
	}
}
