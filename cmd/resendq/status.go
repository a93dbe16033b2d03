package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/resendq/resendq/ratelimit"
)

func newStatusCmd(a *app) *cobra.Command {
	type status struct {
		Projects []ratelimit.State `json:"projects"`
	}
	cmd := newReadCmd(a, "status", "The fleet's flow control per Login project: outages (open circuits), pauses after a 429, learned rates",
		func(ctx context.Context, rdb redis.UniversalClient) (status, error) {
			states, err := ratelimit.Status(ctx, rdb, "")
			return status{append([]ratelimit.State{}, states...)}, err
		}, func(a *app, st status) { printFlow(a, st.Projects) })
	cmd.Long = `Reads from Redis what every worker of the fleet shares per Login project:
whether its circuit is open (the API fails most of its calls: resends wait,
one probe at a time goes out), what remains of its pause after a 429, and
the rate the fleet learned from its 429s. Projects with none of these are
not listed. A worker's fixed rates (--api-rate, --api-rate-project) are its
own configuration; its /metrics show them (resendq_api_rate).`
	cmd.Flags().Lookup("json").Usage = `print one JSON object: {"projects":[...]}`
	return cmd
}

func printFlow(a *app, states []ratelimit.State) {
	if len(states) == 0 {
		fmt.Fprintln(a.stdout, "no project has an outage, a pause after a 429 or a learned rate")
		return
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECT\tCIRCUIT\tOPEN FOR\tOPENED ON\tPAUSED\tRATE")
	for _, st := range states {
		circuit, openFor, openedOn := "closed", "-", "-"
		switch {
		case st.Open:
			circuit = "OPEN"
			openFor = st.OpenFor.Round(time.Second).String()
			openedOn = fmt.Sprintf("%d of %d calls failed", st.Failures, st.Calls)
		case st.Watched:
			circuit = "closed, failures seen"
		}
		paused := "-"
		if st.Paused > 0 {
			paused = st.Paused.Round(100 * time.Millisecond).String()
		}
		rate := "-"
		switch {
		case st.Learning:
			rate = "learning"
		case st.Rate > 0:
			rate = fmt.Sprintf("%.1f/s (learned)", st.Rate)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", st.Project, circuit, openFor, openedOn, paused, rate)
	}
	tw.Flush()
}
