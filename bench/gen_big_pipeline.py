#!/usr/bin/env python3
"""Write a generated pipeline with N stages (default 1000) to stdout, for the
`prun validate` benchmark: queues, replicas, after, semaphores and events included."""
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
out = ["version: 1", "name: big", "params:", "  n: 3", "queues:"]
out += [f"  q{i}: {{capacity: 64}}" for i in range(n // 2)]
out += ["semaphores:", "  lock: 2", "events: [go]", "stages:"]
for i in range(n):
    out.append(f"  s{i}:")
    out.append(f'    cmd: [echo, "${{params.n}}", "${{stage}}.${{instance}}"]')
    if i % 2 == 0:
        out += [f"    stdout: q{i // 2}", "    replicas: 2"]
    else:
        out.append(f"    stdin: q{i // 2}")
        if i > 2:
            out.append(f"    after: {{s{i - 2}: started}}")
    if i % 10 == 0:
        out.append("    semaphore: lock")
    if i == 1:
        out.append("    sets: {go: started}")
    if i == n - 1:
        out.append("    waits: [go]")
print("\n".join(out))
