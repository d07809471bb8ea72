#!/bin/sh
# Instructions per evaluated decision of the default policies, by scenario:
# (Ir at N decisions - Ir at 0) / N under callgrind. Run from the checkout:
#   sh examples/eval_profile.sh [N] [uncached]   (after building the example, see
#   examples/eval_profile.rs). Keeps cg.<scenario>.out for callgrind_annotate.
set -eu
n=${1:-500}
mode=${2:-}
bin=${ECLUSE_PROFILE_BIN:-${CARGO_TARGET_DIR:-target}/profiling/examples/eval_profile}
out=${ECLUSE_PROFILE_OUT:-target/eval-profile}
mkdir -p "$out"
ir() {
	valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1.$2.out" "$bin" "$1" "$2" $mode >"$out/run.$1.$2.txt" 2>"$out/vg.$1.$2.txt"
	sed -n 's/^summary: //p' "$out/cg.$1.$2.out"
}
for scenario in allowed reroute deny; do
	base=$(ir "$scenario" 0)
	total=$(ir "$scenario" "$n")
	echo "$scenario: $(( (total - base) / n )) instructions per decision; $(cat "$out/run.$scenario.$n.txt")"
done
