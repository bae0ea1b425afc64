"""Reader for the fairness case: 100 ms of work per record (reads stdin the usual,
buffered Python way)."""
import sys
import time

for _ in sys.stdin:
    time.sleep(0.1)
