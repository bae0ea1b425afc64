#!/bin/sh
# The traffic light: sets and clears the event `green` through prun's control
# socket, CYCLES times, and goes off duty leaving the light green, so that every
# car still waiting can pass and the pipeline always ends.
# usage: light.sh CYCLES [SECONDS_PER_PHASE]
set -eu
cycles=$1 phase=${2:-0.4}
i=1
while [ "$i" -le "$cycles" ]; do
    prun ctl event set green
    echo "GREEN ($i/$cycles)"
    sleep "$phase"
    prun ctl event clear green
    echo "RED ($i/$cycles)"
    sleep "$phase"
    i=$((i + 1))
done
prun ctl event set green
echo "off duty: left on green"
