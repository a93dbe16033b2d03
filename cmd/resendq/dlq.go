package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

func newDLQCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Dead letters: list them, and replay them once their cause is fixed",
		Long: `Dead letters are kept in resendq's own outcome records, with their full request,
so none is lost when asynq's archive trims itself (10,000 tasks per queue).`,
	}
	cmd.AddCommand(newDLQListCmd(a), newDLQReplayCmd(a))
	return cmd
}

func newDLQListCmd(a *app) *cobra.Command {
	return newListCmd(a, "List dead letters, newest first", `  resendq dlq list --code 003-002 --since 24h`, outcome.StatusDeadLetter)
}

func newDLQReplayCmd(a *app) *cobra.Command {
	var rf redisFlags
	var ff filterFlags
	var queue string
	var everything, dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Enqueue dead letters again, as new tasks, once their cause is fixed",
		Long: `Replays every dead letter the filters select, as a new task. Each dead letter is
replayed once: running the same replay again enqueues nothing. Dead letters whose
request is invalid are counted, not replayed. A filter, or --all-dead-letters, is required.`,
		Example: `  resendq dlq replay --code 003-022 --since 24h --dry-run
  resendq dlq replay --reason rate_limited`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ff.filter(time.Now())
			if err != nil {
				return usageErr(err)
			}
			opts := enqueue.ReplayOptions{Filter: f, All: everything, Queue: queue, DryRun: dryRun}
			if err := opts.Check(); errors.Is(err, enqueue.ErrNoSelection) {
				return usageErr(errors.New("dlq replay needs a filter (--code, --reason, --since, --until, --project-id, --batch-id, --username) or --all-dead-letters"))
			} else if err != nil {
				return usageErr(errors.New("--" + err.Error()))
			}
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			sum, err := enqueue.New(rdb, enqueue.Options{}).ReplayDeadLetters(cmd.Context(), opts)
			if perr := printReplay(a, sum, asJSON); perr != nil && err == nil {
				err = perr
			}
			return err
		},
	}
	rf.register(cmd.Flags())
	ff.register(cmd.Flags(), false)
	fs := cmd.Flags()
	fs.StringVar(&queue, "queue", tasks.QueueBulk, "queue the replayed tasks go to: bulk or signup")
	fs.BoolVar(&everything, "all-dead-letters", false, "replay every dead letter (no filter)")
	fs.BoolVar(&dryRun, "dry-run", false, "count what would be replayed, change nothing")
	fs.BoolVar(&asJSON, "json", false, "print the summary as one JSON object")
	return cmd
}

func printReplay(a *app, sum enqueue.ReplaySummary, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(a.stdout).Encode(sum)
	}
	verb := "replayed"
	if sum.DryRun {
		verb = "would replay (dry run)"
	}
	fmt.Fprintf(a.stdout, "%d dead letters matched: %s %d, already replayed %d, still invalid %d\n",
		sum.Matched, verb, sum.Replayed, sum.AlreadyReplayed, sum.StillInvalid)
	return nil
}
