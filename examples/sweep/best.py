"""Gather the sweep's results (one JSON line each, in any order) and print them as a
table, with the best degree for each noise level (the mean error over the seeds)."""

import json
import sys

runs = [json.loads(line) for line in sys.stdin if line.strip()]
runs.sort(key=lambda r: (r["noise"], r["degree"], r["seed"]))
print(f"{'noise':>5}  {'degree':>6}  {'seed':>4}  {'rmse':>6}")
for r in runs:
    print(f"{r['noise']:>5}  {r['degree']:>6}  {r['seed']:>4}  {r['rmse']:>6.3f}")
means = {}
for r in runs:
    means.setdefault((r["noise"], r["degree"]), []).append(r["rmse"])
for noise in sorted({n for n, _ in means}):
    cells = {d: sum(v) / len(v) for (n, d), v in means.items() if n == noise}
    best = min(cells, key=lambda d: (round(cells[d], 3), d))
    print(f"noise {noise}: best degree {best} (mean rmse {cells[best]:.3f})")
print(f"{len(runs)} runs")
