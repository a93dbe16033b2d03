package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

func newOutcomesForgetCmd(a *app) *cobra.Command {
	var rf redisFlags
	var username, projectID string
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "forget",
		Short: "Delete what resendq keeps of a user (a privacy request)",
		Long: `Deletes the outcome records of a user (in one project, or all) with their attempt
histories, the user's tasks still in Redis (dead letters in asynq's archive, a resend
still waiting in a queue), the user's dedup claims and replay markers, and says how many
of each. A task running right now cannot be deleted: it is counted, and its record
appears when it finishes; forget again then.

Without --yes it asks on a terminal; without a terminal it refuses (exit status 2) and
changes nothing. It writes one audit log line, the username masked.`,
		Example: `  resendq outcomes forget --username john@example.com --yes`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if username == "" {
				return usageErr(errors.New("--username is required"))
			}
			who := tasks.MaskEmail(username)
			if projectID != "" {
				who += " in project " + projectID
			}
			if err := confirm(a, yes, fmt.Sprintf("Delete every record, task and claim of %s?", who)); err != nil {
				return err
			}
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			sum, err := enqueue.New(rdb, enqueue.Options{}).Forget(cmd.Context(), projectID, username)
			if errors.Is(err, outcome.ErrInvalid) {
				return usageErr(err)
			}
			audit(a, "outcomes forget", "username="+who, sum.String(), err)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(sum)
			}
			_, err = fmt.Fprintf(a.stdout, "forgot %s: %d records, %d tasks, %d claims deleted; %d tasks running (forget again once they finish)\n",
				who, sum.Records, sum.Tasks, sum.Claims, sum.Running)
			return err
		},
	}
	rf.register(cmd.Flags())
	fs := cmd.Flags()
	fs.StringVar(&username, "username", "", "the user's username or email address (required)")
	fs.StringVar(&projectID, "project-id", "", "only in this Login project (default: all)")
	fs.BoolVar(&yes, "yes", false, "delete without asking (without it, a terminal is asked and anything else refused)")
	fs.BoolVar(&asJSON, "json", false, "print the summary as one JSON object")
	return cmd
}
