#!/usr/bin/env bash
# tools.sh: installs the Go tools the checks run, each at a pinned version,
# into bin/tools (from the Go module proxy), unless that version is there.
#
#   scripts/tools.sh          staticcheck (honnef.co/go/tools), used by `make test` and `make lint`
#
# A pinned version, not whatever is on PATH, so that every machine and CI
# report the same findings. Bump it here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STATICCHECK_VERSION=v0.8.2 # supports the go directive of go.mod (1.26)

dir=$PWD/bin/tools
if ! "$dir/staticcheck" -version 2>/dev/null | grep -qF "(${STATICCHECK_VERSION#v})"; then
	echo "tools: installing staticcheck $STATICCHECK_VERSION into bin/tools"
	GOBIN=$dir go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
