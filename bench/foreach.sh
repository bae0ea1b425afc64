#!/usr/bin/env bash
# SPEC 9, the foreach rows, measured in one run:
#   1. 2,000 `true` items, parallel 8: `prun run` against `xargs -P8 -n1 true` and GNU
#      parallel, interleaved round by round; the median of the per-round ratios.
#      Target: ≤ 1.0× xargs, and faster than GNU parallel.
#   2. 1,000,000 `true` items, parallel 8: prun's max RSS (`/usr/bin/time -f %M`).
#      Target: ≤ 64 MiB.
#   3. a range of 10,000,000 items: time from prun's start to its first item running
#      (the item writes the time), then SIGINT. Target: ≤ 1 s.
#
#   bench/foreach.sh              # REPS=7 rounds for row 1
#   ROWS="1 3" bench/foreach.sh   # skip the million-item row (minutes on 2 CPUs)
#
# Environment: REPS, ROWS, PRUN (default target/release/prun, built if missing), ITEMS
# (2000), BIG (1000000), JOBS (8). Installs GNU parallel with apt-get when it is
# missing, and says so.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
reps=${REPS:-7}
rows=${ROWS:-"1 2 3"}
items=${ITEMS:-2000}
big=${BIG:-1000000}
jobs=${JOBS:-8}
prun=${PRUN:-$root/target/release/prun}
[ -x "$prun" ] || (cd "$root" && cargo build --release)

if ! command -v parallel >/dev/null; then
    echo "GNU parallel is missing: installing it with apt-get (Debian package 'parallel')..." >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq parallel >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq parallel >/dev/null; fi
    echo "installed: $(parallel --version | head -1)" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
foreach_yaml() { # N FILE
    cat >"$2" <<YAML
version: 1
name: bench-foreach
stages:
  each:
    cmd: ["true"]
    foreach: {range: {from: 0, to: $1}}
    parallel: $jobs
YAML
}
foreach_yaml "$items" "$work/small.yaml"
foreach_yaml "$big" "$work/big.yaml"
cat >"$work/huge.yaml" <<YAML
version: 1
name: bench-first-item
stages:
  each:
    sh: 'date +%s%N > $work/first; exec sleep 60'
    foreach: {range: {from: 0, to: 10000000}}
    parallel: $jobs
YAML

# ms CMD: wall time of one run in ms; a failing command aborts the bench.
ms() {
    local t0 t1
    t0=$(date +%s%N)
    if ! bash -c "$1" >/dev/null 2>&1; then
        echo "failed: $1" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
fmt2() { python3 -c "print(f'{float(\"$1\"):.2f}')"; }

echo "nproc=$(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg); $(parallel --version | head -1)" >&2
echo "| case | measured | result | target | verdict |"
echo "|---|---|---|---|---|"

if [[ " $rows " == *" 1 "* ]]; then
    rx=() rp=() tp=() tx=() tg=()
    for r in $(seq "$reps"); do
        a=$(ms "$prun run --quiet --progress never $work/small.yaml")
        b=$(ms "seq $items | xargs -P$jobs -n1 true")
        c=$(ms "seq $items | parallel -j$jobs true")
        echo "round $r: prun $a ms, xargs $b ms, GNU parallel $c ms" >&2
        tp+=("$a") tx+=("$b") tg+=("$c")
        rx+=("$(python3 -c "print($a/max($b,1))")")
        rp+=("$(python3 -c "print($c/max($a,1))")")
    done
    mx=$(fmt2 "$(median "${rx[@]}")")
    mp=$(fmt2 "$(median "${rp[@]}")")
    ok=$(python3 -c "print('ok' if $mx <= 1.0 and $mp > 1.0 else 'MISSED')")
    echo "| foreach $items × \`true\`, parallel $jobs ($reps interleaved rounds) | medians: prun $(median "${tp[@]}") ms, xargs $(median "${tx[@]}") ms, GNU parallel $(median "${tg[@]}") ms | ${mx}× xargs; GNU parallel ${mp}× slower | ≤ 1.0× xargs, < parallel | $ok |"
fi

if [[ " $rows " == *" 2 "* ]]; then
    t0=$(date +%s%N)
    /usr/bin/time -f "%M" -o "$work/rss" "$prun" run --quiet --progress never "$work/big.yaml" >/dev/null 2>&1
    rss=$(tail -1 "$work/rss")
    t1=$(date +%s%N)
    mib=$(python3 -c "print(f'{$rss/1024:.1f}')")
    ok=$(python3 -c "print('ok' if $rss <= 64*1024 else 'MISSED')")
    echo "| foreach $big × \`true\`, parallel $jobs | max RSS $mib MiB ($(((t1 - t0) / 1000000)) ms in all) | $mib MiB | ≤ 64 MiB | $ok |"
fi

if [[ " $rows " == *" 3 "* ]]; then
    rm -f "$work/first"
    t0=$(date +%s%N)
    "$prun" run --quiet --progress never "$work/huge.yaml" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 3000); do [ -s "$work/first" ] && break; sleep 0.01; done
    kill -INT "$pid"
    wait "$pid" || true
    first=$(cat "$work/first")
    took=$(((first - t0) / 1000000))
    ok=$(python3 -c "print('ok' if $took <= 1000 else 'MISSED')")
    echo "| range of 10,000,000 items, first item | started after $took ms | $took ms | ≤ 1 s | $ok |"
fi
