"""A small static web server on 127.0.0.1 for the crawler example (a daemon stage).

Prints `serving ... on http://127.0.0.1:PORT` once the socket listens: the line
the pipeline's readiness probe waits for. Stops cleanly on SIGTERM.
"""
import argparse
import functools
import http.server
import signal
import sys


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files; logs one short line per request on stderr."""

    def log_message(self, format, *args):
        pass

    def log_request(self, code="-", size="-"):
        print(f"{self.command} {self.path} -> {int(code)}", file=sys.stderr, flush=True)


def stop(signum, frame):
    raise SystemExit(0)


parser = argparse.ArgumentParser(description="serve a folder on 127.0.0.1")
parser.add_argument("--root", required=True, help="folder to serve")
parser.add_argument("--port", type=int, default=18765)
args = parser.parse_args()

signal.signal(signal.SIGTERM, stop)
handler = functools.partial(QuietHandler, directory=args.root)
with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
    print(f"serving {args.root} on http://127.0.0.1:{args.port}/", flush=True)
    try:
        server.serve_forever()
    finally:
        print("server stopped", file=sys.stderr, flush=True)
