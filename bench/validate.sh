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
