#!/usr/bin/env bash
# fuzz.sh [FUZZTIME]: runs every fuzz target for FUZZTIME each (default 1m;
# `make test` runs it with 3s as a smoke run, `make fuzz` with the default).
# Seed corpora live in each package's testdata/fuzz/<target>/; an input
# that fails is written there too, and then fails `go test` until fixed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzztime=${1:-1m}
targets=(
	"./tasks FuzzDecode"             # task payload decoding
	"./loginapi FuzzErrorBody"       # the API's error body
	"./loginapi FuzzRetryAfter"      # Retry-After, both forms
	"./enqueue FuzzCSVRows"          # batch input: CSV rows
	"./enqueue FuzzJSONLRows"        # batch input: JSON Lines rows
)
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	printf 'fuzz %-24s %s for %s\n' "$name" "$pkg" "$fuzztime"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" | grep -v '^fuzz: elapsed' || {
		echo "fuzz: $name found a failing input (see $pkg/testdata/fuzz/$name)" >&2
		exit 1
	}
done
