package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/resendq/resendq/loginapi/fake"
)

func newFakeAPICmd(a *app) *cobra.Command {
	var addr string
	var latency time.Duration
	var rps float64
	cmd := &cobra.Command{
		Use:   "fakeapi",
		Short: "Serve a local double of the Login API resend endpoint, for trying things out",
		Long: "Serves POST /api/user/resend_confirmation_link with the real endpoint's contract.\n" +
			"Usernames pick the answer:\n\n" + fake.DemoHelp(),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api := fake.New()
			api.SetRules(fake.DemoRules)
			api.SetDefault(fake.Behavior{Latency: latency})
			if rps > 0 {
				api.SetRateLimit(rps, int(rps)+1)
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return usageErr(fmt.Errorf("--addr %s: %w", addr, err))
			}
			a.log.WithField("api_base", "http://"+ln.Addr().String()+"/api").Info("fake Login API listening")
			return serveUntilDone(cmd.Context(), ln, api)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8089", "address to listen on")
	cmd.Flags().DurationVar(&latency, "latency", 0, "delay before every answer")
	cmd.Flags().Float64Var(&rps, "rate-limit", 0, "answer 429 beyond this many requests per second (0: no limit)")
	return cmd
}

// serveUntilDone serves h on ln until ctx is done, then shuts down.
func serveUntilDone(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
