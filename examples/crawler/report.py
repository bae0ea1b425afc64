"""Gathers the downloaders' records (stdin: queue `fetched`) and prints a summary."""
import sys

records = []
for line in sys.stdin:
    fields = line.split()
    if len(fields) == 3:
        records.append((fields[2], int(fields[0]), int(fields[1])))
records.sort()

ok = [r for r in records if r[1] == 200]
for path, status, size in records:
    print(f"{status} {size:>5} {path}", flush=True)
failed = len(records) - len(ok)
total = sum(size for _, _, size in ok)
print(f"downloaded {len(ok)} of {len(records)} pages ({total} bytes), {failed} failed", flush=True)
