#!/bin/sh
# Test stand-in for a user's provisioning program. It records how it was
# called into $HS_RECORD and behaves as $HS_MODE says.
set -eu
action="${1:-}"
printf '%s\n' "$@" > "$HS_RECORD/$action.args"
cat > "$HS_RECORD/$action.stdin"
printf '%s\n' "${HEALSTORE_ACTION:-}" > "$HS_RECORD/$action.env"

if [ "$action" = release ]; then
	if [ "${HS_MODE:-}" = release-fail ]; then
		echo "cannot release" >&2
		exit 4
	fi
	exit 0
fi

case "${HS_MODE:-ok}" in
ok)
	echo "creating namespace (diagnostics go to stderr)" >&2
	cat <<JSON
{"name":"hs-data-01","kind":"zdb","address":"[2a10:b600::1]:9900","namespace":"81-1-hs","node":"11","farm":"81","quota":10737418240,"secret":"s3cr3t-Pw-0001"}
JSON
	;;
noref)
	echo '{"name":"dir1","kind":"local","path":"/tmp/x","secret_ref":"given-ref","secret":"s3cr3t-Pw-0001"}'
	;;
fail)
	echo "tfcmd: deploying zdb on node 11" >&2
	echo '{"password": "s3cr3t-Pw-0001", "ips": []}' >&2
	echo "ran: tfcmd deploy zdb --password s3cr3t-Pw-0001 --node 11" >&2
	echo "error: node 11 has no free capacity" >&2
	exit 3
	;;
empty) ;;
text) echo "deployed ok, password s3cr3t-Pw-0001" ;;
syntax) echo '{"name":"a","kind":"zdb","secret":s3cr3t-Pw-0001}' ;;
two) echo '{"name":"a","kind":"local","path":"/x"} {"name":"b"}' ;;
password) echo '{"name":"a","kind":"zdb","address":"h:1","namespace":"n","password":"s3cr3t-Pw-0001"}' ;;
typo) echo '{"name":"a","kind":"zdb","adress":"h:1","namespace":"n"}' ;;
type) echo '{"name":"a","kind":"zdb","address":"h:1","namespace":"n","quota":"big"}' ;;
invalid) echo '{"name":"a","kind":"zdb","namespace":"n","secret":"s3cr3t-Pw-0001"}' ;;
truncated) printf '{"name":"a","kind":"zdb","secret":"s3cr3t-Pw' ;;
avoided) echo '{"name":"a","kind":"zdb","address":"h:1","namespace":"n","node":"12","secret":"s3cr3t-Pw-0001"}' ;;
small) echo '{"name":"a","kind":"zdb","address":"h:1","namespace":"n","quota":1000,"secret":"s3cr3t-Pw-0001"}' ;;
hang)
	# A child that inherits stdout must not keep healstore waiting.
	sleep 60 &
	sleep 60
	;;
*) echo "unknown HS_MODE" >&2; exit 99 ;;
esac
