"""A chef steams buns and puts each one on stdout, one bun per line.

stdout is the queue `buns`; what the chef says goes to stderr, which prun shows
prefixed with the instance name (`chef.1 │ steamed bun 3`).
"""
import argparse
import sys
import time

parser = argparse.ArgumentParser(description="steam buns into stdout")
parser.add_argument("--count", type=int, default=5, help="buns to steam")
parser.add_argument("--name", default="chef", help="who is steaming (e.g. chef.0)")
parser.add_argument("--pause", type=float, default=0.05, help="seconds per bun")
args = parser.parse_args()

for n in range(1, args.count + 1):
    time.sleep(args.pause)
    # One record = one line: "<chef>:<number>". flush so the bun leaves now,
    # not when a buffer happens to fill.
    print(f"{args.name}:{n}", flush=True)
    print(f"steamed bun {n}", file=sys.stderr, flush=True)

print(f"done: {args.count} buns", file=sys.stderr, flush=True)
