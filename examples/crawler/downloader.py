"""Downloads the URLs read from stdin (queue `urls`) until the sentinel.

Saves each page under --dest and writes one record per URL on stdout (queue
`fetched`): `STATUS BYTES PATH`. A failed download is a record too, not a crash.
"""
import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

parser = argparse.ArgumentParser(description="download URLs from stdin")
parser.add_argument("--dest", required=True, help="folder for the downloaded pages")
parser.add_argument("--sentinel", default="None")
args = parser.parse_args()

opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
os.makedirs(args.dest, exist_ok=True)
for line in sys.stdin:
    url = line.strip()
    if url == args.sentinel:
        break
    path = urllib.parse.urlsplit(url).path
    try:
        with opener.open(url, timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        print(f"{path}: HTTP {err.code}", file=sys.stderr, flush=True)
        print(f"{err.code} 0 {path}", flush=True)
        continue
    with open(os.path.join(args.dest, os.path.basename(path) or "index.html"), "wb") as out:
        out.write(body)
    print(f"{path}: {len(body)} bytes", file=sys.stderr, flush=True)
    print(f"{status} {len(body)} {path}", flush=True)
