package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/tasks"
)

// runWith runs a command line with ctx and stdin and no environment.
func runWith(ctx context.Context, stdin io.Reader, args ...string) result {
	var out, errb bytes.Buffer
	code := run(ctx, args, func(string) (string, bool) { return "", false }, stdin, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// bulkSize is the number of tasks in the bulk queue of srv.
func bulkSize(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(srv.Client(t)).GetQueueInfo(tasks.QueueBulk)
	if err != nil {
		t.Fatalf("GetQueueInfo: %v", err)
	}
	return info.Size
}

// decodeReport parses the --json summary.
func decodeReport(t *testing.T, r result) batchReport {
	t.Helper()
	var rep batchReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--json output %q: %v (stderr %q)", r.stdout, err, r.stderr)
	}
	return rep
}

// badRowKinds are the rejected rows of every kind in usersWithBadRows,
// by row index modulo 1000, with a word of the reason expected.
var badRowKinds = map[int]struct{ row, reason string }{
	1: {testProject + ",,,", "username is required"},
	2: {"not-a-uuid,u@example.com,,", "project_id \"not-a-uuid\" must be a UUID"},
	3: {testProject + ",u@example.com,ftp://example.com/cb,", "login_url"},
	4: {testProject + `,u"ser@example.com,,`, "malformed CSV: a quote inside field 2"},
	5: {testProject + ",u@example.com", "malformed CSV: 2 fields where the header has 4"},
	6: {testProject + `,"u@example.com,,`, "malformed CSV: a quoted field is not closed"},
	7: {testProject + "," + strings.Repeat("u", 300) + ",,", "username is 300 characters long"},
}

// usersWithBadRows writes a CSV of n rows (n a multiple of 1000): in every
// thousand, one row of each kind in badRowKinds, one repeat of an earlier
// user (row 8 repeats row 0) and 992 distinct valid users. It returns the
// rejected line numbers with the reason expected for each.
func usersWithBadRows(t *testing.T, path string, n int) map[int]string {
	t.Helper()
	var b strings.Builder
	b.WriteString("project_id,username,login_url,payload\n")
	rejected := map[int]string{}
	for i := range n {
		line := i + 2
		switch k := i % 1000; {
		case badRowKinds[k].row != "":
			b.WriteString(badRowKinds[k].row + "\n")
			rejected[line] = badRowKinds[k].reason
		case k == 8:
			fmt.Fprintf(&b, "%s,user%d@example.com,https://example.com/cb,\n", testProject, i-8)
		default:
			fmt.Fprintf(&b, "%s,user%d@example.com,https://example.com/cb,\"{\"\"n\"\":%d}\"\n", testProject, i, i)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return rejected
}

func TestBatch20kRowsWithBadRowsOfEveryKind(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "users.csv")
	const n = 20_000
	wantRejected := usersWithBadRows(t, file, n)
	const perThousand = 1000 - 7 - 1
	wantEnqueued := int64(n / 1000 * perThousand)

	r := runWith(context.Background(), nil, "enqueue", "--redis-url", srv.URL, "--file", file)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (rows rejected); stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	rejectsPath := file + ".rejects.csv"
	want := fmt.Sprintf("read 20,000 rows: %s enqueued, 20 already queued, 140 rejected (see %s)", num(wantEnqueued), rejectsPath)
	if !strings.Contains(r.stdout, want) {
		t.Errorf("summary %q, want it to contain %q", r.stdout, want)
	}
	if got := bulkSize(t, srv); got != int(wantEnqueued) {
		t.Errorf("bulk queue holds %d tasks, want %d", got, wantEnqueued)
	}

	// The rejects file lists every bad row once, with its line and reason.
	f, err := os.Open(rejectsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("rejects file is not CSV: %v", err)
	}
	if len(records) != len(wantRejected)+1 || !slices.Equal(records[0], []string{"line", "reason", "raw"}) {
		t.Fatalf("rejects file has %d records (header %q), want a header and %d rows", len(records), records[0], len(wantRejected))
	}
	for _, rec := range records[1:] {
		line, _ := strconv.Atoi(rec[0])
		reason, ok := wantRejected[line]
		if !ok || !strings.Contains(rec[1], reason) || rec[2] == "" {
			t.Errorf("rejects file row %q: want line %d rejected with a reason containing %q and the raw row", rec, line, reason)
		}
		delete(wantRejected, line)
	}
	if len(wantRejected) > 0 {
		t.Errorf("rows not in the rejects file: %v", wantRejected)
	}

	// The same file again: nothing new, nobody twice.
	again := runWith(context.Background(), nil, "enqueue", "--redis-url", srv.URL, "--file", file, "--json", "--no-progress")
	rep := decodeReport(t, again)
	if again.code != 1 || rep.Read != n || rep.Enqueued != 0 || rep.AlreadyQueued != wantEnqueued+20 || rep.Rejected != 140 {
		t.Errorf("rerun: exit %d, %+v; want 0 enqueued and %d already queued", again.code, rep, wantEnqueued+20)
	}
	if got := bulkSize(t, srv); got != int(wantEnqueued) {
		t.Errorf("after the rerun the bulk queue holds %d tasks, want %d", got, wantEnqueued)
	}
}

func TestBatchJSONLFromStdin(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var in strings.Builder
	for i := range 300 {
		fmt.Fprintf(&in, `{"project_id":%q,"username":"user%d@example.com"}`+"\n", testProject, i)
	}
	in.WriteString(`{"project_id":"` + testProject + `","username":"secret@example.com","login_url":"nope"}` + "\n")
	in.WriteString(`{"project_id":"` + testProject + `","username":"user1@example.com"}` + "\n") // a repeat
	args := []string{"enqueue", "--redis-url", srv.URL, "--file", "-", "--format", "jsonl", "--json"}

	r := runWith(context.Background(), strings.NewReader(in.String()), args...)
	rep := decodeReport(t, r)
	if r.code != 1 || rep.Read != 302 || rep.Enqueued != 300 || rep.AlreadyQueued != 1 || rep.Rejected != 1 || rep.RejectsFile != "stderr" {
		t.Errorf("exit %d, %+v; want 300 enqueued, 1 repeat, 1 rejected to stderr", r.code, rep)
	}
	if !strings.Contains(r.stderr, "rejected line 301: login_url") || strings.Contains(r.stderr, "secret@") {
		t.Errorf("stderr %q: want line 301 rejected, without the row's email address", r.stderr)
	}
	if !strings.HasPrefix(rep.BatchID, "file-") {
		t.Errorf("batch id %q, want one derived from the content", rep.BatchID)
	}
	// The same export piped again is the same batch.
	again := decodeReport(t, runWith(context.Background(), strings.NewReader(in.String()), args...))
	if again.BatchID != rep.BatchID || again.Enqueued != 0 || again.AlreadyQueued != 301 {
		t.Errorf("second run: %+v; want the same batch with nothing enqueued", again)
	}
	if got := bulkSize(t, srv); got != 300 {
		t.Errorf("bulk queue holds %d tasks, want 300", got)
	}
}

// cancelingReader cancels a context once more than n bytes were read.
type cancelingReader struct {
	r      io.Reader
	n      int64
	read   atomic.Int64
	cancel context.CancelFunc
}

func (c *cancelingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p[:min(len(p), 4096)])
	if c.read.Add(int64(n)) > c.n {
		c.cancel()
	}
	return n, err
}

func TestBatchInterruptedRunResumes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var in strings.Builder
	in.WriteString("username\n")
	const n = 20_000
	for i := range n {
		fmt.Fprintf(&in, "user%d@example.com\n", i)
	}
	args := []string{"enqueue", "--redis-url", srv.URL, "--file", "-", "--format", "csv",
		"--project-id", testProject, "--batch-id", "outage-1", "--json"}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := runWith(ctx, &cancelingReader{r: strings.NewReader(in.String()), n: 100_000, cancel: cancel}, args...)
	rep := decodeReport(t, first)
	if first.code != exitInterrupted || !rep.Interrupted || rep.Read == 0 || rep.Read >= n || rep.Enqueued != rep.Read {
		t.Fatalf("interrupted run: exit %d, %+v; want exit %d with part of the rows enqueued", first.code, rep, exitInterrupted)
	}
	if got := bulkSize(t, srv); got != int(rep.Enqueued) {
		t.Errorf("bulk queue holds %d tasks after the interrupted run, want %d", got, rep.Enqueued)
	}
	second := runWith(context.Background(), strings.NewReader(in.String()), args...)
	rep2 := decodeReport(t, second)
	if second.code != 0 || rep2.Enqueued != n-rep.Enqueued || rep2.AlreadyQueued != rep.Enqueued {
		t.Errorf("resumed run: exit %d, %+v; want the %d rows left enqueued", second.code, rep2, n-rep.Enqueued)
	}
	if got := bulkSize(t, srv); got != n {
		t.Errorf("bulk queue holds %d tasks, want %d", got, n)
	}
}

func TestBatchTextSummaryAndDryRun(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(file, []byte("username,project_id,created_at\nann@example.com,"+testProject+",x\nbob,"+testProject+",y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stale := file + ".rejects.csv"
	if err := os.WriteFile(stale, []byte("line,reason,raw\n9,old,old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dry := runWith(context.Background(), nil, "enqueue", "--redis-url", "redis://127.0.0.1:1/0", "--file", file, "--dry-run")
	if dry.code != 0 || !strings.Contains(dry.stdout, "read 2 rows: 2 valid, 0 rejected") || !strings.Contains(dry.stdout, "nothing was written to Redis") {
		t.Errorf("dry run without Redis: exit %d, stdout %q, stderr %q", dry.code, dry.stdout, dry.stderr)
	}
	if !strings.Contains(dry.stderr, "ignoring CSV columns not used by resendq: created_at") {
		t.Errorf("stderr %q: want a warning about the created_at column", dry.stderr)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a stale rejects file survived a run without rejects: %v", err)
	}
	r := runWith(context.Background(), nil, "enqueue", "--redis-url", srv.URL, "--file", file)
	id, _ := enqueue.ContentBatchID(strings.NewReader("username,project_id,created_at\nann@example.com," + testProject + ",x\nbob," + testProject + ",y\n"))
	if r.code != 0 || !strings.HasPrefix(r.stdout, "batch "+id+": read 2 rows: 2 enqueued, 0 already queued, 0 rejected in ") {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "pass --batch-id "+id) {
		t.Errorf("stderr %q: want the derived batch id and how to reuse it", r.stderr)
	}
}

func TestBatchUsageErrorsExit2(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "users.csv")
	noUser := filepath.Join(dir, "nouser.csv")
	odd := filepath.Join(dir, "users.txt")
	for path, body := range map[string]string{good: "username\nann\n", noUser: "email,project_id\nann," + testProject + "\n", odd: "username\n"} {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"enqueue", "--redis-url", srv.URL}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--file", "-"}, "cannot tell the format of standard input"},
		{[]string{"--file", odd, "--project-id", testProject}, "pass --format csv or --format jsonl"},
		{[]string{"--file", filepath.Join(dir, "missing.csv"), "--project-id", testProject}, "no such file"},
		{[]string{"--file", noUser}, "no username column (the header names: email, project_id)"},
		{[]string{"--file", good}, "no project_id column"},
		{[]string{"--file", good, "--project-id", "nope"}, "--project-id \"nope\" must be a UUID"},
		{[]string{"--file", good, "--project-id", testProject, "--username", "x"}, "--username cannot be used with --file"},
		{[]string{"--file", good, "--project-id", testProject, "--batch-id", "a b"}, "--batch-id"},
		{[]string{"--file", good, "--project-id", testProject, "--format", "xml"}, "--format \"xml\""},
		{[]string{"--file", good, "--project-id", testProject, "--rejects", good}, "is the input file"},
		{[]string{"--batch-id", "x", "--project-id", testProject, "--username", "x"}, "--batch-id needs --file"},
	} {
		r := runWith(context.Background(), strings.NewReader(""), append(slices.Clone(base), c.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) || r.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit 2 naming %q", c.args, r.code, r.stderr, r.stdout, c.want)
		}
	}
	if keys := srv.Client(t).Keys(context.Background(), "*").Val(); len(keys) != 0 {
		t.Errorf("usage errors wrote to Redis: %v", keys)
	}
	// Redis out of reach before starting: exit 2 too.
	r := runWith(context.Background(), nil, "enqueue", "--redis-url", "redis://127.0.0.1:1/0", "--file", good, "--project-id", testProject)
	if r.code != 2 || !strings.Contains(r.stderr, "cannot reach Redis") || !strings.Contains(r.stderr, "nothing was enqueued") {
		t.Errorf("unreachable Redis: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestBatchAlreadyRunningExit2(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	if err := srv.Client(t).Set(context.Background(), "resendq:batch-lock:busy", "host h, pid 1, started then", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r := runWith(context.Background(), strings.NewReader("username\nann\n"), "enqueue", "--redis-url", srv.URL,
		"--file", "-", "--format", "csv", "--project-id", testProject, "--batch-id", "busy")
	if r.code != 2 || !strings.Contains(r.stderr, "batch busy is being enqueued by another run (host h, pid 1") {
		t.Errorf("exit %d, stderr %q; want exit 2 naming the other run", r.code, r.stderr)
	}
	if keys := srv.Client(t).Keys(context.Background(), "asynq:*").Val(); len(keys) != 0 {
		t.Errorf("a busy batch wrote to asynq: %v", keys)
	}
}
