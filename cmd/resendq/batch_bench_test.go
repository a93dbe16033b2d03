package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
)

// BenchmarkBatchBinary builds the resendq binary and runs
// `resendq enqueue --file users.csv` on CSV files of 10 thousand and 1
// million rows against a fresh Redis, reporting the peak resident memory
// of the process (maxrss_MB, from the kernel's rusage, as /usr/bin/time -v
// shows it) and its throughput:
//
//	go test -run '^$' -bench BenchmarkBatchBinary -benchtime 1x ./cmd/resendq/
func BenchmarkBatchBinary(b *testing.B) {
	dir := b.TempDir()
	bin := filepath.Join(dir, "resendq")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	for _, rows := range []int{10_000, 1_000_000} {
		file := filepath.Join(dir, fmt.Sprintf("users-%d.csv", rows))
		writeUsersCSV(b, file, rows)
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			for range b.N {
				srv := redistest.Start(b)
				cmd := exec.Command(bin, "enqueue", "--redis-url", srv.URL, "--file", file, "--no-progress")
				start := time.Now()
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("resendq enqueue: %v\n%s", err, out)
				}
				took := time.Since(start)
				ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
				b.ReportMetric(float64(ru.Maxrss)/1024, "maxrss_MB")
				b.ReportMetric(float64(rows)/took.Seconds(), "rows/s")
				srv.Stop()
			}
		})
	}
}

func writeUsersCSV(b *testing.B, path string, rows int) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "project_id,username,login_url")
	for i := range rows {
		fmt.Fprintf(w, "%s,user%d@example.com,https://example.com/confirmed\n", testProject, i)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}
