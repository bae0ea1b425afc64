"""A producer puts a fixed number of jobs on stdout (the queue `jobs`), one per line."""
import argparse
import sys
import time

parser = argparse.ArgumentParser(description="emit jobs on stdout")
parser.add_argument("--jobs", type=int, default=4, help="how many jobs to produce")
parser.add_argument("--name", default="producer", help="who produces (e.g. producer.0)")
parser.add_argument("--pause", type=float, default=0.05, help="seconds between jobs")
args = parser.parse_args()

for n in range(1, args.jobs + 1):
    time.sleep(args.pause)
    print(f"{args.name}:{n}", flush=True)
print(f"produced {args.jobs} jobs", file=sys.stderr, flush=True)
