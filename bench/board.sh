#!/usr/bin/env bash
# What the live status board costs the data plane: the routed rows of compare.sh (prun
# mode) run as usual (`--quiet --progress never`, stderr to /dev/null) and with the
# board drawn into a pseudo-terminal (`--progress always`, under script(1)), interleaved
# round after round; prints the median wall time of each and their ratio.
#
#   bench/board.sh        # REPS=5 rounds by default; PRUN=target/release/prun
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
reps=${REPS:-5}
data=${DATA:-/tmp/prun-bench}
lines=$data/lines.txt
prun=${PRUN:-$root/target/release/prun}
[ -x "$prun" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -s "$lines" ] || { echo "run bench/compare.sh once first (it makes $lines)" >&2; exit 1; }
command -v script >/dev/null || { echo "script(1) is required (util-linux)" >&2; exit 1; }
cat "$lines" >/dev/null

cases=(
  "shared2|$here/pipelines/shared2.yaml --set file=$lines"
  "fanout4|$here/pipelines/fanout4.yaml"
  "fanin|$here/pipelines/fanin.yaml --set bench=$here"
)

now() { date +%s%N; }
median() { python3 -c 'import sys,statistics; print(int(statistics.median(int(x) for x in sys.argv[1:])))' "$@"; }

echo "reps=$reps nproc=$(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "| row | --progress never (ms) | board on a pty (ms) | board / never |"
echo "|---|---|---|---|"
for c in "${cases[@]}"; do
  name=${c%%|*}; args=${c#*|}
  plain=(); board=()
  for _ in $(seq "$reps"); do
    t=$(now); eval "$prun run --quiet --progress never $args" >/dev/null 2>&1; plain+=($(( ($(now) - t) / 1000000 )))
    t=$(now); COLUMNS=120 LINES=40 script -qfec "$prun run --progress always --color always $args" /dev/null >/dev/null 2>&1
    board+=($(( ($(now) - t) / 1000000 )))
  done
  echo "$name: never ${plain[*]} / board ${board[*]}" >&2
  p=$(median "${plain[@]}"); b=$(median "${board[@]}")
  echo "| $name | $p | $b | $(python3 -c "print(f'{$b/$p:.2f}')") |"
done
