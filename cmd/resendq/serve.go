package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/resendq/resendq/outcome"
)

// newServeCmd is `resendq serve`: the HTTP surface of a worker process
// without processing tasks, for producers and operators scaled apart from
// the workers.
func newServeCmd(a *app) *cobra.Command {
	var rf redisFlags
	var hf httpFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API (enqueue resends, look them up, outcomes), the UI and /metrics without processing tasks",
		Long: `Serve the HTTP surface of a worker on --http-addr: POST /api/v1/resends and
POST /api/v1/resends:batch for producers in any language, GET
/api/v1/resends/{task_id}, the outcome records, the asynq UI, /metrics,
/healthz and /readyz. It processes no task: run workers beside it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if hf.addr == "" {
				return usageErr(errors.New("--http-addr: required, e.g. 127.0.0.1:8080"))
			}
			if err := hf.validate(); err != nil {
				return usageErr(err)
			}
			ctx := cmd.Context()
			rdb, err := rf.connect(ctx, 64)
			if err != nil {
				return err
			}
			defer rdb.Close()
			m, err := newProcMetrics(a, rdb)
			if err != nil {
				return err
			}
			httpSrv, err := hf.serve(a, surface{rdb: rdb, outcomes: outcome.NewStore(rdb, outcome.Options{}), metrics: m.registry}, false)
			if err != nil {
				return err
			}
			a.log.Info("serving; no task is processed here")
			<-ctx.Done()
			httpSrv.stop()
			a.log.Info("stopped")
			return nil
		},
	}
	rf.register(cmd.Flags())
	hf.register(cmd.Flags(), "127.0.0.1:8080")
	return cmd
}
