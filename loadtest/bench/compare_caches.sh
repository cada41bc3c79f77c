#!/usr/bin/env bash
# One scenario, three caches: plays a `kind: scenario` file against a Fanout
# cluster (one proxy and one cache node, `fanout up`), NGINX (proxy_cache
# with its cache lock) and Varnish (defaults), each in front of its own
# synthetic origin, and prints the three reports side by side.
#
# Each server is pinned to core 1 (Fanout with --workers 1, NGINX with one
# worker); the load generator runs on core 0. The scenario's target is
# replaced; its viewers must only ask for what the origin below serves
# (live stream `main`, 20 VOD titles, /static/0..999), as the shipped
# quickstart, ipl-final and vod-longtail scenarios do.
#
# Usage: loadtest/bench/compare_caches.sh [SCENARIO]   (default: loadtest/scenarios/quickstart.yaml)
#        REPORTS=DIR keeps the JSON and HTML reports.
source "$(dirname "$0")/lib.sh"

SCENARIO=${1:-loadtest/scenarios/quickstart.yaml}
REPORTS=${REPORTS:-$work/reports}
mkdir -p "$REPORTS"
need_commands nginx:nginx-light varnishd:varnish taskset:util-linux

run_one() { # NAME CACHE_ADDR ORIGIN_ADDR
  echo "== $1" >&2
  taskset -c 0 "$FANOUT" --workers 1 loadtest run "$SCENARIO" --quiet \
    --target "$2" --host localhost --origin "$3" \
    --json "$REPORTS/$1.json" --html "$REPORTS/$1.html" >"$work/$1.out" || true
}

for name in fanout nginx varnish; do
  port=$(free_port)
  declare "ORIGIN_${name}=127.0.0.1:$port"
  scenario_origin_yaml "127.0.0.1:$port" >"$work/origin-$name.yaml"
  "$FANOUT" origin "$work/origin-$name.yaml" >"$work/origin-$name.log" 2>&1 &
  pids+=($!)
done

FANOUT_PROXY=127.0.0.1:$(free_port)
FANOUT_CACHE=127.0.0.1:$(free_port)
cat >"$work/up.yaml" <<YAML
kind: up
cluster:
  sites:
    - name: bench
      hosts: [localhost]
      origin: { addresses: ['$ORIGIN_fanout'] }
cache_nodes:
  - { id: c1, listen: '$FANOUT_CACHE', capacity: 2GiB }
proxies:
  - { id: p1, listen: '$FANOUT_PROXY' }
YAML
taskset -c 1 "$FANOUT" --workers 1 up "$work/up.yaml" >"$work/up.log" 2>&1 &
pids+=($!)
NGINX=127.0.0.1:$(free_port)
start_nginx "$NGINX" "$ORIGIN_nginx" 1
VARNISH=127.0.0.1:$(free_port)
start_varnish "$VARNISH" "$ORIGIN_varnish" 1
for addr in "$ORIGIN_fanout" "$ORIGIN_nginx" "$ORIGIN_varnish" "$FANOUT_PROXY" "$NGINX" "$VARNISH"; do
  wait_http "$addr"
done

run_one fanout "$FANOUT_PROXY" "$ORIGIN_fanout"
run_one nginx "$NGINX" "$ORIGIN_nginx"
run_one varnish "$VARNISH" "$ORIGIN_varnish"

python3 - "$REPORTS" <<'PY'
import json, sys
reports = {n: json.load(open(f"{sys.argv[1]}/{n}.json")) for n in ("fanout", "nginx", "varnish")}
def pct(x): return "n/a" if x is None else f"{100 * x:.1f}%"
rows = [
    ("requests", lambda r: r["totals"]["requests"]),
    ("failed", lambda r: r["totals"]["errors"]),
    ("hit ratio", lambda r: pct(r["totals"]["hit_ratio"])),
    ("origin requests", lambda r: (r.get("origin") or {}).get("requests", "n/a")),
    ("p50 ms", lambda r: f'{r["totals"]["latency_ms"]["p50"]:.2f}'),
    ("p99 ms", lambda r: f'{r["totals"]["latency_ms"]["p99"]:.2f}'),
    ("p99.9 ms", lambda r: f'{r["totals"]["latency_ms"]["p999"]:.2f}'),
    ("startup p99 ms", lambda r: f'{r["viewers"]["startup_ms"]["p99"]:.0f}'),
    ("stalls", lambda r: r["viewers"]["stalls"]),
    ("stall ratio", lambda r: f'{r["viewers"]["stall_ratio"]:.4f}'),
]
name = next(iter(reports.values()))["scenario"]
print(f"scenario {name}")
print(f"{'':<18}" + "".join(f"{n:>12}" for n in reports))
for label, f in rows:
    print(f"{label:<18}" + "".join(f"{str(f(r)):>12}" for r in reports.values()))
PY
echo "reports: $REPORTS"
