"""Gathers the per-file records from stdin (queue `stats`) and prints one table.

Rows are sorted by file name, so the table is the same however the workers were
scheduled. The total line counts distinct clients over all files, which is why
the workers send the client addresses and not only their number.
"""
import json
import sys

rows = [json.loads(line) for line in sys.stdin if line.strip()]
rows.sort(key=lambda r: r["file"])

all_clients = set()
width = max([len("file"), len("total")] + [len(r["file"]) for r in rows])
print(f"{'file':<{width}}  requests  clients  errors", flush=True)
for r in rows:
    all_clients.update(r["clients"])
    print(f"{r['file']:<{width}}  {r['requests']:>8}  {len(r['clients']):>7}  {r['errors']:>6}", flush=True)
total_requests = sum(r["requests"] for r in rows)
total_errors = sum(r["errors"] for r in rows)
print(f"{'total':<{width}}  {total_requests:>8}  {len(all_clients):>7}  {total_errors:>6}", flush=True)
malformed = sum(r["malformed"] for r in rows)
print(f"{len(rows)} files, {malformed} malformed line(s) skipped", flush=True)
