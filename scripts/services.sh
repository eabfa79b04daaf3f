#!/usr/bin/env bash
# services.sh installs, starts and stops the real components healstore's tests
# run against: an S3 server (versitygw), etcd, FUSE, fio, sqlite3, git, rsync.
#
#   scripts/services.sh install   apt packages + versitygw (skips what is present)
#   scripts/services.sh start     versitygw and etcd on 127.0.0.1, free ports
#   scripts/services.sh env       prints the export line for the running services
#   scripts/services.sh status    exit 0 when both services run, 3 otherwise
#   scripts/services.sh logs      tails the service logs
#   scripts/services.sh stop      stops what start started, removes its state
#
# Use from a shell:  scripts/services.sh start && eval "$(scripts/services.sh env)"
#
# Sources are Debian's apt archive and the Go module proxy only. Every server
# binds 127.0.0.1. The S3 credentials are random per start: throwaway test
# values, never real secrets, and never printed except by `env`.
#
# Settings (environment):
#   HEALSTORE_TOOLS          where versitygw is installed (default ~/.cache/healstore-tools)
#   HEALSTORE_SERVICES_DIR   state: data dirs, logs, pid files, env file (default /tmp/healstore-services)
#   HEALSTORE_START_TIMEOUT  seconds to wait for each service to become ready (default 60)
#   HEALSTORE_MIN_FREE_MB    free disk needed to build versitygw (default 2048)
set -Eeuo pipefail

readonly VERSITYGW_PKG=github.com/versity/versitygw/cmd/versitygw
readonly VERSITYGW_VERSION=v1.8.0
# Debian package -> a binary that proves it is installed.
readonly APT_PACKAGES=(
	etcd-server:/usr/bin/etcd
	etcd-client:etcdctl
	fuse3:fusermount3
	fio:fio
	sqlite3:sqlite3
	git:git
	rsync:rsync
	jq:jq
)
readonly ATTEMPTS=3

export HOME=${HOME:-/root}
TOOLS=${HEALSTORE_TOOLS:-$HOME/.cache/healstore-tools}
STATE=${HEALSTORE_SERVICES_DIR:-/tmp/healstore-services}
START_TIMEOUT=${HEALSTORE_START_TIMEOUT:-60}
MIN_FREE_MB=${HEALSTORE_MIN_FREE_MB:-2048}
MARKER=.healstore-services
STEP="setup"

# go lives in /usr/local/go/bin on this machine kind; a non-login shell may lack it.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
export PATH="$TOOLS/bin:$PATH"

log() { printf '[services %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# STARTING is set while cmd_start runs: a failure then stops what was already
# started, so no server outlives a failed start (logs stay for inspection).
STARTING=0

die() {
	printf '[services] FAILED at step "%s": %s\n' "$STEP" "$*" >&2
	cleanup_failed_start
	exit 1
}

on_err() {
	local rc=$? line=$1 cmd=$2
	# A failing command substitution is handled by its caller; stay quiet there.
	if ((BASH_SUBSHELL > 0)); then exit "$rc"; fi
	printf '[services] FAILED at step "%s" (line %s, exit %s): %s\n' "$STEP" "$line" "$rc" "$cmd" >&2
	cleanup_failed_start
	exit "$rc"
}

cleanup_failed_start() {
	if ((STARTING)) && ((BASH_SUBSHELL == 0)); then
		STARTING=0
		stop_all || true
		printf '[services] stopped what this start had started; logs stay in %s until "stop"\n' "$STATE" >&2
	fi
}
trap 'on_err "$LINENO" "$BASH_COMMAND"' ERR

# tail_log prints the end of a log file so a failure explains itself.
tail_log() {
	local f=$1 n=${2:-40}
	[[ -s $f ]] || { printf '  (log %s is empty)\n' "$f" >&2; return 0; }
	printf -- '----- last %d lines of %s -----\n' "$n" "$f" >&2
	tail -n "$n" "$f" >&2 || true
	printf -- '----- end of %s -----\n' "$f" >&2
}

# retry LABEL LOGFILE CMD... runs CMD up to $ATTEMPTS times, its output going to
# LOGFILE; after the last failure it prints the log's tail and returns non-zero.
retry() {
	local label=$1 logf=$2 i rc=0
	shift 2
	for ((i = 1; i <= ATTEMPTS; i++)); do
		rc=0
		"$@" >"$logf" 2>&1 || rc=$?
		if ((rc == 0)); then
			return 0
		fi
		log "$label: attempt $i/$ATTEMPTS failed (exit $rc)"
		if ((i < ATTEMPTS)); then
			tail -n 5 "$logf" >&2 || true
			sleep $((i * 5))
		fi
	done
	tail_log "$logf"
	return "$rc"
}

free_mb() { df -Pm "$1" 2>/dev/null | awk 'NR==2 {print $4}'; }

# existing_parent prints the nearest existing ancestor of a path, for df.
existing_parent() {
	local p=$1
	while [[ ! -e $p && $p != / ]]; do p=$(dirname "$p"); done
	printf '%s\n' "$p"
}

# report_disk NEED_MB prints free space where installs and tests write, and
# fails when any of them has less than NEED_MB.
report_disk() {
	local need_mb=$1 p dir mb short=() paths=("$TOOLS" "${TMPDIR:-/tmp}")
	if command -v go >/dev/null 2>&1; then
		paths+=("$(go env GOMODCACHE)" "$(go env GOCACHE)")
	fi
	log "free disk space (need ${need_mb} MB):"
	for p in "${paths[@]}"; do
		dir=$(existing_parent "$p")
		mb=$(free_mb "$dir")
		log "  $(printf '%-45s %8s MB free' "$p" "${mb:-?}")"
		if [[ -n $mb ]] && ((mb < need_mb)); then short+=("$p (${mb} MB)"); fi
	done
	if ((${#short[@]} > 0)); then
		die "not enough free disk: need ${need_mb} MB, have: ${short[*]}"
	fi
}

# ---------------------------------------------------------------- install

have_bin() {
	if [[ $1 == /* ]]; then [[ -x $1 ]]; else command -v "$1" >/dev/null 2>&1; fi
}

# versitygw_ok: the binary runs, and its build info names the pinned module
# version (`go install` leaves `versitygw --version` saying only "git").
versitygw_ok() {
	local bin=$TOOLS/bin/versitygw info
	[[ -x $bin ]] || return 1
	"$bin" --version >/dev/null 2>&1 || return 1
	command -v go >/dev/null 2>&1 || return 0
	info=$(go version -m "$bin" 2>/dev/null) || return 1
	[[ $info =~ mod[[:space:]]+github.com/versity/versitygw[[:space:]]+${VERSITYGW_VERSION}[[:space:]] ]]
}

install_apt() {
	STEP="apt packages"
	local missing=() entry pkg bin
	for entry in "${APT_PACKAGES[@]}"; do
		pkg=${entry%%:*} bin=${entry#*:}
		have_bin "$bin" || missing+=("$pkg")
	done
	if ((${#missing[@]} == 0)); then
		log "apt packages: all present"
		return 0
	fi
	log "apt packages missing: ${missing[*]}"
	if [[ $(id -u) -ne 0 ]]; then
		die "not running as root, cannot install ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}"
	fi
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"

	# apt must never start etcd as a system service: tests start their own.
	local policy=/usr/sbin/policy-rc.d added_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
	fi

	local apt_opts=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 -o APT::Get::Assume-Yes=true)
	local rc=0 t0=$SECONDS
	STEP="apt-get update"
	retry "apt-get update" "$TOOLS/logs/apt-update.log" \
		env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update || rc=$?
	if ((rc == 0)); then
		STEP="apt-get install ${missing[*]}"
		retry "apt-get install" "$TOOLS/logs/apt-install.log" \
			env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y \
			--no-install-recommends "${missing[@]}" || rc=$?
	fi
	if ((added_policy)); then rm -f "$policy"; fi
	((rc == 0)) || die "apt-get failed (exit $rc); full log in $TOOLS/logs"
	log "apt-get install ${missing[*]}: done in $((SECONDS - t0)) s"

	STEP="apt packages"
	for entry in "${APT_PACKAGES[@]}"; do
		pkg=${entry%%:*} bin=${entry#*:}
		have_bin "$bin" || die "package $pkg installed but $bin is still missing"
	done
}

install_versitygw() {
	STEP="install versitygw $VERSITYGW_VERSION"
	if versitygw_ok; then
		log "versitygw $VERSITYGW_VERSION: present in $TOOLS/bin"
		return 0
	fi
	command -v go >/dev/null 2>&1 || die "go not found in PATH ($PATH); install Go 1.26 first"
	log "go: $(go version)"
	STEP="check disk space for versitygw build"
	report_disk "$MIN_FREE_MB"
	STEP="install versitygw $VERSITYGW_VERSION"
	log "building versitygw $VERSITYGW_VERSION from the Go module proxy (cold: about 3-4 min)"
	local t0=$SECONDS rc=0
	# GOFLAGS from the caller (e.g. -mod=vendor) must not leak into a module@version install.
	retry "go install versitygw" "$TOOLS/logs/go-install-versitygw.log" \
		env GOBIN="$TOOLS/bin" GOFLAGS= \
		go install "$VERSITYGW_PKG@$VERSITYGW_VERSION" || rc=$?
	((rc == 0)) || die "go install $VERSITYGW_PKG@$VERSITYGW_VERSION failed (exit $rc)"
	versitygw_ok || die "versitygw installed but it does not run, or 'go version -m' does not show $VERSITYGW_VERSION"
	log "versitygw built in $((SECONDS - t0)) s"
}

# verify_tools runs every tool once: a binary that is present but cannot run
# fails here, naming the tool, instead of deep inside a test.
verify_tools() {
	STEP="verify tools"
	local name out
	local -A cmds=(
		[versitygw]="$TOOLS/bin/versitygw --version"
		[etcd]="/usr/bin/etcd --version"
		[etcdctl]="etcdctl version"
		[fusermount3]="fusermount3 --version"
		[fio]="fio --version"
		[sqlite3]="sqlite3 --version"
		[git]="git --version"
		[rsync]="rsync --version"
	)
	for name in versitygw etcd etcdctl fusermount3 fio sqlite3 git rsync; do
		if ! out=$(${cmds[$name]} 2>&1); then
			printf '%s\n' "$out" | tail -n 10 >&2
			die "$name does not run: '${cmds[$name]}' failed"
		fi
		if [[ $name == versitygw ]]; then
			# its --version says "git" after go install; the build info has the version
			out="$VERSITYGW_VERSION (from go version -m; --version runs)"
		fi
		log "  $(printf '%-12s %s' "$name" "${out%%$'\n'*}")"
	done
	if [[ $(id -u) -ne 0 ]]; then
		log "NOTE: not running as root (uid $(id -u)); FUSE mounts in tests need root and /dev/fuse"
	fi
	if [[ ! -c /dev/fuse ]]; then
		log "NOTE: /dev/fuse is missing; FUSE tests cannot mount"
	fi
}

cmd_install() {
	mkdir -p "$TOOLS/bin" "$TOOLS/logs"
	STEP="lock $TOOLS"
	# Two installs at once (several shells, parallel CI steps) would race apt
	# and go install into the same GOBIN.
	exec 9>"$TOOLS/.install.lock"
	flock -w 900 9 || die "another install holds $TOOLS/.install.lock for over 15 min"
	local t0=$SECONDS
	STEP="check disk space"
	report_disk 512
	install_apt
	install_versitygw
	verify_tools
	STEP="install"
	log "install: done in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- start/stop

# used_ports lists every local TCP port in any state, from /proc (no ss/netstat needed).
used_ports() {
	local f sl local_addr rest
	for f in /proc/net/tcp /proc/net/tcp6; do
		[[ -r $f ]] || continue
		while read -r sl local_addr rest; do
			[[ $sl == sl ]] && continue
			printf '%d\n' "$((16#${local_addr##*:}))"
		done <"$f"
	done
}

# pick_ports N prints N distinct ports that nothing uses now, below the kernel's
# ephemeral range so outgoing connections do not take them meanwhile.
pick_ports() {
	local n=$1 p tries=0 picked=()
	local -A used=()
	while read -r p; do used[$p]=1; done < <(used_ports)
	while ((${#picked[@]} < n)); do
		((tries++ < 1000)) || die "no free TCP port found"
		p=$((20000 + RANDOM % 12000))
		[[ -n ${used[$p]:-} ]] && continue
		used[$p]=1
		picked+=("$p")
	done
	printf '%s\n' "${picked[@]}"
}

# http_get PORT PATH prints the raw HTTP response from 127.0.0.1:PORT, using
# bash's /dev/tcp so a fresh machine needs no curl.
http_get() {
	timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n" "$2" "$1" >&3
		cat <&3' _ "$1" "$2" 2>/dev/null
}

# rand_hex N prints 2N random hex digits; od reads exactly N bytes, so no
# pipe is cut short (a `tr </dev/urandom | head` dies of SIGPIPE under pipefail).
rand_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# ours PID: the process is alive and was started with our state dir in its
# command line, so a recycled pid is never killed.
ours() {
	alive "$1" && [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$STATE/"
}

pid_of() { [[ -r $STATE/$1.pid ]] && cat "$STATE/$1.pid" || true; }

running() { ours "$(pid_of versitygw)" && ours "$(pid_of etcd)" && [[ -s $STATE/env ]]; }

# wait_ready NAME PID LOG CHECK... polls CHECK until it succeeds, the process
# dies, or the timeout passes. Returns 2 when the port was taken by someone else.
wait_ready() {
	local name=$1 pid=$2 logf=$3 deadline=$((SECONDS + START_TIMEOUT))
	shift 3
	while ((SECONDS < deadline)); do
		if ! alive "$pid"; then
			wait "$pid" 2>/dev/null || true
			if grep -qiE 'address already in use|bind:' "$logf" 2>/dev/null; then
				log "$name: port taken meanwhile, retrying on other ports"
				return 2
			fi
			tail_log "$logf"
			die "$name exited during start-up"
		fi
		if "$@"; then return 0; fi
		sleep 0.1
	done
	tail_log "$logf"
	die "$name not ready after ${START_TIMEOUT}s"
}

# Any HTTP answer will do: an unsigned GET / gets 403 from a working gateway.
s3_ready() {
	local r
	r=$(http_get "$1" /) || return 1
	[[ $r == "HTTP/1."[01]" "* ]]
}

etcd_ready() {
	local r
	r=$(http_get "$1" /health) || return 1
	[[ $r == *'"health":"true"'* ]]
}

start_versitygw() {
	STEP="start versitygw"
	local bin=$TOOLS/bin/versitygw port rc
	[[ -x $bin ]] || die "$bin missing; run: scripts/services.sh install"
	mkdir -p "$STATE/s3"
	for _ in 1 2 3; do
		port=$(pick_ports 1)
		# Credentials go through the environment, not argv, so ps does not show them.
		ROOT_ACCESS_KEY=$S3_ACCESS ROOT_SECRET_KEY=$S3_SECRET \
			"$bin" --port "127.0.0.1:$port" --quiet posix "$STATE/s3" \
			>"$STATE/versitygw.log" 2>&1 </dev/null &
		echo $! >"$STATE/versitygw.pid"
		rc=0
		wait_ready versitygw "$!" "$STATE/versitygw.log" s3_ready "$port" || rc=$?
		if ((rc == 0)); then
			S3_PORT=$port
			log "versitygw ready on 127.0.0.1:$port (pid $(pid_of versitygw))"
			return 0
		fi
	done
	die "versitygw could not bind a free port in 3 attempts"
}

start_etcd() {
	STEP="start etcd"
	local bin=/usr/bin/etcd client peer metrics rc ports
	[[ -x $bin ]] || die "$bin missing; run: scripts/services.sh install"
	local unset_etcd=() v
	for v in $(compgen -e); do
		if [[ $v == ETCD_* ]]; then unset_etcd+=(-u "$v"); fi
	done
	for _ in 1 2 3; do
		rm -rf "$STATE/etcd"
		mapfile -t ports < <(pick_ports 3)
		client=${ports[0]} peer=${ports[1]} metrics=${ports[2]}
		# ETCD_* variables in the caller's environment would clash with these flags.
		env "${unset_etcd[@]}" "$bin" --name healstore-test --data-dir "$STATE/etcd" \
			--listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
			--listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
			--initial-cluster "healstore-test=http://127.0.0.1:$peer" \
			--listen-metrics-urls "http://127.0.0.1:$metrics" \
			--unsafe-no-fsync --max-txn-ops 10000 --max-request-bytes 33554432 \
			--logger zap --log-level warn \
			>"$STATE/etcd.log" 2>&1 </dev/null &
		echo $! >"$STATE/etcd.pid"
		rc=0
		wait_ready etcd "$!" "$STATE/etcd.log" etcd_ready "$client" || rc=$?
		if ((rc == 0)); then
			ETCD_PORT=$client
			break
		fi
	done
	((rc == 0)) || die "etcd could not bind free ports in 3 attempts"

	STEP="etcd smoke test"
	local ep=http://127.0.0.1:$ETCD_PORT got
	ETCDCTL_API=3 etcdctl --endpoints "$ep" --command-timeout 10s put healstore-smoke ok >/dev/null ||
		die "etcdctl put against $ep failed"
	got=$(ETCDCTL_API=3 etcdctl --endpoints "$ep" --command-timeout 10s get --print-value-only healstore-smoke) ||
		die "etcdctl get against $ep failed"
	[[ $got == ok ]] || die "etcdctl get returned '$got', want 'ok'"
	ETCDCTL_API=3 etcdctl --endpoints "$ep" --command-timeout 10s del healstore-smoke >/dev/null ||
		die "etcdctl del against $ep failed"
	log "etcd ready on 127.0.0.1:$ETCD_PORT (pid $(pid_of etcd))"
}

cmd_start() {
	if running; then
		log "already running (state in $STATE); use 'stop' first to restart"
		return 0
	fi
	STEP="prepare $STATE"
	if [[ -e $STATE/$MARKER ]]; then
		# A previous run died without stopping: clear what it left behind.
		cmd_stop
	elif [[ -e $STATE && -n $(ls -A "$STATE") ]]; then
		die "$STATE is not empty and was not made by services.sh; set HEALSTORE_SERVICES_DIR to a new or empty dir"
	fi
	mkdir -p "$STATE"
	: >"$STATE/$MARKER"
	STARTING=1
	local t0=$SECONDS
	S3_ACCESS=hstest$(rand_hex 8)
	S3_SECRET=$(rand_hex 20)
	start_versitygw
	start_etcd

	STEP="write env file"
	local tmp=$STATE/env.tmp
	(
		umask 077
		cat >"$tmp" <<EOF
export HEALSTORE_S3_ENDPOINT=127.0.0.1:$S3_PORT HEALSTORE_S3_ACCESS_KEY=$S3_ACCESS HEALSTORE_S3_SECRET_KEY=$S3_SECRET HEALSTORE_S3_REGION=us-east-1 HEALSTORE_ETCD_ENDPOINTS=http://127.0.0.1:$ETCD_PORT HEALSTORE_VERSITYGW=$TOOLS/bin/versitygw
EOF
	)
	mv "$tmp" "$STATE/env"
	STARTING=0
	STEP="start"
	log "services up in $((SECONDS - t0)) s; env: scripts/services.sh env (file $STATE/env)"
}

# stop_all sends SIGTERM to every server we started, then waits for all of
# them at once (versitygw takes about 2 s to shut down gracefully).
stop_all() {
	local name pid i pids=() names=()
	for name in versitygw etcd; do
		pid=$(pid_of "$name")
		if [[ -n $pid ]] && ours "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid") names+=("$name")
		fi
		rm -f "$STATE/$name.pid"
	done
	for i in "${!pids[@]}"; do
		pid=${pids[$i]} name=${names[$i]}
		local deadline=$((SECONDS + 10))
		while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
		if alive "$pid"; then
			log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		log "$name stopped (pid $pid)"
	done
}

cmd_stop() {
	STEP="stop"
	[[ -d $STATE ]] || return 0
	if [[ -z $(ls -A "$STATE") ]]; then
		rmdir "$STATE"
		return 0
	fi
	if [[ ! -e $STATE/$MARKER ]]; then
		die "$STATE exists but was not made by services.sh (no $MARKER); not touching it"
	fi
	stop_all
	rm -rf "$STATE"
}

cmd_env() {
	STEP="env"
	[[ -s $STATE/env ]] || die "no services running in $STATE; run: scripts/services.sh start"
	cat "$STATE/env"
}

cmd_status() {
	STEP="status"
	local name pid
	for name in versitygw etcd; do
		pid=$(pid_of "$name")
		if ours "$pid"; then log "$name: running (pid $pid)"; else log "$name: not running"; fi
	done
	running || return 3
}

cmd_logs() {
	local name
	for name in versitygw etcd; do
		[[ -e $STATE/$name.log ]] && tail_log "$STATE/$name.log" "${1:-40}"
	done
	return 0
}

usage() {
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

main() {
	case ${1:-} in
	install) cmd_install ;;
	start) cmd_start ;;
	env) cmd_env ;;
	status) cmd_status || return $? ;;
	logs) cmd_logs "${2:-40}" ;;
	stop) cmd_stop ;;
	*) usage ;;
	esac
}

# One line, so bash has read all of it before running: editing this file
# while it runs (bash reads scripts lazily) cannot change what runs after main.
main "$@"; exit $?
