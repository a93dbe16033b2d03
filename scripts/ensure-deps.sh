#!/usr/bin/env bash
# ensure-deps.sh [redis] [sentinel] [chromium] [cc]
#
# Installs the system tools the tests need, only when they are missing:
#   redis     -> redis-server            (Debian package: redis-server)
#   sentinel  -> redis-sentinel          (Debian package: redis-sentinel)
#   chromium  -> chromium, chromedriver  (Debian packages: chromium, chromium-driver)
#   cc        -> a C compiler for `go test -race` (Debian packages: gcc, libc6-dev)
#
# Does nothing (and prints nothing) when every requested binary is present.
# As root it runs `apt-get update` once and installs the missing packages;
# otherwise it prints what to install and exits 1.
#
# The Debian redis-server and redis-sentinel packages would normally start a
# system service (on 6379 and 26379). Our tests never use those ports and
# start their own throw-away servers, so services are kept from starting
# during the install (policy-rc.d) and a redis on 6379 or a sentinel on 26379
# that appeared because of the install is stopped.
set -euo pipefail

usage() {
	echo "usage: $0 [redis] [sentinel] [chromium] [cc]" >&2
	exit 2
}

[ "$#" -gt 0 ] || set -- redis

want_redis=0
want_sentinel=0
want_chromium=0
want_cc=0
for arg in "$@"; do
	case "$arg" in
	redis) want_redis=1 ;;
	sentinel) want_sentinel=1 ;;
	chromium) want_chromium=1 ;;
	cc) want_cc=1 ;;
	-h | --help) usage ;;
	*)
		echo "ensure-deps: unknown dependency '$arg'" >&2
		usage
		;;
	esac
done

have() { command -v "$1" >/dev/null 2>&1; }

packages=()
if [ "$want_redis" = 1 ] && ! have redis-server; then
	packages+=(redis-server)
fi
if [ "$want_sentinel" = 1 ] && ! have redis-sentinel; then
	packages+=(redis-sentinel)
fi
if [ "$want_chromium" = 1 ]; then
	have chromium || packages+=(chromium)
	have chromedriver || packages+=(chromium-driver)
fi
if [ "$want_cc" = 1 ] && ! have "$(go env CC 2>/dev/null || echo gcc)"; then
	packages+=(gcc libc6-dev)
fi

[ "${#packages[@]}" -gt 0 ] || exit 0

if [ "$(id -u)" != 0 ]; then
	echo "ensure-deps: missing packages: ${packages[*]}" >&2
	echo "ensure-deps: install them with:" >&2
	echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${packages[*]}" >&2
	exit 1
fi

if ! have apt-get; then
	echo "ensure-deps: missing packages: ${packages[*]} (and no apt-get to install them)" >&2
	exit 1
fi

# Is something listening on 127.0.0.1:$1? What listened before the install
# (on 6379 for redis-server, 26379 for redis-sentinel) is not ours to stop.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }
redis_was_running=0
if listening 6379; then redis_was_running=1; fi
sentinel_was_running=0
if listening 26379; then sentinel_was_running=1; fi

# Keep maintainer scripts from starting services during the install. An
# existing policy-rc.d (common in containers) is left untouched.
policy=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
	if [ "$created_policy" = 1 ]; then
		rm -f "$policy"
	fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# temporary: do not start services during ensure-deps installs\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
	created_policy=1
fi

echo "ensure-deps: installing ${packages[*]} ..."
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! apt-get update -qq >"$log" 2>&1; then
	cat "$log" >&2
	rm -f "$log"
	echo "ensure-deps: apt-get update failed" >&2
	exit 1
fi
if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >"$log" 2>&1; then
	cat "$log" >&2
	rm -f "$log"
	echo "ensure-deps: apt-get install ${packages[*]} failed" >&2
	exit 1
fi
rm -f "$log"
cleanup
created_policy=0

# Belt and braces: if the install still started a service, stop it.
# stop_service NAME PORT stops the service NAME listening on PORT.
stop_service() {
	echo "ensure-deps: stopping the $1 service the package started on $2"
	if have systemctl && [ -d /run/systemd/system ]; then
		systemctl stop "$1" >/dev/null 2>&1 || true
		systemctl disable "$1" >/dev/null 2>&1 || true
	fi
	if have service; then
		service "$1" stop >/dev/null 2>&1 || true
	fi
	if listening "$2" && have redis-cli; then
		redis-cli -p "$2" shutdown nosave >/dev/null 2>&1 || true
	fi
}
if [ "$redis_was_running" = 0 ] && listening 6379; then stop_service redis-server 6379; fi
if [ "$sentinel_was_running" = 0 ] && listening 26379; then stop_service redis-sentinel 26379; fi

missing=()
if [ "$want_redis" = 1 ] && ! have redis-server; then missing+=(redis-server); fi
if [ "$want_sentinel" = 1 ] && ! have redis-sentinel; then missing+=(redis-sentinel); fi
if [ "$want_chromium" = 1 ]; then
	have chromium || missing+=(chromium)
	have chromedriver || missing+=(chromedriver)
fi
if [ "$want_cc" = 1 ] && ! have "$(go env CC 2>/dev/null || echo gcc)"; then missing+=(gcc); fi
if [ "${#missing[@]}" -gt 0 ]; then
	echo "ensure-deps: still missing after install: ${missing[*]}" >&2
	exit 1
fi
echo "ensure-deps: installed ${packages[*]}"
