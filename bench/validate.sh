#!/usr/bin/env bash
# Benchmark: `prun validate` of a generated 1,000-stage pipeline (target: under 50 ms).
# Prints the median and best of 21 runs of the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 bench/gen_big_pipeline.py 1000 > "$tmp/big.yaml"
python3 - "$tmp/big.yaml" <<'PY'
import subprocess, sys, time
times = []
for _ in range(21):
    t = time.perf_counter()
    r = subprocess.run(["target/release/prun", "validate", sys.argv[1]], capture_output=True)
    times.append((time.perf_counter() - t) * 1000)
    assert r.returncode == 0, r.stderr.decode()
times.sort()
print(f"validate 1000 stages: median {times[10]:.1f} ms, best {times[0]:.1f} ms (target < 50 ms)")
PY

# Linear in the number of problems: N and 4N unknown keys (each on its own line) and
# N duplicate keys on one line; the 4N time must stay near 4x the N time.
python3 - <<'PY'
import subprocess, tempfile, time, os
def gen(n, one_line=False):
    if one_line:
        return "version: 1\nstages:\n  a: {cmd: [echo], " + "b: 1, " * n + "stdout: q}\n"
    return "version: 1\nstages:\n  a:\n    cmd: [echo]\n" + "".join(f"    unknown{i}: 1\n" for i in range(n))
d = tempfile.mkdtemp()
for one_line in (False, True):
    times = {}
    for n in (5000, 20000):
        p = os.path.join(d, f"p{n}.yaml")
        open(p, "w").write(gen(n, one_line))
        best = None
        for fmt in ("human", "json"):
            t = time.perf_counter()
            r = subprocess.run(["target/release/prun", "validate", "--format", fmt, p], capture_output=True)
            dt = time.perf_counter() - t
            assert r.returncode == 1 and b"panicked" not in r.stderr
            times[(n, fmt)] = dt
    for fmt in ("human", "json"):
        ratio = times[(20000, fmt)] / times[(5000, fmt)]
        what = "duplicate keys on one line" if one_line else "unknown keys"
        print(f"validate {what}, {fmt}: 5,000 in {times[(5000, fmt)]:.2f} s, 20,000 in {times[(20000, fmt)]:.2f} s (x{ratio:.1f}; linear is x4)")
PY
