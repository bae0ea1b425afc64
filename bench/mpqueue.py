"""Peer for SPEC 9 '1M records 1->4': one producer, four consumers over a
multiprocessing.Queue with a None sentinel per consumer (the seed programs' way).
Usage: python3 mpqueue.py N"""
import multiprocessing as mp
import sys


def consume(q, out):
    n = 0
    while True:
        item = q.get()
        if item is None:
            break
        n += 1
    out.put(n)


def main():
    total = int(sys.argv[1])
    q, out = mp.Queue(maxsize=1024), mp.Queue()
    workers = [mp.Process(target=consume, args=(q, out)) for _ in range(4)]
    for w in workers:
        w.start()
    for i in range(total):
        q.put(str(i))
    for _ in workers:
        q.put(None)
    got = sum(out.get() for _ in workers)
    for w in workers:
        w.join()
    assert got == total, (got, total)


if __name__ == "__main__":
    main()
