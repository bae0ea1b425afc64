"""Adds up its share of 1..N: worker INDEX of PARTS takes one contiguous slice.

Writes one record `LO HI PARTIAL` on stdout (queue `partials`), the slice being
LO..HI-1. The slices of all workers tile 1..N exactly, whatever N and PARTS are.
"""
import argparse
import sys

parser = argparse.ArgumentParser(description="sum one slice of 1..N")
parser.add_argument("--n", type=int, required=True)
parser.add_argument("--index", type=int, required=True, help="this worker, 0-based")
parser.add_argument("--parts", type=int, required=True, help="how many workers")
args = parser.parse_args()

lo = 1 + args.index * args.n // args.parts
hi = 1 + (args.index + 1) * args.n // args.parts
partial = 0
for i in range(lo, hi):  # the loop is the work being spread over processes
    partial += i
print(f"{lo} {hi} {partial}", flush=True)
print(f"summed {lo}..{hi - 1}: {partial}", file=sys.stderr, flush=True)
