#!/usr/bin/env bash
# check-layers.sh enforces healstore's dependency direction (DESIGN.md, "Layers"):
#
#   cmd, fuse, bench  ->  root package healstore  ->  healer  ->  encoder, metastore, backends
#
# For non-test imports of our own packages:
#   encoder/...    may import only encoder/...
#   metastore/...  may import only metastore/...
#   backends/...   may import only backends/...
#   healer/...     may import encoder, metastore, backends and healer/...
#   healstore      (root) may import encoder, metastore, backends, healer
#   fuse/..., bench/..., and any other top-level folder may import all of ours except cmd
#   cmd/...        may import all of ours; nothing outside cmd/ imports cmd/...
# Test files may import any of our packages except cmd/... (a test of a low layer
# may drive it through a higher one; production code may not).
#
# Exit 0 when every import follows the rules, 1 listing every violation otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

MOD=$(go list -m)

# top PATH prints the layer of a module-relative package path: its first element,
# or "root" for the module's root package.
top() {
	local rel=$1
	if [[ -z $rel ]]; then echo root; else echo "${rel%%/*}"; fi
}

# allowed FROM TO KIND: FROM and TO are module-relative paths, KIND is "import" or "test".
allowed() {
	local from=$1 to=$2 kind=$3 ft tt
	ft=$(top "$from") tt=$(top "$to")
	if [[ $tt == cmd ]]; then
		[[ $kind == import && $ft == cmd ]]
		return
	fi
	[[ $kind == test ]] && return 0
	case $ft in
	encoder | metastore | backends) [[ $tt == "$ft" ]] ;;
	healer) [[ $tt =~ ^(encoder|metastore|backends|healer)$ ]] ;;
	root) [[ $tt =~ ^(encoder|metastore|backends|healer)$ ]] ;;
	*) return 0 ;;
	esac
}

violations=0
checked=0
listing=$(go list -e -f '{{.ImportPath}}|{{join .Imports " "}}|{{join .TestImports " "}} {{join .XTestImports " "}}' ./...) || {
	echo "check-layers: FAILED: 'go list ./...' did not run" >&2
	exit 1
}
while IFS='|' read -r pkg imports testimports; do
	[[ -n $pkg ]] || continue
	from=${pkg#"$MOD"}
	from=${from#/}
	for kind in import test; do
		if [[ $kind == import ]]; then list=$imports; else list=$testimports; fi
		for imp in $list; do
			[[ $imp == "$MOD" || $imp == "$MOD"/* ]] || continue
			[[ $imp == "$pkg" ]] && continue # an external _test package importing its own package
			to=${imp#"$MOD"}
			to=${to#/}
			checked=$((checked + 1))
			if ! allowed "$from" "$to" "$kind"; then
				printf 'check-layers: %s%s imports %s\n' "${from:-healstore (root)}" \
					"$([[ $kind == test ]] && echo ' (test)' || true)" "${to:-healstore (root)}" >&2
				violations=$((violations + 1))
			fi
		done
	done
done <<<"$listing"

if ((violations > 0)); then
	echo "check-layers: FAILED: $violations import(s) break the layer rules (see the header of scripts/check-layers.sh)" >&2
	exit 1
fi
echo "check-layers: ok ($checked imports of our own packages checked)"
