package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/resendq/resendq/outcome"
)

func newOutcomesShowCmd(a *app) *cobra.Command {
	var rf redisFlags
	var username, projectID string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [TASK_ID]",
		Short: "One task's outcome record and the attempts before its last one",
		Example: `  resendq outcomes show 0b3c6f5e-4a1d-4d1e-9f7a-2c5d8e9b1a20
  resendq outcomes show --username john@example.com --project-id 6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11 --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.MaximumNArgs(1)(cmd, args); err != nil {
				return usageErr(err)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var taskID string
			if len(args) == 1 {
				taskID = args[0]
			}
			switch {
			case taskID != "" && username != "":
				return usageErr(errors.New("give a TASK_ID or --username, not both"))
			case projectID != "" && username == "":
				return usageErr(errors.New("--project-id goes with --username"))
			case taskID == "" && username == "":
				return usageErr(errors.New("give a TASK_ID, or --username (and --project-id) for the user's latest outcome"))
			}
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			store := outcome.NewStore(rdb, outcome.Options{})
			if username != "" {
				rec, ok, err := store.Latest(cmd.Context(), projectID, username)
				switch {
				case errors.Is(err, outcome.ErrInvalid):
					return usageErr(fmt.Errorf("--username: %w", err))
				case err != nil:
					return err
				case !ok && projectID != "":
					return fmt.Errorf("no outcome record of %s in project %s (none finished, or removed after the retention period)", username, projectID)
				case !ok:
					return fmt.Errorf("no outcome record of %s (none finished, or removed after the retention period)", username)
				}
				taskID = rec.TaskID
			}
			tl, ok, err := store.Timeline(cmd.Context(), taskID)
			switch {
			case err != nil:
				return err
			case !ok:
				return fmt.Errorf("no outcome record and no attempt history for task %s: never enqueued, not called yet, or removed after the retention period", taskID)
			case asJSON:
				return json.NewEncoder(a.stdout).Encode(tl)
			}
			printTimeline(a.stdout, tl)
			return nil
		},
	}
	rf.register(cmd.Flags())
	cmd.Flags().StringVar(&username, "username", "", "the latest outcome of this username or email address")
	cmd.Flags().StringVar(&projectID, "project-id", "", "with --username: only in this Login project")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print one JSON object: {"task_id", "record", "history"}`)
	return cmd
}

// historyTime is how the attempts of a history show their times.
const historyTime = "2006-01-02 15:04:05.000"

// printTimeline prints a task's record, field by field, then its attempt
// history as a table, oldest first.
func printTimeline(w io.Writer, tl outcome.Timeline) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "task\t%s\n", tl.TaskID)
	if r := tl.Record; r != nil {
		fmt.Fprintf(tw, "status\t%s\n", r.Status)
		fmt.Fprintf(tw, "reason\t%s\n", dash(string(r.Reason)))
		fmt.Fprintf(tw, "http\t%s\n", dash(itoa(r.HTTPStatus)))
		fmt.Fprintf(tw, "code\t%s\n", dash(r.ErrorCode))
		fmt.Fprintf(tw, "error\t%s\n", dash(r.ErrorDescription))
		fmt.Fprintf(tw, "attempts\t%d\n", r.Attempts)
		fmt.Fprintf(tw, "project\t%s\n", r.ProjectID)
		fmt.Fprintf(tw, "username\t%s\n", r.Username)
		fmt.Fprintf(tw, "queue\t%s\n", r.Queue)
		fmt.Fprintf(tw, "batch\t%s\n", dash(r.BatchID))
		finished := r.FinishedAt.Local().Format(historyTime)
		if !r.EnqueuedAt.IsZero() {
			fmt.Fprintf(tw, "enqueued\t%s\n", r.EnqueuedAt.Local().Format(historyTime))
			finished += fmt.Sprintf(" (%s after it was enqueued)", r.FinishedAt.Sub(r.EnqueuedAt).Round(time.Millisecond))
		}
		fmt.Fprintf(tw, "finished\t%s\n", finished)
	} else {
		fmt.Fprintln(tw, "status\tnot final yet: no outcome record")
	}
	tw.Flush()
	fmt.Fprintln(w)
	switch n := len(tl.History); {
	case n == 0:
		fmt.Fprintln(w, "no attempt before the last one")
		return
	case n == outcome.MaxHistory:
		fmt.Fprintf(w, "the newest %d attempts before the last one, oldest first (older ones are not kept):\n", n)
	default:
		fmt.Fprintf(w, "%d attempts before the last one, oldest first:\n", n)
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tHTTP\tCODE\tCAUSE\tLATENCY\tERROR")
	for _, at := range tl.History {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", at.At.Local().Format(historyTime), dash(itoa(at.HTTPStatus)),
			dash(at.ErrorCode), at.Cause, at.Latency.Round(100*time.Microsecond), dash(at.Error))
	}
	tw.Flush()
}
