"""Counts the buns the eaters report (stdin: queue `eaten`) and checks them.

Exits 1 if a bun was eaten twice or a chef's buns are not numbered 1..N without
gaps; otherwise prints one line per chef and the total.
"""
import collections
import sys

seen = collections.Counter()
by_chef = collections.defaultdict(list)
for line in sys.stdin:
    bun = line.strip()
    if not bun:
        continue
    seen[bun] += 1
    chef, _, number = bun.rpartition(":")
    by_chef[chef].append(int(number))

problems = [f"bun {bun!r} eaten {k} times" for bun, k in sorted(seen.items()) if k > 1]
for chef, numbers in sorted(by_chef.items()):
    distinct = sorted(set(numbers))
    if distinct != list(range(1, len(distinct) + 1)):
        problems.append(f"{chef}: buns missing from 1..{max(distinct)}")
    print(f"{chef}: {len(distinct)} buns eaten", flush=True)

for problem in problems:
    print(f"error: {problem}", file=sys.stderr, flush=True)
print(f"total buns eaten: {sum(seen.values())}", flush=True)
sys.exit(1 if problems else 0)
