"""Reads the seed page and puts every link to the same site on stdout (queue `urls`).

Ends its stream with the sentinel line itself, like `q.put(None)` in Python:
prun treats a writer's sentinel as the end of that writer's records.
"""
import argparse
import html.parser
import sys
import urllib.parse
import urllib.request


class LinkParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


parser = argparse.ArgumentParser(description="extract same-site links from a page")
parser.add_argument("seed", help="URL of the page to read")
parser.add_argument("--sentinel", default="None")
args = parser.parse_args()

# No proxy: the site is on 127.0.0.1, and an http_proxy in the environment must not
# send the request anywhere else.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(args.seed, timeout=10) as response:
    page = response.read().decode("utf-8")

links = LinkParser()
links.feed(page)
seed = urllib.parse.urlsplit(args.seed)
found = []
for href in links.links:
    url, _fragment = urllib.parse.urldefrag(urllib.parse.urljoin(args.seed, href))
    parts = urllib.parse.urlsplit(url)
    if parts.netloc != seed.netloc or url == args.seed or url in found:
        continue
    found.append(url)
    print(url, flush=True)

print(args.sentinel, flush=True)
print(f"found {len(found)} links on the seed page; sent the sentinel", file=sys.stderr, flush=True)
