package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/resendq/resendq/outcome"
)

func newOutcomesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "outcomes",
		Short: "Who got their email, and why someone did not",
	}
	cmd.AddCommand(newOutcomesListCmd(a), newOutcomesStatsCmd(a))
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
	ff.register(cmd.Flags(), only == "")
	cmd.Flags().BoolVar(&all, "all", false, "follow pages to the end")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object a line")
	return cmd
}

// filterFlags are the flags that select outcome records.
type filterFlags struct {
	f                     outcome.Filter
	status, reason, since string
}

func (ff *filterFlags) register(fs *pflag.FlagSet, withStatus bool) {
	fs.StringVar(&ff.f.Username, "username", "", "only this username or email address")
	fs.StringVar(&ff.f.ProjectID, "project-id", "", "only this Login project")
	if withStatus {
		fs.StringVar(&ff.status, "status", "", "only sent or dead_letter")
	}
	fs.StringVar(&ff.reason, "reason", "", "only dead letters of this reason: rejected, rate_limited, exhausted or invalid")
	fs.StringVar(&ff.f.Code, "code", "", "only this Login API error code, e.g. 003-002")
	fs.StringVar(&ff.f.BatchID, "batch-id", "", "only this batch")
	fs.StringVar(&ff.since, "since", "", "only outcomes since a time (RFC 3339) or for a duration back (e.g. 24h)")
	fs.IntVar(&ff.f.Limit, "limit", 50, "records per page (at most 1000)")
	fs.StringVar(&ff.f.Cursor, "cursor", "", "continue from a previous page")
}

// filter is the outcome.Filter the flags describe.
func (ff *filterFlags) filter(now time.Time) (outcome.Filter, error) {
	f := ff.f
	f.Status, f.Reason = outcome.Status(ff.status), outcome.Reason(ff.reason)
	if ff.since != "" {
		t, err := parseSince(ff.since, now)
		if err != nil {
			return f, err
		}
		f.Since = t
	}
	if err := f.Validate(); err != nil {
		// "outcome: invalid argument: status ..." → "--status ..."
		return f, errors.New("--" + strings.TrimPrefix(err.Error(), outcome.ErrInvalid.Error()+": "))
	}
	return f, nil
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

// parseSince reads "24h" (that long ago) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration such as 24h or a time such as 2026-11-25T10:00:00Z", s)
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
		fmt.Fprintln(w.tw, "FINISHED\tSTATUS\tREASON\tHTTP\tCODE\tATTEMPTS\tPROJECT\tUSERNAME\tTASK")
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
		fmt.Fprintf(w.tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.FinishedAt.Local().Format(time.DateTime), r.Status,
			dash(string(r.Reason)), dash(itoa(r.HTTPStatus)), dash(r.ErrorCode), r.Attempts, r.ProjectID, r.Username, r.TaskID)
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
	var rf redisFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count outcomes by status, reason and error code",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			st, err := outcome.NewStore(rdb, outcome.Options{}).Stats(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(st)
			}
			printStats(a, st)
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
