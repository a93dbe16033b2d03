package enqueue_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// batchSetup is what a batch test works with: a fresh Redis, an Enqueuer
// on it and an inspector of its queues.
type batchSetup struct {
	srv *redistest.Server
	rdb *redis.Client
	e   *enqueue.Enqueuer
	ins *asynq.Inspector
}

func setupBatch(t *testing.T) batchSetup {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ins := asynq.NewInspectorFromRedisClient(rdb)
	return batchSetup{srv: srv, rdb: rdb, e: enqueue.New(rdb, enqueue.Options{}), ins: ins}
}

// queued is the number of tasks in the bulk queue, whatever their state.
func (s batchSetup) queued(t *testing.T) int {
	t.Helper()
	info, err := s.ins.GetQueueInfo(tasks.QueueBulk)
	if err != nil {
		t.Fatalf("GetQueueInfo: %v", err)
	}
	return info.Size
}

// usersCSV is a CSV of n distinct users of testProject, user0 to user{n-1}.
func usersCSV(n int) string {
	var b strings.Builder
	b.WriteString("project_id,username\n")
	for i := range n {
		fmt.Fprintf(&b, "%s,user%d@example.com\n", testProject, i)
	}
	return b.String()
}

func csvSource(t *testing.T, s string) *enqueue.CSVReader {
	t.Helper()
	r, err := enqueue.NewCSVReader(strings.NewReader(s), tasks.Resend{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checkAddsUp fails t unless the summary's counts account for every row.
func checkAddsUp(t *testing.T, s enqueue.Summary) {
	t.Helper()
	if s.Read != s.Valid+s.Rejected || (!s.DryRun && s.Valid != s.Enqueued+s.AlreadyQueued+s.Failed) {
		t.Errorf("counts do not add up: %+v", s)
	}
}

func TestBatchRerunEnqueuesNothing(t *testing.T) {
	t.Parallel()
	s := setupBatch(t)
	ctx := context.Background()
	const n = 3000
	first, err := s.e.EnqueueBatch(ctx, csvSource(t, usersCSV(n)), enqueue.BatchOptions{BatchID: "rerun"})
	if err != nil {
		t.Fatal(err)
	}
	checkAddsUp(t, first)
	if first.Read != n || first.Enqueued != n || first.AlreadyQueued != 0 || first.Queue != tasks.QueueBulk {
		t.Fatalf("first run: %+v", first)
	}
	second, err := s.e.EnqueueBatch(ctx, csvSource(t, usersCSV(n)), enqueue.BatchOptions{BatchID: "rerun"})
	if err != nil {
		t.Fatal(err)
	}
	checkAddsUp(t, second)
	if second.Enqueued != 0 || second.AlreadyQueued != n {
		t.Errorf("second run: %+v, want all %d already queued", second, n)
	}
	if got := s.queued(t); got != n {
		t.Errorf("bulk queue holds %d tasks, want %d", got, n)
	}
	// The tasks carry the batch ID, for the outcome records.
	info, err := s.ins.GetTaskInfo(tasks.QueueBulk, enqueue.BatchTaskID("rerun", tasks.Resend{ProjectID: testProject, Username: "user7@example.com"}))
	if err != nil {
		t.Fatal(err)
	}
	r, err := tasks.Decode(info.Payload)
	if err != nil || r.BatchID != "rerun" || r.Username != "user7@example.com" || r.EnqueuedAt.IsZero() {
		t.Errorf("task payload %+v, %v", r, err)
	}
}

func TestBatchDuplicateRowsCollapse(t *testing.T) {
	t.Parallel()
	s := setupBatch(t)
	var b strings.Builder
	b.WriteString("project_id,username,login_url\n")
	const users, copies = 500, 4
	for c := range copies {
		for i := range users {
			// Spaces around a username and another login_url still name the same user.
			fmt.Fprintf(&b, "%s, user%d@example.com ,https://cb%d.example/\n", testProject, i, c)
		}
	}
	// The same user twice in a row lands in flight together.
	fmt.Fprintf(&b, "%s,twin@example.com,\n%s,twin@example.com,\n", testProject, testProject)
	sum, err := s.e.EnqueueBatch(context.Background(), csvSource(t, b.String()), enqueue.BatchOptions{BatchID: "dups"})
	if err != nil {
		t.Fatal(err)
	}
	checkAddsUp(t, sum)
	if sum.Enqueued != users+1 || sum.AlreadyQueued != users*(copies-1)+1 {
		t.Errorf("summary %+v, want %d enqueued and %d already queued", sum, users+1, users*(copies-1)+1)
	}
	if got := s.queued(t); got != users+1 {
		t.Errorf("bulk queue holds %d tasks, want %d", got, users+1)
	}
}

// cancelAfter is a row source that cancels a context once it has handed
// out n rows.
type cancelAfter struct {
	src    enqueue.RowSource
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Next() (enqueue.Row, error) {
	row, err := c.src.Next()
	if c.n--; c.n == 0 {
		c.cancel()
	}
	return row, err
}

func TestBatchInterruptedThenResumed(t *testing.T) {
	t.Parallel()
	s := setupBatch(t)
	const n, stopAt = 5000, 1234
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, err := s.e.EnqueueBatch(ctx, &cancelAfter{src: csvSource(t, usersCSV(n)), n: stopAt, cancel: cancel}, enqueue.BatchOptions{BatchID: "resume"})
	if !errors.Is(err, context.Canceled) || !first.Interrupted {
		t.Fatalf("interrupted run: err %v, summary %+v; want context.Canceled and Interrupted", err, first)
	}
	checkAddsUp(t, first)
	if first.Read != stopAt || first.Enqueued != stopAt || first.LastLine != stopAt+1 {
		t.Errorf("interrupted run: %+v, want %d rows read and enqueued up to line %d", first, stopAt, stopAt+1)
	}
	second, err := s.e.EnqueueBatch(context.Background(), csvSource(t, usersCSV(n)), enqueue.BatchOptions{BatchID: "resume"})
	if err != nil {
		t.Fatal(err)
	}
	checkAddsUp(t, second)
	if second.Enqueued != n-stopAt || second.AlreadyQueued != stopAt {
		t.Errorf("resumed run: %+v, want %d enqueued and %d already queued", second, n-stopAt, stopAt)
	}
	if got := s.queued(t); got != n {
		t.Errorf("bulk queue holds %d tasks, want %d", got, n)
	}
}

// TestBatchSkipsFinishedTasks covers a rerun after the worker finished part
// of the batch: asynq deleted those tasks, and only their outcome records
// say that the email went out.
func TestBatchSkipsFinishedTasks(t *testing.T) {
	t.Parallel()
	s := setupBatch(t)
	ctx := context.Background()
	const n, finished = 400, 150
	if _, err := s.e.EnqueueBatch(ctx, csvSource(t, usersCSV(n)), enqueue.BatchOptions{BatchID: "done"}); err != nil {
		t.Fatal(err)
	}
	store := outcome.NewStore(s.rdb, outcome.Options{})
	for i := range finished {
		r := tasks.Resend{ProjectID: testProject, Username: fmt.Sprintf("user%d@example.com", i)}
		id := enqueue.BatchTaskID("done", r)
		// What the worker does: the outcome first, then asynq deletes the task.
		if _, err := store.Finish(ctx, outcome.Record{TaskID: id, ProjectID: r.ProjectID, Username: r.Username,
			Queue: tasks.QueueBulk, BatchID: "done", Status: outcome.StatusSent, Attempts: 1}); err != nil {
			t.Fatal(err)
		}
		if err := s.ins.DeleteTask(tasks.QueueBulk, id); err != nil {
			t.Fatal(err)
		}
	}
	again, err := s.e.EnqueueBatch(ctx, csvSource(t, usersCSV(n)), enqueue.BatchOptions{BatchID: "done"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Enqueued != 0 || again.AlreadyQueued != n {
		t.Errorf("rerun: %+v, want all %d already queued", again, n)
	}
	if got := s.queued(t); got != n-finished {
		t.Errorf("bulk queue holds %d tasks, want %d (finished ones must not come back)", got, n-finished)
	}
	// Another batch within the dedup window sends no one a second email;
	// without the window (or after it) it is another resend for everyone.
	other, err := s.e.EnqueueBatch(ctx, csvSource(t, usersCSV(n)), enqueue.BatchOptions{BatchID: "next-outage"})
	if err != nil || other.Enqueued != 0 || other.AlreadyQueued != n {
		t.Errorf("another batch within the window: %+v, %v; want none enqueued", other, err)
	}
	other, err = enqueue.New(s.rdb, enqueue.Options{DedupWindow: -1}).EnqueueBatch(ctx, csvSource(t, usersCSV(n)), enqueue.BatchOptions{BatchID: "next-outage"})
	if err != nil || other.Enqueued != n {
		t.Errorf("another batch without a window: %+v, %v; want %d enqueued", other, err, n)
	}
}

// blockingSource hands out one row, then blocks until released.
type blockingSource struct {
	started chan struct{}
	release chan struct{}
	calls   int
}

func (b *blockingSource) Next() (enqueue.Row, error) {
	b.calls++
	if b.calls == 1 {
		close(b.started)
		<-b.release
	}
	return enqueue.Row{}, io.EOF
}

func TestBatchOneRunAtATime(t *testing.T) {
	t.Parallel()
	s := setupBatch(t)
	ctx := context.Background()
	src := &blockingSource{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := s.e.EnqueueBatch(ctx, src, enqueue.BatchOptions{BatchID: "busy"})
		done <- err
	}()
	<-src.started
	_, err := s.e.EnqueueBatch(ctx, csvSource(t, usersCSV(3)), enqueue.BatchOptions{BatchID: "busy"})
	var busy *enqueue.BatchBusyError
	if !errors.As(err, &busy) || !strings.Contains(busy.Holder, "pid") || busy.RetryIn <= 0 {
		t.Errorf("second run of a running batch: %v, want a *BatchBusyError naming the holder", err)
	}
	noWindow := enqueue.New(s.rdb, enqueue.Options{DedupWindow: -1}) // the same users, batch after batch
	if sum, err := noWindow.EnqueueBatch(ctx, csvSource(t, usersCSV(3)), enqueue.BatchOptions{BatchID: "other"}); err != nil || sum.Enqueued != 3 {
		t.Errorf("another batch meanwhile: %+v, %v", sum, err)
	}
	close(src.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sum, err := noWindow.EnqueueBatch(ctx, csvSource(t, usersCSV(3)), enqueue.BatchOptions{BatchID: "busy"}); err != nil || sum.Enqueued != 3 {
		t.Errorf("after the first run ended: %+v, %v", sum, err)
	}
}

func TestCheckBatchWritesNothing(t *testing.T) {
	t.Parallel()
	s := setupBatch(t)
	in := usersCSV(100) + "," + "\n" + testProject + ",\n" + "not-a-uuid,x\n"
	var rejected []int
	sum, err := enqueue.CheckBatch(context.Background(), csvSource(t, in), enqueue.BatchOptions{
		OnReject: func(r enqueue.Row) { rejected = append(rejected, r.Line) },
	})
	if err != nil {
		t.Fatal(err)
	}
	checkAddsUp(t, sum)
	if !sum.DryRun || sum.Read != 103 || sum.Valid != 100 || sum.Rejected != 3 || sum.Enqueued != 0 {
		t.Errorf("dry run: %+v", sum)
	}
	if fmt.Sprint(rejected) != "[102 103 104]" {
		t.Errorf("rejected lines %v, want [102 103 104]", rejected)
	}
	if n, err := s.rdb.DBSize(context.Background()).Result(); err != nil || n != 0 {
		t.Errorf("Redis holds %d keys after a dry run (%v), want 0", n, err)
	}
}

// stopRedisAfter is a row source that stops Redis once it has handed out n rows.
type stopRedisAfter struct {
	src enqueue.RowSource
	n   int
	srv *redistest.Server
}

func (s *stopRedisAfter) Next() (enqueue.Row, error) {
	if s.n == 0 {
		s.srv.Stop()
	}
	s.n--
	return s.src.Next()
}

func TestBatchStopsWhenRedisFails(t *testing.T) {
	t.Parallel()
	s := setupBatch(t)
	// Give up on a dead Redis at once rather than after go-redis' retries.
	rdb := redis.NewClient(&redis.Options{Addr: s.srv.Addr, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { rdb.Close() })
	s.e = enqueue.New(rdb, enqueue.Options{})
	const n = 20_000
	var progressCalls atomic.Int64
	sum, err := s.e.EnqueueBatch(context.Background(), &stopRedisAfter{src: csvSource(t, usersCSV(n)), n: 300, srv: s.srv},
		enqueue.BatchOptions{BatchID: "redis-gone", OnProgress: func(enqueue.Summary) { progressCalls.Add(1) }, ProgressInterval: 1})
	if err == nil {
		t.Fatalf("no error after Redis went away: %+v", sum)
	}
	checkAddsUp(t, sum)
	if sum.Failed == 0 || sum.Read >= n {
		t.Errorf("summary %+v: want failed rows and the run stopped early", sum)
	}
	if progressCalls.Load() == 0 {
		t.Error("OnProgress was never called")
	}
}
