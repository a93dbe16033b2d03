package worker

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/sirupsen/logrus"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// asynqLogger passes asynq's messages to logrus, less the ones that repeat
// what the handler already logged once per final outcome.
type asynqLogger struct{ *logrus.Logger }

var _ asynq.Logger = asynqLogger{}

func (l asynqLogger) Warn(args ...interface{}) {
	if strings.HasPrefix(fmt.Sprint(args...), "Retry exhausted for task") {
		return // the handler logged the dead letter with its reason
	}
	l.Logger.Warn(args...)
}

// logOutcome writes the log line of a final outcome: what
// h.log(outcomeFields(rec)).Log(level, msg) writes. When the
// logger is a *logrus.Logger with a plain logrus.TextFormatter that writes
// to a file or a pipe, without hooks or caller reports (the worker's
// default), the line is formatted here, byte for byte as logrus formats it,
// but without the four maps logrus builds per line; otherwise logrus writes
// it.
func (h *Handler) logOutcome(level logrus.Level, msg string, rec outcome.Record) {
	if l, ok := h.logger().(*logrus.Logger); ok && l.IsLevelEnabled(level) {
		if f, out := h.plainText(l, level); out != nil {
			buf := linePool.Get().(*[]byte)
			line := appendOutcomeLine((*buf)[:0], f, h.clock().Now(), level, msg, rec)
			if _, err := out.Write(line); err != nil {
				fmt.Fprintf(os.Stderr, "Failed to write to log, %v\n", err) // as logrus reports it
			}
			*buf = line
			linePool.Put(buf)
			return
		}
	}
	h.log(outcomeFields(rec)).Log(level, msg)
}

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// plainText returns l's formatter and output when logOutcome can format for
// it: a TextFormatter whose options change nothing in an uncolored line
// but the timestamp layout, writing to a file or pipe (a terminal may get
// colors), with no hook for level and no caller report. Otherwise out is
// nil.
func (h *Handler) plainText(l *logrus.Logger, level logrus.Level) (f *logrus.TextFormatter, out *os.File) {
	f, ok := l.Formatter.(*logrus.TextFormatter)
	if !ok || l.ReportCaller || len(l.Hooks[level]) > 0 ||
		f.ForceColors || f.EnvironmentOverrideColors || f.DisableTimestamp || f.DisableSorting ||
		f.SortingFunc != nil || f.DisableQuote || f.ForceQuote || f.QuoteEmptyFields || len(f.FieldMap) > 0 {
		return nil, nil
	}
	out, ok = l.Out.(*os.File)
	if !ok || (!f.DisableColors && !h.notTerminal(out)) {
		return nil, nil
	}
	return f, out
}

// notTerminal reports whether f is not a character device (so surely not a
// terminal), remembering the answer for the last file asked about.
func (h *Handler) notTerminal(f *os.File) bool {
	if k := h.logOut.Load(); k != nil && k.f == f {
		return k.plain
	}
	fi, err := f.Stat()
	plain := err == nil && fi.Mode()&os.ModeCharDevice == 0
	h.logOut.Store(&logOut{f: f, plain: plain})
	return plain
}

// logOut is what notTerminal found out about a log output.
type logOut struct {
	f     *os.File
	plain bool
}

// appendOutcomeLine appends the line logrus's TextFormatter f writes,
// uncolored, for an entry at t with the fields of outcomeFields(rec): the
// time, level and message, then the fields sorted by key, each value
// quoted as logrus quotes it.
func appendOutcomeLine(b []byte, f *logrus.TextFormatter, t time.Time, level logrus.Level, msg string, rec outcome.Record) []byte {
	layout := f.TimestampFormat
	if layout == "" {
		layout = time.RFC3339 // logrus's default
	}
	var ts [64]byte
	b = appendKV(b, "time", string(t.AppendFormat(ts[:0], layout)))
	b = appendKV(b, "level", level.String())
	if msg != "" {
		b = appendKV(b, "msg", msg)
	}
	b = append(b, " attempts="...)
	b = strconv.AppendInt(b, int64(rec.Attempts), 10)
	if rec.BatchID != "" {
		b = appendKV(b, "batch_id", rec.BatchID)
	}
	if rec.ErrorCode != "" {
		b = appendKV(b, "code", rec.ErrorCode)
	}
	if rec.HTTPStatus != 0 {
		b = append(b, " http_status="...)
		b = strconv.AppendInt(b, int64(rec.HTTPStatus), 10)
	}
	b = appendKV(b, "project_id", rec.ProjectID)
	b = appendKV(b, "queue", rec.Queue)
	if rec.Reason != "" {
		b = appendKV(b, "reason", string(rec.Reason))
	}
	b = appendKV(b, "status", string(rec.Status))
	b = appendKV(b, "task_id", rec.TaskID)
	b = appendKV(b, "username", tasks.MaskEmail(rec.Username))
	return append(b, '\n')
}

// appendKV appends key=value as logrus's TextFormatter does: a space before
// every pair but the first, the value quoted when it has a byte outside
// letters, digits and "-._/@^+".
func appendKV(b []byte, key, value string) []byte {
	if len(b) > 0 {
		b = append(b, ' ')
	}
	b = append(b, key...)
	b = append(b, '=')
	for i := 0; i < len(value); i++ {
		if !safeLogByte(value[i]) {
			return strconv.AppendQuote(b, value)
		}
	}
	return append(b, value...)
}

func safeLogByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '/' || c == '@' || c == '^' || c == '+'
}
