"""After every copy has ended: compares the source folder with the destination.

Prints which entries were not copied and `copied K of N entries`. Exits 1 only if
a copy exists but differs from its source (a failed copy is already reported by
its own instance).
"""
import argparse
import filecmp
import os
import sys

parser = argparse.ArgumentParser(description="check a folder copy")
parser.add_argument("--src", required=True, help="the source folder")
parser.add_argument("--dest", default="", help="destination folder (empty: use --default-dest)")
parser.add_argument("--default-dest", default="copied", help="used when --dest is empty")
args = parser.parse_args()

dest = args.dest or args.default_dest
entries = sorted(os.listdir(args.src))
copied, missing, different = [], [], []
for name in entries:
    target = os.path.join(dest, name)
    if not os.path.isfile(target):
        missing.append(name)
    elif filecmp.cmp(os.path.join(args.src, name), target, shallow=False):
        copied.append(name)
    else:
        different.append(name)

for name in missing:
    print(f"not copied: {name}", flush=True)
for name in different:
    print(f"error: {name} differs from its source", file=sys.stderr, flush=True)
print(f"copied {len(copied)} of {len(entries)} entries", flush=True)
sys.exit(1 if different else 0)
