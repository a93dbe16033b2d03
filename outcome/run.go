package outcome

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// scriptCall is one run of a script: its keys and arguments.
type scriptCall interface {
	scriptKeys() []string
	scriptArgs() []any
}

// runScripts runs script once per call, all in one pipeline (on a cluster,
// one per master, sent in parallel), and returns the replies in order. A
// run that finds the script not loaded yet is made again with Run, which
// loads it.
func runScripts[C scriptCall](ctx context.Context, rdb redis.UniversalClient, script *redis.Script, calls []C) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	if len(calls) == 1 {
		cmds[0] = script.Run(ctx, rdb, calls[0].scriptKeys(), calls[0].scriptArgs()...)
		return cmds
	}
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = script.EvalSha(ctx, p, c.scriptKeys(), c.scriptArgs()...)
		}
		return nil
	})
	for i, c := range calls {
		if err := cmds[i].Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			cmds[i] = script.Run(ctx, rdb, c.scriptKeys(), c.scriptArgs()...)
		}
	}
	return cmds
}
