package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/resendq/resendq/enqueue"
)

func newBatchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "batch",
		Short: "Where a batch resend stands, and cancelling what of it is not sent yet",
		Long: `A batch is what one run of "resendq enqueue --file" enqueued, under its batch ID
(printed by the run; --batch-id names it).`,
	}
	cmd.AddCommand(newBatchStatusCmd(a), newBatchCancelCmd(a))
	return cmd
}

func newBatchStatusCmd(a *app) *cobra.Command {
	var rf redisFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "status BATCH_ID",
		Short:   "Tasks enqueued, waiting, running, sent and dead-lettered by code; when it will be done",
		Example: `  resendq batch status file-3f9a0c1d2e4b5a6f7081`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := enqueue.CheckBatchID(args[0]); err != nil {
				return usageErr(err)
			}
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			st, err := enqueue.New(rdb, enqueue.Options{}).BatchStatus(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(st)
			}
			printBatchStatus(a, st)
			return nil
		},
	}
	rf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func printBatchStatus(a *app, st enqueue.BatchStatus) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "batch\t%s\n", st.BatchID)
	fmt.Fprintf(tw, "enqueued\t%d\n", st.Enqueued)
	fmt.Fprintf(tw, "waiting\t%d\n", st.Waiting)
	fmt.Fprintf(tw, "running\t%d\n", st.Running)
	fmt.Fprintf(tw, "sent\t%d\n", st.Sent)
	fmt.Fprintf(tw, "dead-lettered\t%d\n", st.DeadLetter)
	codes := make([]string, 0, len(st.ByCode))
	for c := range st.ByCode {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, c := range codes {
		fmt.Fprintf(tw, "  code %s\t%d\n", c, st.ByCode[c])
	}
	for _, r := range []string{"cancelled", "exhausted", "rate_limited", "outage", "invalid"} {
		if n := st.ByReason[r]; n > 0 {
			fmt.Fprintf(tw, "  %s\t%d\n", r, n)
		}
	}
	switch left := st.Waiting + st.Running; {
	case left == 0:
		fmt.Fprintf(tw, "done\tnothing left to send\n")
	case st.DoneIn > 0:
		fmt.Fprintf(tw, "pace\t%.1f a second over the last minute: done in about %s\n", st.PerSecond, st.DoneIn.Round(time.Second))
	default:
		fmt.Fprintf(tw, "pace\tnone finished in the last minute: no estimate (are workers running?)\n")
	}
	tw.Flush()
}

func newBatchCancelCmd(a *app) *cobra.Command {
	var rf redisFlags
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "cancel BATCH_ID",
		Short: "Remove the tasks of a batch not sent yet, recording each as a dead letter (reason cancelled)",
		Long: `Removes the batch's tasks that are still queued (pending, scheduled or waiting for a
retry) and records each as a dead letter of reason cancelled, so that
"resendq dlq replay --batch-id ID --reason cancelled" can send them later. Tasks running
right now finish. Without --yes it asks on a terminal; without a terminal it refuses
(exit status 2) and changes nothing. It writes one audit log line.`,
		Example: `  resendq batch cancel file-3f9a0c1d2e4b5a6f7081 --yes`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := enqueue.CheckBatchID(id); err != nil {
				return usageErr(err)
			}
			if err := confirm(a, yes, fmt.Sprintf("Cancel what is not sent yet of batch %s?", id)); err != nil {
				return err
			}
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			sum, err := enqueue.New(rdb, enqueue.Options{}).CancelBatch(cmd.Context(), id)
			audit(a, "batch cancel", "batch_id="+id, sum.String(), err)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(sum)
			}
			_, err = fmt.Fprintf(a.stdout, "batch %s: %d tasks cancelled (dead letters, reason cancelled); %d running, left to finish\n", id, sum.Cancelled, sum.Running)
			return err
		},
	}
	rf.register(cmd.Flags())
	cmd.Flags().BoolVar(&yes, "yes", false, "cancel without asking (without it, a terminal is asked and anything else refused)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as one JSON object")
	return cmd
}
