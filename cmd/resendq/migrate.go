package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/resendq/resendq/enqueue"
)

func newMigrateCmd(a *app) *cobra.Command {
	var from, to string
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Copy what resendq keeps from one Redis to another (e.g. onto a Redis Cluster)",
		Long: `Copies everything resendq keeps in the Redis of --from into the Redis of --to: the outcome
records with their replay marks and attempt histories (laid out anew, e.g. over a Redis
Cluster's shards), the users' dedup claims, replay markers and idempotency keys (with what
is left of their windows), and the tasks still waiting in the signup and bulk queues, under
their own IDs. Dead letters move as records, from which "dlq replay" works; asynq's archive
is not copied. Nothing is deleted from --from.

It refuses while a worker runs on --from: stop the workers first. It may run again, after
it stopped half-way or to catch what producers wrote meanwhile; nothing is counted twice.
See "Upgrading" in the README for the order of steps.

Without --yes it asks on a terminal; without a terminal it refuses (exit status 2).`,
		Example: `  resendq migrate --from redis://old:6379/0 --to redis-cluster://node1:7000,node2:7000,node3:7000 --yes`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return usageErr(errors.New("--from and --to are required"))
			}
			if from == to {
				return usageErr(errors.New("--from and --to name the same Redis"))
			}
			src, dst := redisFlags{url: from}, redisFlags{url: to}
			if err := confirm(a, yes, fmt.Sprintf("Copy resendq's records, keys and waiting tasks from %s to %s?", redactURL(from), redactURL(to))); err != nil {
				return err
			}
			srdb, err := src.connect(cmd.Context(), 0)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			defer srdb.Close()
			drdb, err := dst.connect(cmd.Context(), 0)
			if err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			defer drdb.Close()
			b := bar(a, -1, "copying records")
			sum, err := enqueue.Migrate(cmd.Context(), enqueue.New(srdb, enqueue.Options{}), enqueue.New(drdb, enqueue.Options{}),
				progressOf(b, func(s enqueue.MigrateSummary) int { return s.Records }))
			if b != nil {
				_ = b.Finish()
			}
			audit(a, "migrate", "from="+redactURL(from)+" to="+redactURL(to), sum.String(), err)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(sum)
			}
			_, err = fmt.Fprintln(a.stdout, "migrated:", sum.String())
			return err
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&from, "from", "", "the Redis to copy from, as --redis-url takes it (required)")
	fs.StringVar(&to, "to", "", "the Redis to copy to, as --redis-url takes it, e.g. redis-cluster://host:port,... (required)")
	fs.BoolVar(&yes, "yes", false, "copy without asking (without it, a terminal is asked and anything else refused)")
	fs.BoolVar(&asJSON, "json", false, "print the summary as one JSON object")
	return cmd
}
