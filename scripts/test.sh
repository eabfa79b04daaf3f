#!/usr/bin/env bash
# test.sh is `make test`: it installs and starts the real components, runs
# go vet and the whole test suite against them, and stops them again.
#
# Tests that need a component fail instead of skipping (HEALSTORE_REQUIRE_COMPONENTS=1),
# so a green run means everything was exercised. Every phase prints its
# elapsed time; a failure names the phase that failed.
#
# Settings (environment): those of scripts/services.sh, plus
#   HEALSTORE_TEST_TIMEOUT   go test -timeout (default 15m)
#   HEALSTORE_TEST_P         go test -p (default 2)
#   HEALSTORE_TEST_PKGS      packages to test (default ./...)
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SERVICES=$ROOT/scripts/services.sh
export HOME=${HOME:-/root}
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

PHASE="setup"
T_START=$SECONDS
STARTED=0
SUMMARY=()

say() { printf '[test.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# phase NAME CMD... runs one step, timing it; on failure it names the step and stops.
phase() {
	local name=$1 t0=$SECONDS rc=0
	shift
	PHASE=$name
	say "==> $name"
	"$@" || rc=$?
	if ((rc != 0)); then
		say "FAILED: step \"$name\" (exit $rc) after $((SECONDS - t0)) s"
		SUMMARY+=("$(printf '%-18s FAILED %4d s' "$name" "$((SECONDS - t0))")")
		exit "$rc"
	fi
	SUMMARY+=("$(printf '%-18s ok     %4d s' "$name" "$((SECONDS - t0))")")
	say "<== $name: ok in $((SECONDS - t0)) s"
}

finish() {
	local rc=$?
	trap - EXIT
	set +e
	if ((rc != 0)) && ((STARTED)); then
		say "service logs, for the failure above:"
		bash "$SERVICES" logs 30
	fi
	if ((STARTED)); then
		local t0=$SECONDS
		if bash "$SERVICES" stop; then
			SUMMARY+=("$(printf '%-18s ok     %4d s' "stop services" "$((SECONDS - t0))")")
		else
			say "WARNING: stopping services failed; state left in $HEALSTORE_SERVICES_DIR"
		fi
	fi
	say "summary:"
	local line
	for line in "${SUMMARY[@]}"; do printf '    %s\n' "$line" >&2; done
	if ((rc == 0)); then
		say "make test: PASS in $((SECONDS - T_START)) s"
	else
		say "make test: FAILED at step \"$PHASE\" (exit $rc) after $((SECONDS - T_START)) s"
	fi
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

machine_info() {
	say "machine: $(uname -srm), $(nproc) cpus, $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), uid $(id -u)"
	command -v go >/dev/null 2>&1 || { say "go not found in PATH ($PATH); install Go 1.26 first"; return 1; }
	say "go: $(go version); GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE)"
	say "disk: $(df -Pm "$ROOT" | awk 'NR==2 {print $4 " MB free on " $6}') (repo), $(df -Pm /tmp | awk 'NR==2 {print $4 " MB free on " $6}') (/tmp)"
	if [[ $(id -u) -ne 0 ]]; then
		say "NOTE: not running as root. FUSE tests mount through /dev/fuse and need root;"
		say "      with HEALSTORE_REQUIRE_COMPONENTS=1 they will fail. Run 'make test' as root."
	fi
	if [[ ! -c /dev/fuse ]]; then
		say "NOTE: /dev/fuse is missing; FUSE tests will fail."
	fi
}

start_services() {
	# Each run gets its own state dir unless the caller names one, so runs in
	# parallel shells never share or stop each other's servers.
	if [[ -z ${HEALSTORE_SERVICES_DIR:-} ]]; then
		HEALSTORE_SERVICES_DIR=$(mktemp -d /tmp/healstore-test-services.XXXXXX)
	fi
	export HEALSTORE_SERVICES_DIR
	if bash "$SERVICES" status 2>/dev/null; then
		say "reusing services already running in $HEALSTORE_SERVICES_DIR (they stay up)"
	else
		STARTED=1
		bash "$SERVICES" start || return 1
	fi
	local envline
	envline=$(bash "$SERVICES" env) || return 1
	eval "$envline"
	say "S3 at $HEALSTORE_S3_ENDPOINT, etcd at $HEALSTORE_ETCD_ENDPOINTS"
}

download_modules() {
	local i
	for i in 1 2 3; do
		go mod download && return 0
		say "go mod download: attempt $i/3 failed"
		sleep $((i * 5))
	done
	return 1
}

main() {
	phase "check machine" machine_info
	phase "install tools" bash "$SERVICES" install
	phase "start services" start_services
	export HEALSTORE_REQUIRE_COMPONENTS=1
	phase "download modules" download_modules
	phase "go vet" go vet ./...
	# shellcheck disable=SC2086 # HEALSTORE_TEST_PKGS is a list of patterns
	phase "go test" go test -p "${HEALSTORE_TEST_P:-2}" -count=1 -timeout "${HEALSTORE_TEST_TIMEOUT:-15m}" ${HEALSTORE_TEST_PKGS:-./...}
}

# One line, so bash has read all of it before running: editing this file
# during a run (bash reads scripts lazily) cannot change what runs after main.
main "$@"; exit $?
