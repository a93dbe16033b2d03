package worker

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/resendq/resendq/outcome"
)

// outcomeLineRecords are records whose log lines exercise every field and
// every quoting rule of logrus's TextFormatter.
func outcomeLineRecords() []outcome.Record {
	sent := outcome.Record{
		TaskID: "0b0e5a8e-6c0d-4b8e-9d2f-1b6e0c1d2e3f", ProjectID: testProject, Username: "john@example.com",
		Queue: "signup", Status: outcome.StatusSent, HTTPStatus: 204, Attempts: 1,
	}
	dead := sent
	dead.Status, dead.Reason, dead.ErrorCode, dead.HTTPStatus, dead.Attempts = outcome.StatusDeadLetter, outcome.ReasonRejected, "003-002", 404, 3
	dead.BatchID = "outage-2026-11-25"
	odd := dead
	odd.TaskID, odd.ProjectID, odd.Username, odd.Queue = `a "b" c`, "", "Jöhn Doe\t<x>", "bulk=1"
	odd.ErrorCode, odd.BatchID, odd.Reason = `weird code\n`, "b:1", outcome.ReasonExhausted
	invalid := outcome.Record{TaskID: "t", Status: outcome.StatusDeadLetter, Reason: outcome.ReasonInvalid}
	return []outcome.Record{sent, dead, odd, invalid, {}}
}

func TestOutcomeLineIsLogrusLine(t *testing.T) {
	t.Parallel()
	zone := time.FixedZone("X", 2*3600+30*60)
	formatters := []*logrus.TextFormatter{
		{FullTimestamp: true, TimestampFormat: time.RFC3339}, // what cmd/resendq sets up
		{},
		{DisableColors: true, TimestampFormat: time.RFC3339Nano},
	}
	for fi, f := range formatters {
		now := time.Now()
		for _, at := range []time.Time{now.UTC(), now.Truncate(time.Second).In(zone)} {
			for _, level := range []logrus.Level{logrus.InfoLevel, logrus.WarnLevel} {
				for _, msg := range []string{"confirmation email sent", "resend dead-lettered", ""} {
					for ri, rec := range outcomeLineRecords() {
						var want bytes.Buffer
						l := logrus.New()
						l.SetOutput(&want)
						l.SetFormatter(f)
						l.WithTime(at).WithFields(outcomeFields(rec)).Log(level, msg)
						got := string(appendOutcomeLine(nil, f, at, level, msg, rec))
						if got != want.String() {
							t.Errorf("formatter %d, record %d, %s %q:\n got %q\nwant %q", fi, ri, level, msg, got, want.String())
						}
					}
				}
			}
		}
	}
}

func TestLogOutcomeWritesOneLogrusLine(t *testing.T) {
	t.Parallel()
	file, err := os.Create(filepath.Join(t.TempDir(), "worker.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	l := logrus.New()
	l.SetOutput(file)
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339})
	h := &Handler{Log: l}
	if f, out := h.plainText(l, logrus.InfoLevel); f == nil || out != file {
		t.Fatal("a plain text logger writing to a file is not formatted by the handler")
	}
	recs := outcomeLineRecords()
	for _, rec := range recs {
		h.logOutcome(logrus.InfoLevel, "confirmation email sent", rec)
		l.WithFields(outcomeFields(rec)).Info("confirmation email sent")
	}
	h.logOutcome(logrus.DebugLevel, "not shown", recs[0]) // below the logger's level
	data, err := os.ReadFile(file.Name())
	if err != nil {
		t.Fatal(err)
	}
	stamp := regexp.MustCompile(`^time="[^"]*" `)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2*len(recs) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), 2*len(recs), data)
	}
	for i := 0; i < len(lines); i += 2 {
		ours, theirs := stamp.ReplaceAllString(lines[i], ""), stamp.ReplaceAllString(lines[i+1], "")
		if ours != theirs || ours == lines[i] {
			t.Errorf("line %d:\n got %q\nwant %q", i, lines[i], lines[i+1])
		}
	}
}

func TestLogOutcomeLeavesHooksAndOtherFormattersToLogrus(t *testing.T) {
	t.Parallel()
	hooked, hook := test.NewNullLogger()
	b := &Handler{Log: hooked}
	b.logOutcome(logrus.WarnLevel, "resend dead-lettered", outcomeLineRecords()[1])
	if e := hook.LastEntry(); e == nil || e.Message != "resend dead-lettered" || e.Data["code"] != "003-002" {
		t.Fatalf("the hook got %+v", e)
	}
	var buf bytes.Buffer
	jsonLog := logrus.New()
	jsonLog.SetOutput(&buf)
	jsonLog.SetFormatter(&logrus.JSONFormatter{})
	(&Handler{Log: jsonLog}).logOutcome(logrus.InfoLevel, "confirmation email sent", outcomeLineRecords()[0])
	if !strings.Contains(buf.String(), `"msg":"confirmation email sent"`) {
		t.Fatalf("JSON line = %q", buf.String())
	}
	for name, f := range map[string]*logrus.TextFormatter{
		"colors": {ForceColors: true}, "quotes": {ForceQuote: true}, "unsorted": {DisableSorting: true},
		"field map": {FieldMap: logrus.FieldMap{logrus.FieldKeyMsg: "message"}},
	} {
		l := logrus.New()
		l.SetOutput(os.Stderr)
		l.SetFormatter(f)
		if f, _ := (&Handler{}).plainText(l, logrus.InfoLevel); f != nil {
			t.Errorf("%s: formatted by the handler", name)
		}
	}
}
