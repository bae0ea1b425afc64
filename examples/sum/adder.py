"""Adds the partial sums from stdin (queue `partials`) and checks the result.

Checks that the slices cover 1..N exactly once, then compares the total with a
single-process sum and with the closed form N(N+1)/2. Prints OK or exits 1.
"""
import argparse
import sys

parser = argparse.ArgumentParser(description="add partial sums of 1..N")
parser.add_argument("--n", type=int, required=True)
args = parser.parse_args()

problems = []
slices = []
for line in sys.stdin:
    fields = line.split()
    if len(fields) == 3 and all(f.lstrip("-").isdigit() for f in fields):
        slices.append(tuple(map(int, fields)))
    elif fields:
        problems.append(f"not a 'LO HI PARTIAL' record: {line.strip()!r}")
slices.sort()
total = sum(partial for _, _, partial in slices)

expected_lo = 1
for lo, hi, _ in slices:
    if lo != expected_lo:
        problems.append(f"slice {lo}..{hi - 1} does not start at {expected_lo}")
    expected_lo = hi
if expected_lo != args.n + 1:
    problems.append(f"slices end at {expected_lo - 1}, not {args.n}")

single = sum(range(1, args.n + 1))
closed = args.n * (args.n + 1) // 2
print(f"{len(slices)} partial sums: {total}", flush=True)
print(f"one process: {single}; closed form n(n+1)/2: {closed}", flush=True)
if total != single or total != closed:
    problems.append("the sums differ")
for problem in problems:
    print(f"error: {problem}", file=sys.stderr, flush=True)
if problems:
    sys.exit(1)
print(f"sum of 1..{args.n} = {total}: OK", flush=True)
