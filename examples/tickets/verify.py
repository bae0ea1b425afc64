"""After every buyer has finished: lists the sales and checks that no seat was sold
twice and that sold + unsold seats add up to what was on sale."""
import argparse
import collections
import sys

parser = argparse.ArgumentParser(description="check the ticket sales")
parser.add_argument("--seats", required=True, help="file of seats still for sale")
parser.add_argument("--sales", required=True, help="file of 'SEAT BUYER' lines")
parser.add_argument("--tickets", type=int, required=True, help="seats that were on sale")
args = parser.parse_args()

with open(args.sales) as f:
    sales = [line.split() for line in f if line.strip()]
with open(args.seats) as f:
    unsold = [line.strip() for line in f if line.strip()]

for seat, buyer in sales:
    print(f"{seat} -> {buyer}", flush=True)
per_seat = collections.Counter(seat for seat, _ in sales)
problems = [f"{seat} sold {n} times" for seat, n in sorted(per_seat.items()) if n > 1]
if len(per_seat) + len(unsold) != args.tickets:
    problems.append(f"{len(per_seat)} sold + {len(unsold)} unsold != {args.tickets} on sale")
for problem in problems:
    print(f"error: {problem}", file=sys.stderr, flush=True)

buyers = len({buyer for _, buyer in sales})
print(f"sold {len(sales)} of {args.tickets} tickets to {buyers} different buyers", flush=True)
if problems:
    sys.exit(1)
print("no ticket sold twice", flush=True)
