package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

func newDLQCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Dead letters: list and count them, replay them once their cause is fixed, or purge them",
		Long: `Dead letters are kept in resendq's own outcome records, with their full request,
so none is lost when asynq's archive trims itself (10,000 tasks per queue). A dead
letter is open until it is replayed; its record then names the replay (replayed_as),
and the replay's record names it (replay_of).`,
	}
	cmd.AddCommand(newDLQListCmd(a), newDLQStatsCmd(a), newDLQReplayCmd(a), newDLQPurgeCmd(a))
	return cmd
}

func newDLQListCmd(a *app) *cobra.Command {
	return newListCmd(a, "List dead letters, newest first, open and replayed (--state)", `  resendq dlq list --code 003-002 --since 24h
  resendq dlq list --state open --all`, outcome.StatusDeadLetter)
}

func newDLQStatsCmd(a *app) *cobra.Command {
	return newReadCmd(a, "stats", "Count dead letters, open and replayed, by code, reason and project",
		func(ctx context.Context, rdb redis.UniversalClient) (outcome.DeadLetterStats, error) {
			return outcome.NewStore(rdb, outcome.Options{}).DeadLetters(ctx)
		}, printDeadLetterStats)
}

func printDeadLetterStats(a *app, st outcome.DeadLetterStats) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "dead letters\t%d\topen %d\treplayed %d\n", st.Total, st.Open, st.Replayed)
	if !st.Oldest.IsZero() {
		fmt.Fprintf(tw, "oldest\t%s\n", st.Oldest.Local().Format(time.DateTime))
		fmt.Fprintf(tw, "newest\t%s\n", st.Newest.Local().Format(time.DateTime))
	}
	for _, group := range []struct {
		name string
		m    map[string]outcome.OpenReplayed
	}{{"code", st.ByCode}, {"reason", st.ByReason}, {"project", st.ByProject}} {
		keys := make([]string, 0, len(group.m))
		for k := range group.m {
			keys = append(keys, k)
		}
		// The most open first: the work left.
		sort.Slice(keys, func(i, j int) bool {
			a, b := group.m[keys[i]], group.m[keys[j]]
			if a.Open != b.Open {
				return a.Open > b.Open
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			n := group.m[k]
			fmt.Fprintf(tw, "  %s %s\t\topen %d\treplayed %d", group.name, k, n.Open, n.Replayed)
			if !n.Oldest.IsZero() {
				fmt.Fprintf(tw, "\t%s to %s", n.Oldest.Local().Format(time.DateTime), n.Newest.Local().Format(time.DateTime))
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()
}

// selectFlags are the flags that select dead letters for replay and purge.
type selectFlags struct {
	ff      filterFlags
	taskIDs []string
	all     bool
	dryRun  bool
	yes     bool
	asJSON  bool
}

func (sf *selectFlags) register(fs *pflag.FlagSet, verb string) {
	sf.ff.register(fs, "status", "limit", "cursor")
	fs.StringSliceVar(&sf.taskIDs, "task-id", nil, "only these dead letters (repeatable, or comma-separated); not with a filter")
	fs.BoolVar(&sf.all, "all-dead-letters", false, verb+" every dead letter (no filter)")
	fs.BoolVar(&sf.dryRun, "dry-run", false, "count what would be done, change nothing")
	fs.BoolVar(&sf.yes, "yes", false, "do it without asking (without it, a terminal is asked and anything else refused)")
	fs.BoolVar(&sf.asJSON, "json", false, "print the summary as one JSON object")
}

// selection is the enqueue.Selection the flags describe.
func (sf *selectFlags) selection(cmdName string) (enqueue.Selection, error) {
	f, err := sf.ff.filter(time.Now())
	if err != nil {
		return enqueue.Selection{}, usageErr(err)
	}
	sel := enqueue.Selection{Filter: f, TaskIDs: sf.taskIDs, All: sf.all}
	if err := sel.Check(); errors.Is(err, enqueue.ErrNoSelection) {
		return sel, usageErr(fmt.Errorf("dlq %s needs a filter (--code, --reason, --since, --until, --project-id, --batch-id, --username, --state), --task-id or --all-dead-letters", cmdName))
	} else if err != nil {
		return sel, usageErr(err)
	}
	return sel, nil
}

// confirm asks on a terminal whether to go ahead with what the dry run
// found. Without --yes and without a terminal it refuses: exit status 2,
// nothing changed.
func (sf *selectFlags) confirm(a *app, question string) error { return confirm(a, sf.yes, question) }

// confirm asks question on a terminal unless yes; without a terminal it
// refuses (exit status 2), and a "no" ends with exit status 1.
func confirm(a *app, yes bool, question string) error {
	if yes {
		return nil
	}
	in, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return usageErr(errors.New("nothing changed: pass --yes to go ahead without a terminal to ask on (or --dry-run to count only)"))
	}
	fmt.Fprintf(a.stderr, "%s [y/N] ", question)
	answer, _ := bufio.NewReader(in).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
		return &exitError{code: 1, err: errors.New("nothing changed: not confirmed")}
	}
	return nil
}

// bar is a progress bar on stderr when it is a terminal, for total items.
func bar(a *app, total int, what string) *progressbar.ProgressBar {
	if !isTerminal(a.stderr) || total < 100 {
		return nil
	}
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(a.stderr),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetDescription(what),
	)
}

func newDLQReplayCmd(a *app) *cobra.Command {
	var rf redisFlags
	var sf selectFlags
	var queue string
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Enqueue dead letters again, as new tasks, once their cause is fixed",
		Long: `Replays every dead letter selected, as a new task, newest first. Each dead letter
is replayed at most once: running the same replay again enqueues nothing. Only the
newest open dead letter of a user is replayed; one whose user was sent an email since,
has a newer open dead letter, or a replay or resend still queued is skipped as
superseded: a replay never sends a second email. Dead letters
whose request is invalid are counted, not replayed. The replay's own failures are new
dead letters (replay_of names the one they replay), which a later replay may send again.

Without --yes it counts first, prints what it would do and asks on a terminal; without
a terminal it refuses (exit status 2) and changes nothing.`,
		Example: `  resendq dlq replay --code 010-012 --since 24h --dry-run
  resendq dlq replay --code 010-012 --yes
  resendq dlq replay --task-id 5f0c... --queue signup`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sel, err := sf.selection("replay")
			if err != nil {
				return err
			}
			opts := enqueue.ReplayOptions{Selection: sel, Queue: queue, DryRun: true}
			if err := opts.Check(); err != nil {
				return usageErr(errors.New("--" + err.Error()))
			}
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			enq := enqueue.New(rdb, enqueue.Options{})
			if sf.dryRun || !sf.yes {
				sum, err := enq.ReplayDeadLetters(cmd.Context(), opts)
				if err = badSelection(err); sf.dryRun || err != nil || sum.Replayed == 0 {
					return errors.Join(err, printReplay(a, sum, sf.asJSON))
				}
				_ = printReplay(a.withStdout(a.stderr), sum, false)
				if err := sf.confirm(a, fmt.Sprintf("Replay %d dead letters to queue %s?", sum.Replayed, opts.Queue)); err != nil {
					return err
				}
				opts.Progress = progressOf(bar(a, sum.Matched, "replaying"), func(s enqueue.ReplaySummary) int { return s.Matched })
			} else {
				opts.Progress = progressOf(bar(a, -1, "replaying"), func(s enqueue.ReplaySummary) int { return s.Matched })
			}
			opts.DryRun = false
			sum, err := enq.ReplayDeadLetters(cmd.Context(), opts)
			err = badSelection(err)
			audit(a, "dlq replay", sel.String(), sum.String(), err)
			return errors.Join(err, printReplay(a, sum, sf.asJSON))
		},
	}
	rf.register(cmd.Flags())
	sf.register(cmd.Flags(), "replay")
	cmd.Flags().StringVar(&queue, "queue", tasks.QueueBulk, "queue the replayed tasks go to: bulk or signup")
	return cmd
}

func newDLQPurgeCmd(a *app) *cobra.Command {
	var rf redisFlags
	var sf selectFlags
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Delete dead letters for good: their records and their tasks in asynq's archive",
		Long: `Deletes every dead letter selected: its outcome record (with its index entries and
counts) and its task in asynq's archive, if the archive still holds it; for dead letters
that will never be sent, such as users that do not exist (003-002).

Without --yes it counts first, prints what it would do and asks on a terminal; without
a terminal it refuses (exit status 2) and changes nothing.`,
		Example: `  resendq dlq purge --code 003-002 --dry-run
  resendq dlq purge --code 003-002 --until 720h --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sel, err := sf.selection("purge")
			if err != nil {
				return err
			}
			rdb, err := rf.connect(cmd.Context(), 0)
			if err != nil {
				return err
			}
			defer rdb.Close()
			enq := enqueue.New(rdb, enqueue.Options{})
			opts := enqueue.PurgeOptions{Selection: sel, DryRun: true}
			total := -1
			if sf.dryRun || !sf.yes {
				sum, err := enq.PurgeDeadLetters(cmd.Context(), opts)
				if err = badSelection(err); sf.dryRun || err != nil || sum.Matched == 0 {
					return errors.Join(err, printPurge(a, sum, sf.asJSON))
				}
				_ = printPurge(a.withStdout(a.stderr), sum, false)
				if err := sf.confirm(a, fmt.Sprintf("Delete %d dead letters for good?", sum.Matched)); err != nil {
					return err
				}
				total = sum.Matched
			}
			opts.DryRun = false
			opts.Progress = progressOf(bar(a, total, "purging"), func(s enqueue.PurgeSummary) int { return s.Matched })
			sum, err := enq.PurgeDeadLetters(cmd.Context(), opts)
			err = badSelection(err)
			audit(a, "dlq purge", sel.String(), sum.String(), err)
			return errors.Join(err, printPurge(a, sum, sf.asJSON))
		},
	}
	rf.register(cmd.Flags())
	sf.register(cmd.Flags(), "purge")
	return cmd
}

// badSelection makes a task ID that selects no dead letter a usage error.
func badSelection(err error) error {
	var nd *enqueue.NotDeadLetterError
	if errors.As(err, &nd) {
		return usageErr(err)
	}
	return err
}

// progressOf moves a progress bar (nil: none) to what count says of a summary.
func progressOf[S any](b *progressbar.ProgressBar, count func(S) int) func(S) {
	if b == nil {
		return nil
	}
	return func(s S) { _ = b.Set(count(s)) }
}

// audit writes the one log line of a change to what resendq keeps: what was
// selected (a username in it masked), what became of it, and from where.
func audit(a *app, what, selection, result string, err error) {
	e := a.log.WithField("audit", what).WithField("selection", selection).WithField("result", result).WithField("from", "cli")
	if err != nil {
		e.WithError(err).Warn("changed in part")
		return
	}
	e.Info("changed")
}

func printReplay(a *app, sum enqueue.ReplaySummary, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(a.stdout).Encode(sum)
	}
	verb := "replayed"
	if sum.DryRun {
		verb = "would replay (dry run)"
	}
	_, err := fmt.Fprintf(a.stdout, "%d dead letters matched: %s %d, already replayed %d, superseded %d, still invalid %d\n",
		sum.Matched, verb, sum.Replayed, sum.AlreadyReplayed, sum.Superseded, sum.StillInvalid)
	return err
}

func printPurge(a *app, sum enqueue.PurgeSummary, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(a.stdout).Encode(sum)
	}
	if sum.DryRun {
		_, err := fmt.Fprintf(a.stdout, "%d dead letters matched: would delete them (dry run)\n", sum.Matched)
		return err
	}
	_, err := fmt.Fprintf(a.stdout, "%d dead letters matched: deleted %d records and %d tasks from asynq's archive\n", sum.Matched, sum.Purged, sum.Archived)
	return err
}

// withStdout is a copy of a writing its output to w.
func (a *app) withStdout(w io.Writer) *app {
	c := *a
	c.stdout = w
	return &c
}
