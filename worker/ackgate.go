package worker

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ackWriteTimeout bounds the round trip that runs held acks.
const ackWriteTimeout = 5 * time.Second

// ackGate holds asynq's ack of a task (the script that removes it from its
// queue's active list and counts it processed) until the task's outcome
// record is written, so that a handler can return, and its asynq slot take
// the next task, while the record is on its way to Redis.
//
// A handler calls hold before it returns without waiting for its record,
// and the writer releases it once the write has ended, written or not. The
// script asynq runs next about a held task (its ack: the task's key is
// among its keys), if it comes before the release, is answered "OK" at once
// and runs after the release, with the acks of the other records of the
// same write in one round trip. So a task
// leaves its queue's active list only once its record is written, as when
// the handler waited: if the process dies first, the task is still active
// with its lease, and asynq's recoverer runs it again, as after a crash
// during the write.
type ackGate struct {
	rdb     redis.UniversalClient // where held acks run
	pending atomic.Int64          // len(held): the scripts are only looked at while some are held
	mu      sync.Mutex
	held    map[string]*heldAck // task key → its ack
	scripts map[string]string   // SHA1 → source of the scripts held so far
	wg      sync.WaitGroup      // one per hold, until its ack has run
	limit   int                 // the most tasks held at once
	onError func(error)         // an ack that failed after its release
}

// heldAck is the ack of one task whose record is being written.
type heldAck struct {
	cmd *ackCmd // asynq's script, once it came
}

// ackCmd is a script asynq ran about a held task.
type ackCmd struct {
	sha  string
	keys []string
	args []any
}

// newAckGate holds at most limit tasks at once, and runs their acks on
// rdb; onError is told of an ack that failed.
func newAckGate(rdb redis.UniversalClient, limit int, onError func(error)) *ackGate {
	return &ackGate{rdb: rdb, held: map[string]*heldAck{}, scripts: map[string]string{}, limit: limit, onError: onError}
}

// hold holds asynq's scripts about the task whose key is taskKey until
// releaseAll releases it. When the gate holds its limit already (or the
// task) it holds nothing and reports false: the handler then waits for its record, as
// without a gate. So the tasks whose email went out and that asynq would
// run again after a crash are at most the worker's slots and the limit.
func (g *ackGate) hold(taskKey string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.held[taskKey]; ok || len(g.held) >= g.limit {
		return false
	}
	g.wg.Add(1)
	g.held[taskKey] = &heldAck{}
	g.pending.Store(int64(len(g.held)))
	return true
}

// releaseAll releases the tasks of taskKeys and runs their held acks in
// one round trip.
func (g *ackGate) releaseAll(taskKeys []string) {
	var run []*ackCmd
	n := 0
	g.mu.Lock()
	for _, k := range taskKeys {
		if h, ok := g.held[k]; ok {
			// An ack still to come runs as it comes.
			delete(g.held, k)
			n++
			if h.cmd != nil {
				run = append(run, h.cmd)
			}
		}
	}
	g.pending.Store(int64(len(g.held)))
	g.mu.Unlock()
	defer g.doneWith(n)
	if len(run) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), ackWriteTimeout)
	defer cancel()
	cmds, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range run {
			p.EvalSha(ctx, c.sha, c.keys, c.args...)
		}
		return nil
	})
	if err == nil {
		return
	}
	for i, c := range cmds {
		err := c.Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis lost its scripts (a restart, a failover): send it.
			g.mu.Lock()
			src := g.scripts[run[i].sha]
			g.mu.Unlock()
			err = g.rdb.Eval(ctx, src, run[i].keys, run[i].args...).Err()
		}
		if err != nil && g.onError != nil {
			g.onError(err)
		}
	}
}

func (g *ackGate) doneWith(n int) {
	for range n {
		g.wg.Done()
	}
}

// intercept answers a script about a held task with "OK" and keeps it to
// run on release; otherwise it reports false. script is the source of an
// EVAL, "" for an EVALSHA of sha. The first time a script comes as an
// EVALSHA it is answered NOSCRIPT, as Redis would answer a script it does
// not have, so that go-redis sends its source, and the gate can send it
// too if Redis has lost it by the release.
func (g *ackGate) intercept(ctx context.Context, sha, script string, keys []string, args []any) (*redis.Cmd, bool) {
	if g == nil || g.pending.Load() == 0 {
		return nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range keys {
		h := g.held[k]
		if h == nil {
			continue
		}
		if h.cmd != nil {
			return nil, false // a second script: it waits for nothing
		}
		cmd := redis.NewCmd(ctx)
		if script != "" {
			sum := sha1.Sum([]byte(script))
			sha = hex.EncodeToString(sum[:])
			g.scripts[sha] = script
		} else if _, ok := g.scripts[sha]; !ok {
			cmd.SetErr(redis.ErrNoScript)
			return cmd, true
		}
		h.cmd = &ackCmd{sha: sha, keys: keys, args: args}
		cmd.SetVal("OK")
		return cmd, true
	}
	return nil, false
}

// heldCount is how many tasks the gate holds.
func (g *ackGate) heldCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held)
}

// wait waits until every held ack has run, or ctx is done.
func (g *ackGate) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
