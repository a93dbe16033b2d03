package enqueue

import (
	"context"
	"sync"

	"github.com/resendq/resendq/tasks"
)

// Grouper enqueues single resends as Enqueue and EnqueueAs do, and writes
// those that come together in one EnqueueMany call (group commit): a
// resend is written at once when no write is under way, and otherwise
// joins the next write, which starts as soon as the one under way is done.
// A server taking many single enqueues at once (the HTTP API) so makes one
// Redis call for many of them, where Enqueue makes three round trips for
// each. Each caller still returns only once its own resend is settled.
// It is safe for concurrent use.
type Grouper struct {
	e       *Enqueuer
	mu      sync.Mutex
	waiting []*groupItem
	writing bool // a write is under way, or its writer is chosen
}

// groupItem is one resend on its way through a Grouper.
type groupItem struct {
	r    tasks.Resend
	id   string
	res  ItemResult
	lead bool          // this item's caller writes the next group
	wake chan struct{} // closed when res is settled, or lead is set
}

// NewGrouper returns a Grouper that enqueues with e.
func (e *Enqueuer) NewGrouper() *Grouper { return &Grouper{e: e} }

// Enqueue enqueues r as task id (a new random ID when id is ""), as
// EnqueueAs does: a task ID that exists or whose outcome is recorded is a
// duplicate naming it, and the dedup window applies. A validation failure
// is a *tasks.ValidationError and touches nothing in Redis.
func (g *Grouper) Enqueue(ctx context.Context, r tasks.Resend, id string) (Result, error) {
	r = r.Normalize()
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	if id == "" {
		id = g.e.newID()
	}
	it := &groupItem{r: r, id: id, wake: make(chan struct{})}
	g.mu.Lock()
	g.waiting = append(g.waiting, it)
	if !g.writing {
		g.writing, it.lead = true, true
	}
	lead := it.lead
	g.mu.Unlock()
	if !lead {
		<-it.wake // settled, or made the writer of the next group
		lead = it.lead
	}
	if lead {
		g.write(ctx)
	}
	return it.res.Result, it.res.Err
}

// write enqueues the waiting resends (the writer's own first among them),
// settles them, and hands the next write to the first resend still
// waiting, if any.
func (g *Grouper) write(ctx context.Context) {
	g.mu.Lock()
	n := min(len(g.waiting), MaxMany)
	group := append([]*groupItem(nil), g.waiting[:n]...)
	g.waiting = append(g.waiting[:0], g.waiting[n:]...)
	g.mu.Unlock()

	rs := make([]tasks.Resend, len(group))
	for i, it := range group {
		rs[i] = it.r
	}
	// Once asked, the group is settled even when the writer's caller is
	// gone: the other callers wait for it.
	out, err := g.e.EnqueueMany(context.WithoutCancel(ctx), rs, func(i int) string { return group[i].id })
	for i, it := range group {
		if out == nil {
			it.res = ItemResult{Err: err}
			continue
		}
		it.res = out[i]
		if it.res.Err == nil {
			it.res.Err = err // a *ReplicasError: the resend is on the master
		}
	}

	g.mu.Lock()
	var next *groupItem
	if len(g.waiting) > 0 {
		next = g.waiting[0]
		next.lead = true
	} else {
		g.writing = false
	}
	g.mu.Unlock()
	for _, it := range group[1:] {
		close(it.wake)
	}
	if next != nil {
		close(next.wake)
	}
}
