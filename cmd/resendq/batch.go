package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/spf13/pflag"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/tasks"
)

// exitInterrupted is the exit status of a batch stopped by Ctrl-C or SIGTERM.
const exitInterrupted = 130

// batchFlags are the flags of `resendq enqueue --file`.
type batchFlags struct {
	file        string
	format      string
	batchID     string
	rejects     string
	dryRun      bool
	noProgress  bool
	concurrency int
}

func (b *batchFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&b.file, "file", "", `resend to every row of this CSV or JSON Lines file on the bulk queue ("-": standard input)`)
	fs.StringVar(&b.format, "format", "", "format of --file: csv or jsonl (default: from the file name's extension)")
	fs.StringVar(&b.batchID, "batch-id", "", "ID of the batch; running the same batch again enqueues only what is missing (default: from the file's content)")
	fs.StringVar(&b.rejects, "rejects", "", `where rejected rows go, as CSV line,reason,raw (default: <file>.rejects.csv; for standard input, stderr; "-": stderr)`)
	fs.BoolVar(&b.dryRun, "dry-run", false, "validate and count the rows without writing to Redis")
	fs.BoolVar(&b.noProgress, "no-progress", false, "print no progress while the batch runs")
	fs.IntVar(&b.concurrency, "concurrency", enqueue.DefaultBatchConcurrency, "rows in flight at once")
}

// batchOnly lists the flags that make sense only with --file.
var batchOnly = []string{"format", "batch-id", "rejects", "dry-run"}

// singleOnly lists the flags of a single enqueue that --file does not take.
var singleOnly = []string{"username"}

// checkBatchFlags reports flags given in the wrong mode and bad values.
func checkBatchFlags(fs *pflag.FlagSet, b *batchFlags, defaults tasks.Resend) error {
	if b.file == "" {
		for _, name := range batchOnly {
			if fs.Changed(name) {
				return fmt.Errorf("--%s needs --file", name)
			}
		}
		return nil
	}
	for _, name := range singleOnly {
		if fs.Changed(name) {
			return fmt.Errorf("--%s cannot be used with --file: the rows name the users", name)
		}
	}
	if b.format != "" && b.format != "csv" && b.format != "jsonl" {
		return fmt.Errorf("--format %q: want csv or jsonl", b.format)
	}
	if b.batchID != "" {
		if err := enqueue.CheckBatchID(b.batchID); err != nil {
			return fmt.Errorf("--batch-id: %w", err)
		}
	}
	if b.concurrency < 1 || b.concurrency > 10_000 {
		return fmt.Errorf("--concurrency %d: want 1 to 10000", b.concurrency)
	}
	// The defaults that fill empty cells must be valid themselves.
	probe := defaults
	probe.Username = "probe"
	if probe.ProjectID == "" {
		probe.ProjectID = "00000000-0000-0000-0000-000000000000"
	}
	if err := probe.Validate(); err != nil {
		return flagError(err)
	}
	return nil
}

// batchInput is the opened input of a batch.
type batchInput struct {
	name    string // the file name, or "standard input"
	path    string // the file name; "" for standard input
	format  string
	size    int64 // bytes; -1 when unknown
	read    atomic.Int64
	r       io.Reader
	batchID string
	closeFn func()
}

func (in *batchInput) Read(p []byte) (int, error) {
	n, err := in.r.Read(p)
	in.read.Add(int64(n))
	return n, err
}

func (in *batchInput) close() {
	if in.closeFn != nil {
		in.closeFn()
	}
}

// openInput opens --file, picks its format and settles the batch ID,
// hashing the content when none was given. Standard input is then copied
// to a temporary file, so that it can be hashed and still streamed.
func openInput(a *app, b *batchFlags) (*batchInput, error) {
	in := &batchInput{name: b.file, path: b.file, format: b.format, size: -1, batchID: b.batchID}
	if in.format == "" {
		switch strings.ToLower(filepath.Ext(b.file)) {
		case ".csv":
			in.format = "csv"
		case ".jsonl", ".ndjson":
			in.format = "jsonl"
		default:
			what := "the file name " + b.file
			if b.file == "-" {
				what = "standard input"
			}
			return nil, usageErr(fmt.Errorf("cannot tell the format of %s: pass --format csv or --format jsonl", what))
		}
	}
	var f *os.File
	if b.file == "-" {
		in.name, in.path = "standard input", ""
		if in.batchID == "" {
			spool, err := spoolStdin(a.stdin)
			if err != nil {
				return nil, err
			}
			f = spool
			in.closeFn = func() { spool.Close(); os.Remove(spool.Name()) }
		} else {
			in.r = a.stdin
			return in, nil
		}
	} else {
		var err error
		if f, err = os.Open(b.file); err != nil {
			return nil, usageErr(fmt.Errorf("--file: %w", err))
		}
		in.closeFn = func() { f.Close() }
	}
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		in.size = st.Size()
	}
	if in.batchID == "" {
		id, err := enqueue.ContentBatchID(f)
		if err == nil {
			_, err = f.Seek(0, io.SeekStart)
		}
		if err != nil {
			in.close()
			return nil, usageErr(fmt.Errorf("--file %s: %w", b.file, err))
		}
		in.batchID = id
	}
	in.r = f
	return in, nil
}

// spoolStdin copies standard input to a temporary file and rewinds it.
func spoolStdin(stdin io.Reader) (*os.File, error) {
	f, err := os.CreateTemp("", "resendq-stdin-*")
	if err != nil {
		return nil, fmt.Errorf("copy standard input to a temporary file (or pass --batch-id to stream it): %w", err)
	}
	_, err = io.Copy(f, stdin)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("copy standard input to a temporary file (or pass --batch-id to stream it): %w", err)
	}
	return f, nil
}

// rowSource is a reader of the input's rows that also reports what it ignored.
type rowSource interface {
	enqueue.RowSource
	Warnings() []string
}

func newRowSource(in *batchInput, defaults tasks.Resend) (rowSource, error) {
	if in.format == "jsonl" {
		return enqueue.NewJSONLReader(in, defaults), nil
	}
	src, err := enqueue.NewCSVReader(in, defaults)
	var he *enqueue.HeaderError
	if errors.As(err, &he) {
		return nil, usageErr(fmt.Errorf("%s: %w", in.name, err))
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", in.name, err)
	}
	return src, nil
}

// runBatch is `resendq enqueue --file`.
func runBatch(ctx context.Context, a *app, rf *redisFlags, b *batchFlags, defaults tasks.Resend, eopts enqueue.Options, asJSON bool) error {
	in, err := openInput(a, b)
	if err != nil {
		return err
	}
	defer in.close()
	src, err := newRowSource(in, defaults)
	if err != nil {
		return err
	}
	var e *enqueue.Enqueuer
	if !b.dryRun {
		rdb, err := rf.connect(ctx, 0)
		if err != nil {
			var ee *exitError
			if errors.As(err, &ee) {
				return err
			}
			return usageErr(fmt.Errorf("%w; nothing was enqueued", err)) // exit 2: nothing was started
		}
		defer rdb.Close()
		if err := checkWaitClient(eopts.WaitReplicas, rdb); err != nil {
			return err
		}
		e = enqueue.New(rdb, eopts)
	}
	rej, err := openRejects(a, b, in)
	if err != nil {
		return err
	}
	prog := newProgress(a, in, b.noProgress)
	rej.before = prog.clear
	prog.start(in, e == nil, rf.url, b.batchID == "")
	warned := prog.warn(src.Warnings(), 0)

	opts := enqueue.BatchOptions{
		BatchID: in.batchID, Concurrency: b.concurrency,
		OnReject: rej.write, OnProgress: prog.update, ProgressInterval: prog.interval,
	}
	var sum enqueue.Summary
	var runErr error
	if e == nil {
		sum, runErr = enqueue.CheckBatch(ctx, src, opts)
	} else {
		sum, runErr = e.EnqueueBatch(ctx, src, opts)
	}
	prog.finish()
	prog.warn(src.Warnings(), warned)
	rejErr := rej.close()

	var busy *enqueue.BatchBusyError
	if errors.As(runErr, &busy) {
		return usageErr(fmt.Errorf("%w; nothing was enqueued", runErr))
	}
	var re *enqueue.ReplicasError
	report := batchReport{Summary: sum, Input: in.name, RejectsFile: rej.shownPath(), replicasShort: errors.As(runErr, &re)}
	failure := errors.Join(runErr, rejErr)
	if sum.Interrupted {
		failure = rejErr // the summary says it; ctx's error adds nothing
	}
	if failure != nil {
		report.Error = failure.Error()
	}
	if err := report.print(a.stdout, asJSON); err != nil {
		return err
	}
	switch {
	case sum.Interrupted:
		return &exitError{code: exitInterrupted, err: failure}
	case report.replicasShort:
		return replicasExit(failure)
	case failure != nil:
		return &exitError{code: 1, err: failure}
	case sum.Rejected > 0:
		return &exitError{code: 1}
	}
	return nil
}

// batchReport is the summary of a batch run as printed.
type batchReport struct {
	enqueue.Summary
	// Input is the file read, or "standard input".
	Input string `json:"input"`
	// RejectsFile is where rejected rows were written, when there were some.
	RejectsFile string `json:"rejects_file,omitempty"`
	// Error is why the run stopped early, if it did.
	Error string `json:"error,omitempty"`

	replicasShort bool // every row settled, but too few replicas acknowledged them
}

func (r batchReport) print(w io.Writer, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(r)
	}
	s := r.Summary
	var b strings.Builder
	if s.DryRun {
		fmt.Fprintf(&b, "dry run of batch %s: read %s rows: %s valid, %s rejected", s.BatchID, num(s.Read), num(s.Valid), num(s.Rejected))
	} else {
		fmt.Fprintf(&b, "batch %s: read %s rows: %s enqueued, %s already queued, %s rejected",
			s.BatchID, num(s.Read), num(s.Enqueued), num(s.AlreadyQueued), num(s.Rejected))
		if s.Failed > 0 {
			fmt.Fprintf(&b, ", %s failed", num(s.Failed))
		}
	}
	if r.RejectsFile != "" {
		fmt.Fprintf(&b, " (see %s)", r.RejectsFile)
	}
	fmt.Fprintf(&b, " in %s (%s rows/s)\n", roundDur(s.Elapsed), num(int64(s.RowsPerSecond)))
	switch {
	case s.DryRun:
		b.WriteString("nothing was written to Redis\n")
	case s.Interrupted:
		fmt.Fprintf(&b, "interrupted after line %s; every row up to it is settled. Run the same command again to resume: rows already enqueued are skipped\n", num(s.LastLine))
	case r.replicasShort:
		b.WriteString("every row is settled on the Redis master, but fewer replicas than asked for have them yet. Run the same command again once they are back: rows already enqueued are skipped\n")
	case r.Error != "":
		fmt.Fprintf(&b, "stopped after line %s. Run the same command again to resume: rows already enqueued are skipped\n", num(s.LastLine))
	default:
		fmt.Fprintf(&b, "follow the sends: resendq outcomes list --batch-id %s\n", s.BatchID)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// num writes n with thousands separators: 1234567 → "1,234,567".
func num(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// batchCmdHelp is the part of `resendq enqueue --help` about batches.
const batchCmdHelp = `
With --file, every row of a CSV file (a header row naming username and
any of project_id, login_url, payload) or of a JSON Lines file (objects
with the same keys) is enqueued on the bulk queue, which workers serve
after new signups. --project-id, --login-url and --payload fill empty
cells. Bad rows are written, with their line number and the reason, to
the rejects file and the rest goes on.

A batch has an ID (--batch-id; by default derived from the file's
content). Running the same batch again, after a crash, Ctrl-C or by
mistake, enqueues only the rows not already enqueued or sent: nobody gets
a second email. Rows repeating a project and username collapse to one.

Exit status: 0 every row enqueued or already queued; 1 some rows rejected
(the others are enqueued) or the run failed part way; 2 bad usage or
input, Redis unreachable, or the batch already running elsewhere: nothing
was enqueued; 3 every row enqueued, but fewer replicas than
--redis-wait-replicas acknowledged them (run it again once they are back);
130 interrupted (run the same command again to resume).`

// batchExample is the usage example of batches.
const batchExample = `  resendq enqueue --redis-url redis://redis:6379 --file users.csv --project-id 6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11
  resendq enqueue --file users.jsonl --dry-run
  some-export | resendq enqueue --file - --format jsonl --batch-id outage-2024-05-01`
