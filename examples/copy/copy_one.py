"""Copies one file (the foreach item) into the destination folder.

A naive copier on purpose: it opens the item as a regular file, so a folder among
the items fails with "Is a directory" and exit status 1, which prun reports.
"""
import argparse
import os
import shutil
import sys
import time

parser = argparse.ArgumentParser(description="copy one file into a folder")
parser.add_argument("item", help="the file to copy")
parser.add_argument("--dest", default="", help="destination folder (empty: use --default-dest)")
parser.add_argument("--default-dest", default="copied", help="used when --dest is empty")
parser.add_argument("--pause", type=float, default=0.2, help="pretend a copy takes this long")
args = parser.parse_args()

dest = args.dest or args.default_dest
name = os.path.basename(os.path.normpath(args.item))
os.makedirs(dest, exist_ok=True)
time.sleep(args.pause)
try:
    shutil.copyfile(args.item, os.path.join(dest, name))
except OSError as err:
    print(f"cannot copy {name}: {err.strerror}", file=sys.stderr, flush=True)
    sys.exit(1)
print(f"copied {name} ({os.path.getsize(args.item)} bytes)", flush=True)
