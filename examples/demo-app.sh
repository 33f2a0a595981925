#!/bin/sh
# A tiny app for the quick start: says hello every second, on stdout and
# now and then on stderr, and stops cleanly on SIGINT.
trap 'echo "demo: got SIGINT, bye"; exit 0' INT
n=0
while :; do
  n=$((n + 1))
  echo "demo: tick $n (pid $$, pm_id $pm_id)"
  [ $((n % 5)) -eq 0 ] && echo "demo: every fifth tick goes to stderr" >&2
  sleep 1 &
  wait $!
done
