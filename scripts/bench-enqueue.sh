#!/usr/bin/env bash
# Batch enqueue benchmark: the figures of the "Batch enqueue" section of
# docs/BENCHMARKS.md.
#
#   scripts/bench-enqueue.sh [RUNS]      (default 5 runs)
#
# 1. BenchmarkEnqueue (enqueue/bench_test.go), RUNS times: a plain loop over
#    asynq's Client.Enqueue from one goroutine, then EnqueueBatch on the same
#    number of CSV rows, on the same throw-away redis-server in the same run.
#    Prints each run's pair and the medians, and the median of the ratios.
# 2. BenchmarkBatchBinary (cmd/resendq/batch_bench_test.go), once: the real
#    binary on 10k- and 1M-row CSV files; peak RSS from the kernel's rusage.
#
# Needs go and redis-server (RESENDQ_REDIS_SERVER or PATH; `make test`
# installs it). Takes about two minutes on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=${1:-5}
tasks=200000

echo "== machine"
echo "cpus:   $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
echo "go:     $(go version)"
echo "redis:  $("${RESENDQ_REDIS_SERVER:-redis-server}" --version)"
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the runs)"

echo
echo "== BenchmarkEnqueue: $tasks tasks per run, $runs runs (tasks/s)"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$runs"); do
	go test -run '^$' -bench BenchmarkEnqueue -benchtime "${tasks}x" -count 1 ./enqueue/ |
		awk -v run="$i" '/^BenchmarkEnqueue\// {
			split($1, name, "/"); sub(/-[0-9]+$/, "", name[2])
			for (f = 1; f <= NF; f++) if ($f == "tasks/s") v[name[2]] = $(f-1)
		}
		END { printf "run %d: plain-loop %.0f  batch %.0f  ratio %.2f\n", run, v["plain-loop"], v["batch"], v["batch"]/v["plain-loop"] }' |
		tee -a "$out"
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "median: plain-loop $(awk '{print $4}' "$out" | median)  batch $(awk '{print $6}' "$out" | median)  ratio $(awk '{print $8}' "$out" | median)"

echo
echo "== BenchmarkBatchBinary: resendq enqueue --file on 10k and 1M rows"
go test -run '^$' -bench BenchmarkBatchBinary -benchtime 1x ./cmd/resendq/ | grep -E '^Benchmark'
