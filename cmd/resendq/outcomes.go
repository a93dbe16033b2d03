package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/resendq/resendq/outcome"
)

func newOutcomesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "outcomes",
		Short: "Who got their email, and why someone did not",
	}
	cmd.AddCommand(newOutcomesListCmd(a), newOutcomesShowCmd(a), newOutcomesStatsCmd(a), newOutcomesForgetCmd(a))
	return cmd
}

func newOutcomesListCmd(a *app) *cobra.Command {
	return newListCmd(a, "List outcome records, newest first", `  resendq outcomes list --username john@example.com
  resendq outcomes list --status dead_letter --code 003-002 --since 24h --json`, "")
}

// newListCmd is a command that lists outcome records: all of them, or only
// those of one status.
func newListCmd(a *app, short, example string, only outcome.Status) *cobra.Command {
	var rf redisFlags
	var ff filterFlags
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   short,
		Example: example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ff.filter(time.Now())
			if err != nil {
				return usageErr(err)
			}
			if only != "" {
				f.Status = only
			}
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			w := newRecordWriter(a, asJSON)
			next, err := eachPage(cmd.Context(), outcome.NewStore(rdb, outcome.Options{}), f, all, w.write)
			if err != nil {
				return err
			}
			w.flush(next)
			return nil
		},
	}
	rf.register(cmd.Flags())
	if only != "" {
		ff.register(cmd.Flags(), "status")
	} else {
		ff.register(cmd.Flags())
	}
	cmd.Flags().BoolVar(&all, "all", false, "follow pages to the end")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object a line")
	return cmd
}

// filterFlags are the flags that select outcome records: the parameters of
// outcome.ParseFilter, --project-id for project_id.
type filterFlags struct {
	values map[string]*string
}

// register registers a flag for each filter parameter but those of skip.
func (ff *filterFlags) register(fs *pflag.FlagSet, skip ...string) {
	ff.values = map[string]*string{}
	add := func(param, def, usage string) {
		if slices.Contains(skip, param) {
			return
		}
		ff.values[param] = fs.String(flagName(param), def, usage)
	}
	add("username", "", "only this username or email address")
	add("project_id", "", "only this Login project")
	add("status", "", "only sent or dead_letter")
	add("reason", "", "only dead letters of this reason: "+joinReasons(", "))
	add("code", "", "only this Login API error code, e.g. 003-002")
	add("batch_id", "", "only this batch")
	add("state", "", "only dead letters open (not replayed yet) or replayed")
	add("since", "", "only outcomes since a time (RFC 3339) or for a duration back (e.g. 24h)")
	add("until", "", "only outcomes before a time (RFC 3339) or a duration back (e.g. 1h)")
	add("limit", "50", fmt.Sprintf("records per page (at most %d)", outcome.MaxLimit))
	add("cursor", "", "continue from a previous page")
}

// flagName is the flag of a filter parameter: project_id → project-id.
func flagName(param string) string { return strings.ReplaceAll(param, "_", "-") }

// filter is the outcome.Filter the flags describe; an error names the flag.
func (ff *filterFlags) filter(now time.Time) (outcome.Filter, error) {
	params := map[string]string{}
	for name, v := range ff.values {
		if *v != "" {
			params[name] = *v
		}
	}
	f, err := outcome.ParseFilter(params, now)
	var fe *outcome.FieldError
	if errors.As(err, &fe) {
		return f, errors.New(fe.Describe("--" + flagName(fe.Field)))
	}
	return f, err
}

// eachPage hands every page of records that f selects to fn: the first
// page only, or all of them. It returns the cursor of the page after the
// last one handed over ("" at the end).
func eachPage(ctx context.Context, store *outcome.Store, f outcome.Filter, all bool, fn func([]outcome.Record) error) (string, error) {
	for {
		page, err := store.List(ctx, f)
		if errors.Is(err, outcome.ErrInvalid) {
			return "", usageErr(err)
		} else if err != nil {
			return "", err
		}
		if err := fn(page.Records); err != nil {
			return "", err
		}
		if !all || page.NextCursor == "" {
			return page.NextCursor, nil
		}
		f.Cursor = page.NextCursor
	}
}

// joinReasons lists the dead-letter reasons, separated by sep.
func joinReasons(sep string) string {
	var names []string
	for _, r := range outcome.Reasons() {
		names = append(names, string(r))
	}
	return strings.Join(names, sep)
}

// recordWriter prints outcome records as JSON lines or an aligned table.
type recordWriter struct {
	a      *app
	asJSON bool
	tw     *tabwriter.Writer
	n      int
}

func newRecordWriter(a *app, asJSON bool) *recordWriter {
	w := &recordWriter{a: a, asJSON: asJSON}
	if !asJSON {
		w.tw = tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w.tw, "FINISHED\tSTATUS\tREASON\tHTTP\tCODE\tATTEMPTS\tPROJECT\tUSERNAME\tTASK\tREPLAY")
	}
	return w
}

func (w *recordWriter) write(recs []outcome.Record) error {
	enc := json.NewEncoder(w.a.stdout)
	for _, r := range recs {
		w.n++
		if w.asJSON {
			if err := enc.Encode(r); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(w.tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.FinishedAt.Local().Format(time.DateTime), r.Status,
			dash(string(r.Reason)), dash(itoa(r.HTTPStatus)), dash(r.ErrorCode), r.Attempts, r.ProjectID, r.Username, r.TaskID, replayOf(r))
	}
	return nil
}

func (w *recordWriter) flush(next string) {
	if w.asJSON {
		return
	}
	w.tw.Flush()
	if w.n == 0 {
		fmt.Fprintln(w.a.stderr, "no outcome records match")
	}
	if next != "" {
		fmt.Fprintf(w.a.stderr, "more: --cursor %s (or --all)\n", next)
	}
}

// replayOf says how a record is linked to replays: a dead letter is
// "replayed as ID" or "open", a replay says "of ID" (the dead letter it
// replayed), e.g. "open, of ID" for a replay that failed again.
func replayOf(r outcome.Record) string {
	var parts []string
	switch {
	case r.ReplayedAs != "":
		parts = append(parts, "replayed as "+r.ReplayedAs)
	case r.Status == outcome.StatusDeadLetter:
		parts = append(parts, "open")
	}
	if r.ReplayOf != "" {
		parts = append(parts, "of "+r.ReplayOf)
	}
	return dash(strings.Join(parts, ", "))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func itoa(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprint(n)
}

func newOutcomesStatsCmd(a *app) *cobra.Command {
	return newReadCmd(a, "stats", "Count outcomes by status, reason and error code",
		func(ctx context.Context, rdb redis.UniversalClient) (outcome.Stats, error) {
			return outcome.NewStore(rdb, outcome.Options{}).Stats(ctx)
		}, printStats)
}

// newReadCmd is a command that reads something from Redis and prints it: as
// one JSON object with --json, else with print.
func newReadCmd[T any](a *app, use, short string, read func(context.Context, redis.UniversalClient) (T, error), print func(*app, T)) *cobra.Command {
	var rf redisFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			v, err := read(cmd.Context(), rdb)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(v)
			}
			print(a, v)
			return nil
		},
	}
	rf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func printStats(a *app, st outcome.Stats) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "sent\t%d\n", st.Sent)
	fmt.Fprintf(tw, "dead_letter\t%d\n", st.DeadLetter)
	for _, group := range []struct {
		name string
		m    map[string]int64
	}{{"reason", st.ByReason}, {"code", st.ByCode}} {
		keys := make([]string, 0, len(group.m))
		for k := range group.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s %s\t%d\n", group.name, k, group.m[k])
		}
	}
	tw.Flush()
}
