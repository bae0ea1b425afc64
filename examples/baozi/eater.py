"""An eater takes buns from stdin one at a time until it sees the sentinel.

stdin is the queue `buns`. Every bun eaten is passed on to stdout (queue `eaten`)
so that the counter can check the total; the eater's own words go to stderr.
"""
import argparse
import sys
import time

parser = argparse.ArgumentParser(description="eat buns from stdin")
parser.add_argument("--sentinel", default="None", help="the record that means: no more buns")
parser.add_argument("--pause", type=float, default=0.1, help="seconds to eat one bun")
args = parser.parse_args()

eaten = 0
for line in sys.stdin:
    bun = line.rstrip("\n")
    if bun == args.sentinel:
        print(f"got the sentinel {bun!r}: no more buns", file=sys.stderr, flush=True)
        break
    time.sleep(args.pause)
    eaten += 1
    print(f"ate bun {bun}", file=sys.stderr, flush=True)
    print(bun, flush=True)
else:
    print("stdin closed without a sentinel", file=sys.stderr, flush=True)

print(f"full after {eaten} buns", file=sys.stderr, flush=True)
