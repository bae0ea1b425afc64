#!/bin/sh
# A car: arrives at the light after INDEX x GAP seconds, waits until the event
# `green` is set, then passes.
# usage: car.sh INDEX [GAP_SECONDS]
set -eu
index=$1 gap=${2:-0.3}
sleep "$(awk -v i="$index" -v g="$gap" 'BEGIN { print i * g }')"
if prun ctl event is-set green; then
    echo "arrives on green"
else
    echo "arrives on red, waits"
    prun ctl event wait green --timeout 30s
fi
echo "passes the light"
