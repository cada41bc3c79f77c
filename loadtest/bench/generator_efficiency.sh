#!/usr/bin/env bash
# Load-generator efficiency: requests per CPU-second of `fanout loadtest run`
# against wrk, both driving the same endpoint (the synthetic origin serving
# 1 KiB objects from memory, pinned to core 1) from core 0 with one thread.
#
# wrk runs closed-loop as fast as the origin answers; Fanout's generator
# runs open-loop (static viewers, at most CONNECTIONS in flight) at the same
# throughput: each round it offers MATCH (default 0.8) times the rate wrk
# reached just before, or RATE arrivals/s when RATE is set. Matching matters:
# a generator below its target's capacity goes idle between responses, and
# each sleep and wake-up is kernel time a closed loop never pays, so a fixed
# low rate measures the load level as much as the generator. Not 1: on a
# shared machine the origin's speed moves between the two runs, and an
# open-loop generator offered more than its target serves queues without
# bound. Each one's
# user+system CPU time comes from bash's `time`; the last line is the ratio
# Fanout/wrk of requests per CPU-second (above 1: Fanout spends less CPU per
# request).
#
# Usage: loadtest/bench/generator_efficiency.sh   (env: DURATION=10 ROUNDS=3 CONNECTIONS=64 MATCH=0.8 RATE=)
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-10}
RATE=${RATE:-}
MATCH=${MATCH:-0.8}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
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

scenario() {
  cat >"$work/scenario.yaml" <<YAML
kind: scenario
name: generator-efficiency
target: { addresses: ['$ORIGIN'], host: localhost }
limits: { max_in_flight: $CONNECTIONS, request_timeout: 10s }
phases: [{ name: steady, duration: ${DURATION}s, arrival_rate: $1, population: 1000000 }]
mix: [{ viewer: static, prefix: /obj/, count: 100, zipf: 0 }]
YAML
}

TIMEFORMAT='%U %S'
# This machine's neighbours make single runs vary by 10-20 %: alternate the
# two generators ROUNDS times and compare medians.
for round in $(seq "$ROUNDS"); do
  { time taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://$ORIGIN/obj/1" >"$work/wrk.$round.out"; } 2>"$work/wrk.$round.time"
  rate=${RATE:-$(python3 -c "import re, sys; n = int(re.search(r'(\d+) requests in', open(sys.argv[1]).read()).group(1)); print(int(n / $DURATION * $MATCH))" "$work/wrk.$round.out")}
  scenario "$rate"
  { time taskset -c 0 "$FANOUT" --workers 1 loadtest run "$work/scenario.yaml" --quiet \
      --json "$work/fanout.$round.json" >"$work/fanout.$round.out"; } 2>"$work/fanout.$round.time"
done

python3 - "$work" "$DURATION" "$ROUNDS" <<'PY'
import json, re, statistics, sys
work, duration, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def cpu(name):
    user, system = open(f"{work}/{name}.time").read().split()[-2:]
    return float(user) + float(system)
print(f"{'round':<6}{'generator':<18}{'requests':>10}{'req/s':>10}{'CPU s':>8}{'req/CPU-s':>12}{'µs/req':>8}{'p99 ms':>9}")
wrk_rates, fanout_rates, errors = [], [], 0
for r in range(1, rounds + 1):
    wrk_requests = int(re.search(r"(\d+) requests in", open(f"{work}/wrk.{r}.out").read()).group(1))
    report = json.load(open(f"{work}/fanout.{r}.json"))
    fanout_requests = report["totals"]["requests"]
    errors += report["totals"]["errors"]
    for name, n, c, p99, rates in [
        ("wrk", wrk_requests, cpu(f"wrk.{r}"), "-", wrk_rates),
        ("fanout loadtest", fanout_requests, cpu(f"fanout.{r}"), f'{report["totals"]["latency_ms"]["p99"]:.2f}', fanout_rates),
    ]:
        rates.append(n / c)
        print(f"{r:<6}{name:<18}{n:>10}{n / duration:>10.0f}{c:>8.2f}{n / c:>12.0f}{c / n * 1e6:>8.2f}{p99:>9}")
ratios = sorted(f / w for f, w in zip(fanout_rates, wrk_rates))
print(f"median requests per CPU-second: wrk {statistics.median(wrk_rates):.0f}, fanout {statistics.median(fanout_rates):.0f}")
print(f"requests per CPU-second, fanout/wrk: {statistics.median(fanout_rates) / statistics.median(wrk_rates):.2f} "
      f"(per round {', '.join(f'{x:.2f}' for x in ratios)})")
if errors:
    print(f"fanout loadtest saw {errors} errors")
PY
