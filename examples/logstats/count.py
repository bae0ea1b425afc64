"""Counts one access log (the foreach item): requests, distinct clients, errors.

Writes exactly one JSON record on stdout (the queue `stats`), so that the
aggregator can gather the results of every file, in whatever order they finish.
"""
import json
import os
import re
import sys

# Common/Combined Log Format: client ident user [time] "request" status size ...
LINE = re.compile(r'^(\S+) \S+ \S+ \[[^\]]*\] "[^"]*" (\d{3}) ')

path = sys.argv[1]
clients, requests, errors, malformed = set(), 0, 0, 0
with open(path, encoding="utf-8", errors="replace") as log:
    for line in log:
        match = LINE.match(line)
        if not match:
            malformed += 1
            continue
        requests += 1
        clients.add(match.group(1))
        if int(match.group(2)) >= 400:
            errors += 1

record = {
    "file": os.path.basename(path),
    "requests": requests,
    "errors": errors,
    "clients": sorted(clients),
    "malformed": malformed,
}
print(json.dumps(record), flush=True)
print(f"{record['file']}: {requests} requests from {len(clients)} clients", file=sys.stderr, flush=True)
