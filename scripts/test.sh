#!/usr/bin/env bash
# The body of `make test`: system deps, formatting, vet, staticcheck, race
# tests, fuzz smoke runs, compose check, and a small run of the benchmark suite.
#
# Extra `go test` flags for the main module: TESTFLAGS='-run TestX -v' make test
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
die() {
	printf 'test: %s\n' "$*" >&2
	exit 1
}

command -v go >/dev/null 2>&1 || die "go is not on PATH"

step "system dependencies (redis-server, redis-sentinel, chromium, C compiler for -race)"
scripts/ensure-deps.sh redis sentinel chromium cc

RESENDQ_REDIS_SERVER=$(command -v redis-server) || die "redis-server not found after ensure-deps"
RESENDQ_REDIS_SENTINEL=$(command -v redis-sentinel) || die "redis-sentinel not found after ensure-deps"
RESENDQ_CHROMIUM=$(command -v chromium) || die "chromium not found after ensure-deps"
export RESENDQ_REDIS_SERVER RESENDQ_REDIS_SENTINEL RESENDQ_CHROMIUM
echo "$(go version)"
echo "tests use redis-server:   $RESENDQ_REDIS_SERVER ($("$RESENDQ_REDIS_SERVER" --version 2>/dev/null | head -n1))"
echo "tests use redis-sentinel: $RESENDQ_REDIS_SENTINEL"
echo "tests use chromium:       $RESENDQ_CHROMIUM ($("$RESENDQ_CHROMIUM" --version 2>/dev/null | head -n1))"

step "gofmt"
# Every tracked-or-not Go file outside hidden dirs, vendor/ and testdata/.
mapfile -t gofiles < <(find . \( -name '.?*' -o -name vendor -o -name testdata -o -name node_modules \) -prune -o -type f -name '*.go' -print | sort)
if [ "${#gofiles[@]}" -gt 0 ]; then
	unformatted=$(gofmt -l "${gofiles[@]}")
	if [ -n "$unformatted" ]; then
		printf 'these files are not gofmt-ed (run: gofmt -w <file>):\n%s\n' "$unformatted" >&2
		exit 1
	fi
fi
echo "gofmt: ok (${#gofiles[@]} files)"

step "go vet ./..."
go vet ./...

step "staticcheck (pinned in scripts/tools.sh)"
scripts/tools.sh
bin/tools/staticcheck ./...
(cd deploy/composecheck && ../../bin/tools/staticcheck ./...)
echo "staticcheck: ok"

step "go test -race -count=1 ${TESTFLAGS:+$TESTFLAGS }./..."
read -r -a testflags <<<"${TESTFLAGS:-}"
go test -race -count=1 ${testflags[@]+"${testflags[@]}"} ./...

step "fuzz targets, 3s each (make fuzz runs them longer)"
scripts/fuzz.sh 3s

step "docker-compose.yml check (deploy/composecheck)"
(
	cd deploy/composecheck
	go vet ./...
	go test -count=1 ./...
	go run . ../../docker-compose.yml
)

step "benchmark suite, small run (make bench-quick: checks that it runs, not its figures)"
make --no-print-directory bench-quick

step "all checks passed"
