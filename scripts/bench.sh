#!/usr/bin/env bash
# Benchmarks: `make bench` (full) and `make bench-quick` (scripts/bench.sh -quick).
# Placeholder until the benchmark harness exists.
set -euo pipefail
echo "no benchmarks yet"
exit 0
