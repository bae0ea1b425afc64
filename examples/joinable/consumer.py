"""A daemon consumer: works through jobs from stdin and runs until it is stopped.

Like a multiprocessing daemon worker in a `while True: q.get(); ...; q.task_done()`
loop, it never decides to end by itself. prun ends the pipeline once the producers
are done and the queue is drained, closes the queue (EOF) and then sends the stop
signal (SIGTERM). SIGTERM is blocked while jobs are handled, so the consumer always
finishes every job already in its pipe before it honours the stop request.
"""
import signal

# Blocked first thing, not ignored: a SIGTERM that arrives while we start or work
# stays pending and is collected by sigwait() below, so no job already read is
# abandoned.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

import argparse  # noqa: E402  (after the mask on purpose)
import sys  # noqa: E402
import time  # noqa: E402

parser = argparse.ArgumentParser(description="consume jobs from stdin until SIGTERM")
parser.add_argument("--pause", type=float, default=0.05, help="seconds per job")
args = parser.parse_args()

handled = 0
for line in sys.stdin:
    job = line.strip()
    if not job:
        continue
    time.sleep(args.pause)
    handled += 1
    print(f"handled job {job}", file=sys.stderr, flush=True)

print(f"queue closed after {handled} jobs; idle until stopped", file=sys.stderr, flush=True)
signal.sigwait({signal.SIGTERM})
print(f"stopped by SIGTERM: handled {handled} jobs", file=sys.stderr, flush=True)
