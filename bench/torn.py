"""Reader for the fan-in case: prints 'lines=N torn=M' where a torn line is one that is
not exactly 10,000 copies of a single letter."""
import sys

lines = torn = 0
for raw in sys.stdin.buffer:
    lines += 1
    body = raw.rstrip(b"\n")
    if len(body) != 10000 or body.count(body[:1]) != 10000:
        torn += 1
print(f"lines={lines} torn={torn}")
