package main

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redisurl"
)

// Progress refresh intervals: the bar on a terminal, a plain line otherwise.
const (
	barInterval   = 200 * time.Millisecond
	plainInterval = 5 * time.Second
)

// rejectsWriter writes rejected rows: as CSV (line,reason,raw) to a file,
// or as one line each to stderr without the raw row, which may hold an
// email address and stderr often ends up in logs.
type rejectsWriter struct {
	path   string // "" writes to stderr
	f      *os.File
	bw     *bufio.Writer
	cw     *csv.Writer
	stderr io.Writer
	n      int64
	before func() // called before a line goes to stderr (clears the progress bar)
}

// openRejects creates the rejects file (an earlier run's is replaced): by
// default <file>.rejects.csv, stderr for standard input.
func openRejects(a *app, b *batchFlags, in *batchInput) (*rejectsWriter, error) {
	path := b.rejects
	if path == "" && in.path != "" {
		path = in.path + ".rejects.csv"
	}
	if path == "-" {
		path = ""
	}
	w := &rejectsWriter{path: path, stderr: a.stderr, before: func() {}}
	if path == "" {
		return w, nil
	}
	if in.path != "" {
		if st, errA := os.Stat(in.path); errA == nil {
			if r, errR := os.Stat(path); errR == nil && os.SameFile(st, r) {
				return nil, usageErr(fmt.Errorf("--rejects %s is the input file", path))
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, usageErr(fmt.Errorf("cannot write the rejects file (choose another with --rejects): %w", err))
	}
	w.f, w.bw = f, bufio.NewWriterSize(f, 64<<10)
	w.cw = csv.NewWriter(w.bw)
	_ = w.cw.Write([]string{"line", "reason", "raw"})
	return w, nil
}

// write records one rejected row; errors surface in close.
func (w *rejectsWriter) write(row enqueue.Row) {
	w.n++
	if w.cw != nil {
		_ = w.cw.Write([]string{strconv.Itoa(row.Line), row.Err.Error(), row.Raw})
		return
	}
	w.before()
	fmt.Fprintf(w.stderr, "resendq: rejected line %d: %v\n", row.Line, row.Err)
}

// close flushes the rejects file, and removes it when no row was rejected
// so that a file left over from an earlier run cannot mislead.
func (w *rejectsWriter) close() error {
	if w.f == nil {
		return nil
	}
	w.cw.Flush()
	err := errors.Join(w.cw.Error(), w.f.Close())
	if w.n == 0 {
		return os.Remove(w.path)
	}
	if err != nil {
		return fmt.Errorf("write the rejects file %s: %w", w.path, err)
	}
	return nil
}

// shownPath is where the summary says the rejected rows are; "" if none.
func (w *rejectsWriter) shownPath() string {
	switch {
	case w.n == 0:
		return ""
	case w.path == "":
		return "stderr"
	}
	return w.path
}

// progress shows how a batch goes on stderr: a bar with rows, rate and ETA
// on a terminal, a plain line every few seconds otherwise.
type progress struct {
	w        io.Writer
	in       *batchInput
	off      bool
	interval time.Duration
	began    time.Time

	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func newProgress(a *app, in *batchInput, off bool) *progress {
	p := &progress{w: a.stderr, in: in, off: off, interval: plainInterval, began: time.Now()}
	if !off && isTerminal(a.stderr) {
		p.interval = barInterval
		p.bar = progressbar.NewOptions64(in.size,
			progressbar.OptionSetWriter(a.stderr),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowBytes(false),
			progressbar.OptionShowTotalBytes(false),
			progressbar.OptionSetElapsedTime(in.size < 0),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetDescription("starting"),
		)
	}
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// start says what is about to happen.
func (p *progress) start(in *batchInput, dryRun bool, redisURL string, derivedID bool) {
	size := ""
	if in.size >= 0 {
		size = fmt.Sprintf(", %s", bytesText(in.size))
	}
	id := in.batchID
	if derivedID {
		id += " (from the content; pass --batch-id " + in.batchID + " to resume an edited copy)"
	}
	if dryRun {
		fmt.Fprintf(p.w, "resendq: dry run of batch %s: checking %s (%s%s); nothing is written to Redis\n", id, in.name, in.format, size)
		return
	}
	fmt.Fprintf(p.w, "resendq: batch %s: enqueuing %s (%s%s) on queue bulk at %s\n", id, in.name, in.format, size, redisurl.Redact(redisURL))
}

// update is the batch's OnProgress.
func (p *progress) update(s enqueue.Summary) {
	if p.off {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("%s rows, %s/s", num(s.Read), num(int64(s.RowsPerSecond))))
		if p.in.size > 0 {
			_ = p.bar.Set64(p.in.read.Load())
		} else {
			_ = p.bar.Add(0)
		}
		return
	}
	fmt.Fprintf(p.w, "resendq: progress: %s\n", p.line(s))
}

// line is the plain progress line.
func (p *progress) line(s enqueue.Summary) string {
	where := ""
	if read := p.in.read.Load(); p.in.size > 0 && read > 0 {
		f := min(float64(read)/float64(p.in.size), 1)
		eta := time.Duration(float64(time.Since(p.began)) * (1 - f) / f)
		where = fmt.Sprintf(" (%.0f%%, ETA %s)", 100*f, roundDur(eta))
	}
	return fmt.Sprintf("%s rows read%s: %s enqueued, %s already queued, %s rejected; %s rows/s",
		num(s.Read), where, num(s.Enqueued), num(s.AlreadyQueued), num(s.Rejected), num(int64(s.RowsPerSecond)))
}

// clear removes the bar so that a line can be written to stderr.
func (p *progress) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
	}
}

// finish removes the bar for good.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Exit()
		_ = p.bar.Clear()
		p.bar = nil
	}
}

// warn prints the reader's warnings from the n-th on and returns how many there are.
func (p *progress) warn(warnings []string, n int) int {
	for _, w := range warnings[n:] {
		p.clear()
		fmt.Fprintln(p.w, "resendq: warning:", w)
	}
	return len(warnings)
}

// roundDur rounds d for people: 1.83s, 12.4s, 3m12s.
func roundDur(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < 10*time.Second:
		return d.Round(10 * time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// bytesText writes a size for people: 812 B, 3.4 MB.
func bytesText(n int64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1000*1000:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	case n < 1000*1000*1000:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.2f GB", float64(n)/1e9)
}
