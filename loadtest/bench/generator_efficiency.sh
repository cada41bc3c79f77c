#!/usr/bin/env bash
# Load-generator efficiency: requests per CPU-second of `fanout loadtest run`
# against wrk, both driving the same endpoint (the synthetic origin serving
# 1 KiB objects from memory, pinned to core 1) from core 0 with one thread.
#
# wrk runs closed-loop as fast as it can; Fanout's generator runs open-loop
# at RATE arrivals/s (static viewers, at most CONNECTIONS in flight). Each
# one's user+system CPU time comes from bash's `time`; the last line is the
# ratio Fanout/wrk of requests per CPU-second (above 1: Fanout spends less
# CPU per request).
#
# Usage: loadtest/bench/generator_efficiency.sh   (env: DURATION=10 RATE=15000 CONNECTIONS=64)
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
RATE=${RATE:-15000}
CONNECTIONS=${CONNECTIONS:-64}
need_commands wrk:wrk taskset:util-linux

ORIGIN=127.0.0.1:$(free_port)
cat >"$work/origin.yaml" <<YAML
kind: origin
listen: '$ORIGIN'
objects:
  - { prefix: /obj/, count: 100, size: 1KiB, cache_control: 'public, max-age=3600' }
YAML
taskset -c 1 "$FANOUT" --workers 1 origin "$work/origin.yaml" >"$work/origin.log" 2>&1 &
pids+=($!)
wait_http "$ORIGIN"

cat >"$work/scenario.yaml" <<YAML
kind: scenario
name: generator-efficiency
target: { addresses: ['$ORIGIN'], host: localhost }
limits: { max_in_flight: $CONNECTIONS, request_timeout: 10s }
phases: [{ name: steady, duration: ${DURATION}s, arrival_rate: $RATE, population: 1000000 }]
mix: [{ viewer: static, prefix: /obj/, count: 100, zipf: 0 }]
YAML

TIMEFORMAT='%U %S'
{ time taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://$ORIGIN/obj/1" >"$work/wrk.out"; } 2>"$work/wrk.time"
{ time taskset -c 0 "$FANOUT" --workers 1 loadtest run "$work/scenario.yaml" --quiet \
    --json "$work/fanout.json" >"$work/fanout.out"; } 2>"$work/fanout.time"

python3 - "$work" "$DURATION" <<'PY'
import json, re, sys
work, duration = sys.argv[1], float(sys.argv[2])
def cpu(name):
    user, system = open(f"{work}/{name}.time").read().split()[-2:]
    return float(user) + float(system)
wrk_requests = int(re.search(r"(\d+) requests in", open(f"{work}/wrk.out").read()).group(1))
report = json.load(open(f"{work}/fanout.json"))
fanout_requests = report["totals"]["requests"]
rows = [("wrk", wrk_requests, cpu("wrk"), "-"), ("fanout loadtest", fanout_requests, cpu("fanout"),
        f'{report["totals"]["latency_ms"]["p99"]:.2f}')]
print(f"{'generator':<18}{'requests':>10}{'req/s':>10}{'CPU s':>8}{'req/CPU-s':>12}{'p99 ms':>9}")
for name, n, c, p99 in rows:
    print(f"{name:<18}{n:>10}{n / duration:>10.0f}{c:>8.2f}{n / c:>12.0f}{p99:>9}")
ratio = (fanout_requests / cpu("fanout")) / (wrk_requests / cpu("wrk"))
print(f"requests per CPU-second, fanout/wrk: {ratio:.2f}")
if report["totals"]["errors"]:
    print(f'fanout loadtest saw {report["totals"]["errors"]} errors: {report["first_errors"][:2]}')
PY
