#!/usr/bin/env bash
# SPEC 9, foreach row: 2,000 `true` items with parallel 8, `prun run` against
# `xargs -P8 -n1 true` and GNU parallel, side by side in one run, printing the ratios.
# Targets: prun ≤ 1.5× xargs, and faster than GNU parallel.
#
#   bench/foreach.sh            # REPS=5 runs per contender, best kept (GNU parallel: 1)
#
# Environment: REPS, PRUN (default target/release/prun, built if missing), ITEMS (2000),
# JOBS (8). Installs GNU parallel with apt-get when it is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
reps=${REPS:-5}
items=${ITEMS:-2000}
jobs=${JOBS:-8}
prun=${PRUN:-$root/target/release/prun}
[ -x "$prun" ] || (cd "$root" && cargo build --release)

if ! command -v parallel >/dev/null; then
    echo "installing GNU parallel..." >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq parallel >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq parallel >/dev/null; fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/foreach.yaml" <<YAML
version: 1
name: bench-foreach
stages:
  each:
    cmd: ["true"]
    foreach: {range: {from: 0, to: $items}}
    parallel: $jobs
YAML

# best_ms N CMD: best wall time in ms over N runs; a failing command aborts the bench.
best_ms() {
    local n=$1 cmd=$2 best=999999999 t0 t1 ms
    for _ in $(seq "$n"); do
        t0=$(date +%s%N)
        if ! bash -c "$cmd" >/dev/null 2>&1; then
            echo "failed: $cmd" >&2
            exit 1
        fi
        t1=$(date +%s%N)
        ms=$(( (t1 - t0) / 1000000 ))
        (( ms < best )) && best=$ms
    done
    echo "$best"
}
ratio() { python3 -c "print(f'{$1/max($2,1e-9):.2f}')"; }

echo "foreach $items × true, parallel $jobs; nproc=$(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
t_prun=$(best_ms "$reps" "$prun run --quiet --progress never $work/foreach.yaml")
t_xargs=$(best_ms "$reps" "seq $items | xargs -P$jobs -n1 true")
t_par=$(best_ms 1 "seq $items | parallel -j$jobs true")

r_x=$(ratio "$t_prun" "$t_xargs")
r_p=$(ratio "$t_par" "$t_prun")
ok=$(python3 -c "print('ok' if $r_x <= 1.5 and $t_prun < $t_par else 'MISSED')")
echo "| case | measured | ratio | target | verdict |"
echo "|---|---|---|---|---|"
echo "| foreach $items × \`true\`, parallel $jobs | prun $t_prun ms, xargs $t_xargs ms, GNU parallel $t_par ms | ${r_x}× xargs; GNU parallel ${r_p}× slower | ≤ 1.5× xargs, < parallel | $ok |"
