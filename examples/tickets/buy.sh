#!/bin/sh
# One buyer: read the seats still for sale, think, then take the first one.
# Run it under a mutex (prun ctl sem run lock -- sh buy.sh ...): without it, two
# buyers read the same list during the pause and sell the same seat twice.
# usage: buy.sh SEATS_FILE SALES_FILE BUYER
set -eu
seats=$1 sales=$2 buyer=$3

remaining=$(cat "$seats")
seat=$(printf '%s\n' "$remaining" | sed -n 1p)
echo "sees $(printf '%s' "$remaining" | grep -c . || true) tickets left"
sleep 0.1

if [ -z "$seat" ]; then
    echo "sold out, goes home"
    exit 0
fi
printf '%s\n' "$remaining" | sed 1d | grep . > "$seats.$$" || true
mv "$seats.$$" "$seats"
echo "$seat $buyer" >> "$sales"
echo "bought $seat"
