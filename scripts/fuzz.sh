#!/usr/bin/env bash
# fuzz.sh runs every `func FuzzXxx(f *testing.F)` target in the tree for
# FUZZTIME each (default 10s). go test -fuzz takes one target per run, so each
# target is its own run. New crashers land in the package's testdata/fuzz/ as
# go test reports them; commit them so they stay regression tests.
#
#   FUZZTIME=1m scripts/fuzz.sh                run all targets for 1 minute each
#   FUZZTIME=30s scripts/fuzz.sh ./encoder     only targets under ./encoder
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
FUZZTIME=${FUZZTIME:-10s}
roots=("${@:-.}")

# "dir name" per target, from the test sources (testdata and hidden dirs excluded).
mapfile -t targets < <(
	find "${roots[@]}" -name '*_test.go' -not -path '*/testdata/*' -not -path '*/.*/*' -print0 |
		xargs -0 -r grep -HoE '^func Fuzz[A-Za-z0-9_]*\([A-Za-z_][A-Za-z0-9_]* \*testing\.F\)' |
		sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#' |
		sort -u
)

if ((${#targets[@]} == 0)); then
	echo "fuzz: no Fuzz targets found under ${roots[*]}"
	exit 0
fi

echo "fuzz: ${#targets[@]} target(s), $FUZZTIME each"
failed=()
for t in "${targets[@]}"; do
	dir=${t% *} name=${t#* }
	[[ $dir == ./* || $dir == /* ]] || dir=./$dir
	echo "==> $dir $name"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$dir"; then
		failed+=("$dir $name")
	fi
done

if ((${#failed[@]} > 0)); then
	echo "fuzz: FAILED targets (inputs saved under each package's testdata/fuzz/):"
	printf '    %s\n' "${failed[@]}"
	exit 1
fi
echo "fuzz: all ${#targets[@]} target(s) ran $FUZZTIME without failure"
