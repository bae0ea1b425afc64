#!/usr/bin/env bash
# SPEC 9, the rows for stages on other hosts, on the test hosts of scripts/testhosts.sh
# (bring them up first: `scripts/testhosts.sh up` as root):
#
#   - 200 MB through a stage on an SSH host (`cat` on h2, fed by a local `cat f` and
#     read by a local `wc -c`) against `cat f | ssh h2 cat | wc -c` on the same link;
#   - 200 MB through a stage on Slurm against `cat f | srun cat | wc -c`.
#
# Both sides of a row pay for one connection (prun's first instance on a host connects
# on its own while the shared connection comes up; ssh: its own) or one job. The
# contenders run interleaved, one after the other in every round; the times shown are
# medians, the ratio is the median of each round's ratio (see bench/compare.sh for
# why interleaving matters on a shared machine).
#
#   bench/hosts.sh            # REPS=5 rounds
#
# Environment: REPS, DATA (default /tmp/prun-bench), PRUN (default
# target/release/prun, built if missing), PRUN_TESTHOSTS (the test hosts' state).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
reps=${REPS:-5}
data=${DATA:-/tmp/prun-bench}
prun=${PRUN:-$root/target/release/prun}
[ -x "$prun" ] || (cd "$root" && cargo build --release)
"$root/scripts/testhosts.sh" status >/dev/null || {
    echo "the test hosts are not up: run scripts/testhosts.sh up (as root)" >&2
    exit 1
}
eval "$("$root/scripts/testhosts.sh" env)"
cfg=$PRUN_TESTHOSTS/ssh_config

mkdir -p "$data"
file=$data/hosts-200M.txt
if [ ! -s "$file" ] || [ "$(stat -c %s "$file")" -lt 200000000 ]; then
    echo "generating 200 MB of lines in $file..." >&2
    head -c 150000000 /dev/urandom | base64 -w 76 >"$file"
fi
size=$(stat -c %s "$file")
cat "$file" >/dev/null # warm the page cache for every contender alike

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pipeline() { # NAME HOSTLINE: local cat → queue → stage `cat` on the host → queue → local wc
    cat >"$work/$1.yaml" <<YAML
version: 1
name: bench-$1
hosts:
  $2
queues:
  raw: {}
  done: {}
stages:
  src:
    cmd: [cat, "$file"]
    stdout: raw
  remote:
    cmd: [cat]
    on: there
    stdin: raw
    stdout: done
  count:
    sh: 'wc -c > $work/$1.count'
    stdin: done
YAML
}
pipeline ssh "there: {ssh: h2, options: [-F, \"$cfg\"]}"
pipeline slurm "there: {slurm: {partition: debug}}"

# race CMD...: every command once per round, rounds interleaved; prints, per command,
# its wall times in ms of every round on one line.
race() {
    local -a times=()
    local i cmd t0 t1
    for _ in $(seq "$reps"); do
        i=0
        for cmd in "$@"; do
            t0=$(date +%s%N)
            bash -c "$cmd" >/dev/null 2>&1 || { echo "command failed: $cmd" >&2; exit 1; }
            t1=$(date +%s%N)
            times[i]="${times[i]:-} $(((t1 - t0) / 1000000))"
            i=$((i + 1))
        done
    done
    for ((i = 0; i < $#; i++)); do
        local n=$((i + 1))
        echo "  times (ms):${times[i]}  <- ${!n}" | cut -c1-160 >&2
        echo "${times[i]}"
    done
}
median() { python3 -c "import statistics,sys; print(int(statistics.median(map(int, sys.argv[1:]))))" $1; }
# The median of the rounds' ratios baseline/prun: each round's pair ran back to back,
# so a drift of the machine's load over the run moves both sides of a ratio alike.
pair_ratio() {
    python3 -c "import statistics,sys
a=list(map(int,sys.argv[1].split())); b=list(map(int,sys.argv[2].split()))
print(f'{statistics.median(y/x for x,y in zip(a,b)):.2f}')" "$1" "$2"
}
mbps() { python3 -c "print(f'{$size/1e6/($1/1000):.0f} MB/s')"; }
verdict() { python3 -c "print('ok' if $1 else 'MISSED')"; }
check_count() { # the stage really moved every byte
    [ "$(cat "$work/$1.count")" = "$size" ] || { echo "$1: counted $(cat "$work/$1.count"), expected $size" >&2; exit 1; }
}

echo "reps=$reps nproc=$(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
P="$prun run --quiet --progress never"
mapfile -t t < <(race "$P $work/ssh.yaml" "cat $file | ssh -F $cfg h2 cat | wc -c" \
    "$P $work/slurm.yaml" "cat $file | srun --quiet -p debug cat | wc -c")
check_count ssh
check_count slurm
rows=()
a=$(median "${t[0]}") b=$(median "${t[1]}")
r=$(pair_ratio "${t[0]}" "${t[1]}")
rows+=("| a stage on an SSH host, $((size / 1000000)) MB through it | prun ${a} ms ($(mbps "$a")) vs \`ssh host cat\` ${b} ms ($(mbps "$b")) | ${r}× | ≥ 0.9× | $(verdict "$r >= 0.9") |")
a=$(median "${t[2]}") b=$(median "${t[3]}")
r=$(pair_ratio "${t[2]}" "${t[3]}")
rows+=("| a stage on Slurm, $((size / 1000000)) MB through it | prun ${a} ms ($(mbps "$a")) vs \`srun cat\` ${b} ms ($(mbps "$b")) | ${r}× | ≥ 0.9× | $(verdict "$r >= 0.9") |")

echo
echo "SPEC 9, hosts ($reps interleaved rounds: median times, median of the rounds' ratios; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
echo
echo "| case | measured | ratio | target | verdict |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
