#!/usr/bin/env bash
# Overload shedding, measured: a live audience far beyond what one core
# serves, played twice against the same Fanout cluster on one core, once
# with the proxy's overload protection off (its default: every request
# queues as long as it must, the reference) and once turned on with its
# other settings at their defaults (newcomers turned away with 503 and
# Retry-After while the proxy falls behind). Prints the
# two reports side by side and the ratio of each figure, on to off.
#
# The audience: WATCHING live viewers (default 2500) who join over 20 s
# and already keep the core busy, then a crowd arriving at ARRIVAL_RATE
# per second (default 300) up to POPULATION (default 6000), held for HOLD
# (default 30s); a 4-rendition ladder of 2 s segments. The cluster (`fanout up --workers 1`, proxy and
# cache node) runs on core 1, the load generator on core 0.
#
# Usage: loadtest/bench/overload.sh      (about 3 minutes)
#        SCENARIO=loadtest/scenarios/ipl-final.yaml plays that file instead
#        (its target is replaced; it may ask for the live stream `main`,
#        20 VOD titles and /static/0..999, as compare_caches.sh's origin).
#        REPORTS=DIR keeps the JSON and HTML reports.
source "$(dirname "$0")/lib.sh"

WATCHING=${WATCHING:-2500}
ARRIVAL_RATE=${ARRIVAL_RATE:-300}
POPULATION=${POPULATION:-6000}
HOLD=${HOLD:-30s}
REPORTS=${REPORTS:-$work/reports}
mkdir -p "$REPORTS"
need_commands taskset:util-linux

ORIGIN=127.0.0.1:$(free_port)
scenario_origin_yaml "$ORIGIN" >"$work/origin.yaml"
"$FANOUT" origin "$work/origin.yaml" >"$work/origin.log" 2>&1 &
pids+=($!)

cat >"$work/scenario.yaml" <<YAML
kind: scenario
name: overload
description: a crowd of live viewers far beyond one core
seed: 7
target:
  addresses: ['127.0.0.1:1']
  host: localhost
limits:
  max_in_flight: 20000
  request_timeout: 10s
  connect_timeout: 2s
phases:
  - { name: watching, duration: 20s, arrival_rate: $((WATCHING / 15)), population: $WATCHING }
  - { name: crowd, duration: 15s, arrival_rate: $ARRIVAL_RATE, population: $POPULATION }
  - { name: hold, duration: $HOLD, arrival_rate: 20, population: $POPULATION }
mix:
  - { viewer: live, stream: main, weight: 1 }
YAML
SCENARIO_ARG=${SCENARIO:-}
SCENARIO=${SCENARIO:-$work/scenario.yaml}

run_one() { # NAME OVERLOAD_FIELDS
  local proxy cache admin
  proxy=127.0.0.1:$(free_port)
  cache=127.0.0.1:$(free_port)
  admin=127.0.0.1:$(free_port)
  cat >"$work/up-$1.yaml" <<YAML
kind: up
cluster:
  sites:
    - name: bench
      hosts: [localhost]
      origin: { addresses: ['$ORIGIN'] }
cache_nodes:
  - { id: c1, listen: '$cache', capacity: 2GiB }
proxies:
  - { id: p1, listen: '$proxy', admin_listen: '$admin', overload: $2 }
YAML
  taskset -c 1 "$FANOUT" --workers 1 up "$work/up-$1.yaml" >"$work/up-$1.log" 2>&1 &
  local up=$!
  pids+=($up)
  wait_http "$proxy"
  echo "== shedding $1" >&2
  taskset -c 0 "$FANOUT" --workers 1 loadtest run "$SCENARIO" --quiet \
    --target "$proxy" --host localhost --origin "$ORIGIN" \
    --json "$REPORTS/$1.json" --html "$REPORTS/$1.html" >"$work/$1.out" || true
  curl -s "http://$admin/metrics" | grep -E '^fanout_proxy_shed_total' >"$REPORTS/$1.shed" || true
  stop_pid "$up"
}

wait_http "$ORIGIN"
run_one off '{ enabled: false }'
run_one on '{ enabled: true }'

HEADLINE_FILE=$work/headline python3 - "$REPORTS" <<'PY'
import json, os, sys
d = sys.argv[1]
off, on = (json.load(open(f"{d}/{n}.json")) for n in ("off", "on"))
def goodput(r):  # MiB/s of answered requests
    return r["totals"]["bytes"] / r["duration_s"] / 1048576
rows = [
    ("requests answered", lambda r: r["totals"]["requests"] - r["totals"]["errors"]),
    ("failed", lambda r: r["totals"]["errors"]),
    ("refused (503)", lambda r: r["totals"].get("refused", 0)),
    ("refusal p99 ms", lambda r: r["totals"].get("refusal_ms", {}).get("p99", 0)),
    ("goodput MiB/s", goodput),
    ("p50 ms", lambda r: r["totals"]["latency_ms"]["p50"]),
    ("p99 ms", lambda r: r["totals"]["latency_ms"]["p99"]),
    ("startup p99 ms", lambda r: r["viewers"]["startup_ms"]["p99"]),
    ("stall ratio", lambda r: r["viewers"]["stall_ratio"]),
    ("peak viewers", lambda r: r["viewers"]["peak_active"]),
]
print(f"scenario: {on['scenario']}, {on['duration_s']:.0f} s, one core")
print(f"{'':<20}{'off':>12}{'on':>12}{'on/off':>9}")
for label, f in rows:
    a, b = f(off), f(on)
    ratio = f"{b / a:.2f}" if a else "-"
    fmt = (lambda x: f"{x:.4f}") if label == "stall ratio" else (lambda x: f"{x:.2f}" if isinstance(x, float) else str(x))
    print(f"{label:<20}{fmt(a):>12}{fmt(b):>12}{ratio:>9}")
# The README's headline row, when both runs failed no request.
if off["totals"]["errors"] == 0 and on["totals"]["errors"] == 0:
    p99 = lambda r: r["totals"]["latency_ms"]["p99"]
    stalls = lambda r: 100 * r["viewers"]["stall_ratio"]
    with open(os.environ["HEADLINE_FILE"], "a") as out:
        out.write("A live audience beyond one core: overload shedding on vs off\t"
                  f"{on['scenario']}: stall ratio {stalls(on):.2f}% vs {stalls(off):.2f}%, "
                  f"p99 {p99(on) / p99(off):.2f}x, goodput {goodput(on) / goodput(off):.2f}x, 0 failed\n")
PY
echo "shed by priority and reason (on):"
sed 's/^/  /' "$REPORTS/on.shed"
echo "reports: $REPORTS"
if [ -n "${SCENARIO_ARG:-}" ]; then
  HEADLINE_COMMAND="SCENARIO=$SCENARIO_ARG loadtest/bench/overload.sh" record_headline
else
  record_headline
fi
