package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/tasks"
)

func newEnqueueCmd(a *app) *cobra.Command {
	var rf redisFlags
	var r tasks.Resend
	var dedup time.Duration
	var asJSON bool
	var bf batchFlags
	var wf replicaFlags
	cmd := &cobra.Command{
		Use:   "enqueue",
		Short: "Ask for a confirmation email to be resent to one user, or to every user of a file",
		Long: `Validates the request, enqueues it on the signup queue and prints the task id.
A second request for the same project and username within --dedup-window
returns the first task's id and sends no second email.

Exit status: 0 enqueued (or already enqueued); 1 failed, e.g. Redis
unreachable (the command gives up within seconds, never hangs); 2 bad
usage or input: nothing was enqueued; 3 enqueued on the Redis master, but
fewer replicas than --redis-wait-replicas acknowledged it within
--redis-wait-timeout (the task id is printed all the same; enqueueing it
again is safe).
` + batchCmdHelp,
		Example: `  resendq enqueue --project-id 6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11 --username john@example.com
` + batchExample,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkBatchFlags(cmd.Flags(), &bf, r.Normalize()); err != nil {
				return usageErr(err)
			}
			if dedup < 0 {
				return usageErr(fmt.Errorf("--dedup-window %s: must not be negative (0 disables it)", dedup))
			}
			if err := wf.validate(); err != nil {
				return usageErr(err)
			}
			opts := wf.options(enqueue.Options{DedupWindow: enqueue.DedupWindowOf(dedup)})
			if bf.file != "" {
				return runBatch(cmd.Context(), a, &rf, &bf, r.Normalize(), opts, asJSON)
			}
			r = r.Normalize()
			if err := r.Validate(); err != nil {
				return usageErr(flagError(err))
			}
			for _, w := range r.Warnings() {
				fmt.Fprintln(a.stderr, "resendq: warning:", w)
			}
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			if err := checkWaitClient(opts.WaitReplicas, rdb); err != nil {
				return err
			}
			res, err := enqueue.New(rdb, opts).Enqueue(cmd.Context(), r)
			var re *enqueue.ReplicasError
			if err != nil && !errors.As(err, &re) {
				return err
			}
			if perr := printEnqueued(a, res, asJSON); perr != nil {
				return perr
			}
			return replicasExit(err)
		},
	}
	rf.register(cmd.Flags())
	fs := cmd.Flags()
	fs.StringVar(&r.ProjectID, "project-id", "", "Login project ID (a UUID)")
	fs.StringVar(&r.Username, "username", "", "username or email address of the user")
	fs.StringVar(&r.LoginURL, "login-url", "", "callback URL to send the user to after confirmation (one of the project's Callback URLs)")
	fs.StringVar(&r.Payload, "payload", "", "custom data returned in the user JWT (custom user storage only)")
	fs.DurationVar(&dedup, "dedup-window", enqueue.DefaultDedupWindow, "a repeat for the same user within this window returns the first task; a batch skips users sent a resend within it (0 disables)")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	bf.register(fs)
	wf.register(fs)
	return cmd
}

// flagError names the flag behind a validation error.
func flagError(err error) error {
	var ve *tasks.ValidationError
	if errors.As(err, &ve) {
		flag := map[string]string{"project_id": "--project-id", "username": "--username", "login_url": "--login-url", "payload": "--payload"}[ve.Field]
		return fmt.Errorf("%s %s", flag, ve.Problem)
	}
	return err
}

func printEnqueued(a *app, res enqueue.Result, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(a.stdout).Encode(res)
	}
	if res.Duplicate {
		fmt.Fprintf(a.stderr, "resendq: already enqueued within the dedup window; no second email\n")
	}
	fmt.Fprintln(a.stdout, res.TaskID)
	return nil
}
