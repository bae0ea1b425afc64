#!/bin/sh
# Prints "<verb> (i/TIMES)" TIMES times, PAUSE seconds apart.
# usage: perform.sh VERB TIMES PAUSE
set -eu
verb=$1 times=$2 pause=$3
i=1
while [ "$i" -le "$times" ]; do
    echo "$verb ($i/$times)"
    sleep "$pause"
    i=$((i + 1))
done
echo "done $verb"
