#!/usr/bin/env bash
# What the live status board costs the data plane: the routed rows of compare.sh (prun
# mode), each run three ways, interleaved round after round:
#   never  -- as compare.sh runs them: `--quiet --progress never`, output to /dev/null;
#   pty    -- on a pseudo-terminal (script(1)), `--progress never`: the cost of the
#             terminal itself (script copies every byte);
#   board  -- on a pseudo-terminal, `--progress always --color always`: the board.
# Prints the median wall time and the median CPU time of prun itself (user+sys, all its
# threads: router, reporter, board) of each; the board's cost is board vs pty.
#
#   bench/board.sh        # REPS=7 rounds by default; PRUN=target/release/prun
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
reps=${REPS:-7}
data=${DATA:-/tmp/prun-bench}
lines=$data/lines.txt
prun=${PRUN:-$root/target/release/prun}
[ -x "$prun" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -s "$lines" ] || { echo "run bench/compare.sh once first (it makes $lines)" >&2; exit 1; }
command -v script >/dev/null || { echo "script(1) is required (util-linux)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is required (apt-get install time)" >&2; exit 1; }
cat "$lines" >/dev/null

cases=(
  "shared2|$here/pipelines/shared2.yaml --set file=$lines"
  "fanout4|$here/pipelines/fanout4.yaml"
  "fanin|$here/pipelines/fanin.yaml --set bench=$here"
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { python3 -c 'import sys,statistics; print(round(statistics.median(float(x) for x in sys.argv[1:])))' "$@"; }
# run KIND ARGS: prints "wall_ms cpu_ms" of prun
run() {
  local kind=$1 args=$2 t=$tmp/t
  case $kind in
    never) eval "/usr/bin/time -f '%e %U %S' -o $t $prun run --quiet --progress never $args" >/dev/null 2>&1 ;;
    pty) script -qfec "/usr/bin/time -f '%e %U %S' -o $t $prun run --progress never --color always $args" /dev/null >/dev/null 2>&1 ;;
    board) script -qfec "/usr/bin/time -f '%e %U %S' -o $t $prun run --progress always --color always $args" /dev/null >/dev/null 2>&1 ;;
  esac
  awk '{printf "%d %d\n", $1*1000, ($2+$3)*1000}' "$t"
}

echo "reps=$reps nproc=$(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "| row | never: wall / cpu (ms) | pty: wall / cpu | board: wall / cpu | board/pty wall | board/pty cpu |"
echo "|---|---|---|---|---|---|"
for c in "${cases[@]}"; do
  name=${c%%|*}; args=${c#*|}
  declare -A wall=() cpu=()
  for _ in $(seq "$reps"); do
    for kind in never pty board; do
      read -r w u < <(run "$kind" "$args")
      wall[$kind]="${wall[$kind]:-} $w"; cpu[$kind]="${cpu[$kind]:-} $u"
    done
  done
  for kind in never pty board; do echo "$name $kind: wall${wall[$kind]} cpu${cpu[$kind]}" >&2; done
  nw=$(median ${wall[never]}); nc=$(median ${cpu[never]})
  pw=$(median ${wall[pty]}); pc=$(median ${cpu[pty]})
  bw=$(median ${wall[board]}); bc=$(median ${cpu[board]})
  echo "| $name | $nw / $nc | $pw / $pc | $bw / $bc | $(python3 -c "print(f'{$bw/$pw:.2f}')") | $(python3 -c "print(f'{$bc/max($pc,1):.2f}')") |"
  unset wall cpu
done
