#!/usr/bin/env bash
# How many simulated live viewers one generator process holds, and what
# each costs: VIEWERS live HLS viewers (10 s segments, so each is idle
# between polls as a real player is) join over RAMP seconds and watch for
# HOLD more, against a synthetic origin on core 1; the generator runs on
# core 0 with one thread. Prints the generator's summary: peak viewers,
# peak RSS and bytes per viewer, and whether the viewers kept up (stalls).
#
# Usage: loadtest/bench/viewer_scale.sh   (env: VIEWERS=100000 RAMP=50 HOLD=30)
source "$(dirname "$0")/lib.sh"

VIEWERS=${VIEWERS:-100000}
RAMP=${RAMP:-50}
HOLD=${HOLD:-30}
need_commands taskset:util-linux

ORIGIN=127.0.0.1:$(free_port)
cat >"$work/origin.yaml" <<YAML
kind: origin
listen: '$ORIGIN'
live:
  - name: main
    segment_duration: 10s
    window: 6
    renditions:
      - { name: low, bandwidth: 16000 }
YAML
taskset -c 1 "$FANOUT" --workers 1 origin "$work/origin.yaml" >"$work/origin.log" 2>&1 &
pids+=($!)
wait_http "$ORIGIN"
# Poisson arrivals a little above VIEWERS/RAMP, so the population cap is reached.
RATE=$(( VIEWERS * 105 / 100 / RAMP + 1 ))
cat >"$work/scale.yaml" <<YAML
kind: scenario
name: viewer-scale
target: { addresses: ['$ORIGIN'], host: localhost, origin: '$ORIGIN' }
limits: { max_in_flight: 2000, request_timeout: 20s }
phases:
  - { name: join, duration: ${RAMP}s, arrival_rate: $RATE, population: $VIEWERS }
  - { name: hold, duration: ${HOLD}s, arrival_rate: 0, population: $VIEWERS }
mix: [{ viewer: live, stream: main }]
YAML
taskset -c 0 "$FANOUT" --workers 1 loadtest run "$work/scale.yaml" --json "$work/scale.json"
