"""Writer for the fan-in case: N lines of 10,000 copies of one tag letter, written with
one write(2) per line (large writes are what a naive merge tears).
Usage: python3 longlines.py TAG N"""
import os
import sys

tag, n = sys.argv[1], int(sys.argv[2])
line = (tag * 10000 + "\n").encode()
for _ in range(n):
    os.write(1, line)
