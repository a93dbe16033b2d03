#!/usr/bin/env bash
# Worker benchmarks: the figures of docs/BENCHMARKS.md.
#
#   scripts/bench.sh [driver flags]          `make bench`: 5 runs of every figure (about 50 minutes);
#                                            writes docs/BENCHMARKS.md (its generated section only)
#                                            and docs/profiles/
#   scripts/bench.sh -quick [driver flags]   `make bench-quick`: one small run of every figure (seconds);
#                                            prints the table and writes nothing; CI runs it to check
#                                            that the suite works, never its figures
#
# It builds bin/resendq (the worker under test, as `go build` makes it) and
# bin/naive (bench/naive: the baseline, a bare asynq server with a handler
# that POSTs the same request and writes a result), then runs the driver
# (bench/), which starts its own throw-away redis-server and a local 204 Login
# API, and drains pre-filled queues with each worker in turn. Driver flags:
# `go run ./bench -h` (e.g. -runs 7, -only zero,c400, -vs OTHER_BUILD,
# -neighbour 0.5 to run beside a process keeping half a core busy).
#
# Needs go and redis-server (RESENDQ_REDIS_SERVER or PATH; installed here if
# missing, as `make test` does).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-deps.sh redis

go build -o bin/resendq ./cmd/resendq
go build -o bin/naive ./bench/naive
go build -o bin/bench ./bench

if [ "${1:-}" = "-quick" ]; then
	exec bin/bench "$@"
fi
exec bin/bench -runs 5 -doc docs/BENCHMARKS.md -profiles docs/profiles "$@"
