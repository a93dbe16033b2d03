package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/tasks"
)

// enqueueFigure times `resendq enqueue --file` on a CSV file of rows users
// against a plain loop over asynq's Client.Enqueue on the same rows (the
// loop reads and validates the CSV too), runs times each.
func (e *env) enqueueFigure(ctx context.Context, runs, rows int, res *results) error {
	file := filepath.Join(e.tmp, "users.csv")
	if err := writeUsers(file, rows); err != nil {
		return err
	}
	for i := range runs {
		for _, side := range order(i) {
			if err := e.rdb.FlushAll(ctx).Err(); err != nil {
				return err
			}
			var took time.Duration
			var err error
			if side == ours {
				took, err = e.batchEnqueue(ctx, file, rows)
			} else {
				took, err = plainEnqueue(ctx, e.redis.addr, file)
			}
			if err != nil {
				if side == ours {
					// The batch command is not there (yet): report the row as pending.
					res.enqErr = err.Error()
					fmt.Println("resendq enqueue --file:", err)
					return nil
				}
				return err
			}
			if n, err := e.rdb.LLen(ctx, "asynq:{"+tasks.QueueBulk+"}:pending").Result(); err != nil || n != int64(rows) {
				return fmt.Errorf("%s enqueued %d of %d rows (%v)", side, n, rows, err)
			}
			rate := float64(rows) / took.Seconds()
			res.enqueue[side] = append(res.enqueue[side], rate)
			fmt.Printf("run %d %-8s %8.0f rows/s\n", i+1, side, rate)
		}
		fmt.Printf("run %d ratio    %8.2f\n", i+1, res.enqueue[ours][i]/res.enqueue[naive][i])
	}
	return nil
}

// batchEnqueue runs the resendq binary on file and checks its summary.
func (e *env) batchEnqueue(ctx context.Context, file string, rows int) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, e.ours, "enqueue", "--file", file, "--redis-url", e.redis.url, "--json", "--no-progress")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, bytes.TrimSpace(errOut.Bytes()))
	}
	var sum struct {
		Enqueued int `json:"enqueued"`
	}
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil || sum.Enqueued != rows {
		return 0, fmt.Errorf("summary %q: want %d rows enqueued (%v)", bytes.TrimSpace(out.Bytes()), rows, err)
	}
	return took, nil
}

// plainEnqueue is the baseline: read the CSV, validate each row and enqueue
// it with Client.Enqueue, one row after the other, on the bulk queue.
func plainEnqueue(ctx context.Context, addr, file string) (time.Duration, error) {
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: addr})
	defer client.Close()
	start := time.Now()
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReader(f))
	if _, err := r.Read(); err != nil { // header
		return 0, err
	}
	now := time.Now().UTC()
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		t, err := tasks.NewTask(tasks.Resend{ProjectID: rec[0], Username: rec[1], EnqueuedAt: now})
		if err != nil {
			return 0, err
		}
		if _, err := client.EnqueueContext(ctx, t, asynq.Queue(tasks.QueueBulk), asynq.MaxRetry(tasks.MaxRetry)); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func writeUsers(path string, rows int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "project_id,username")
	for i := range rows {
		fmt.Fprintf(w, "%s,user%d@example.com\n", benchProject, i)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
