#!/usr/bin/env bash
# Playlist-aware prefetch, measured: the same live audience played twice
# against the same cluster (3 cache nodes, 2 proxies, `fanout up`), once
# with the site's prefetch off (the reference: each new segment's first
# viewer waits for the origin) and once with `prefetch: { playlists: true }`.
# Prints both runs side by side with the figures the prefetch targets are
# judged by:
#   - new segments whose first request a cache answered from its store
#     (target with prefetch: >= 95%);
#   - origin requests per live segment (target: exactly 1.00);
#   - prefetched segments no viewer asked for (target: <= 5%): started
#     minus used, from the cache nodes' fanout_cache_prefetches_total,
#     which counts the last segments of the run that viewers had not yet
#     reached as unused too;
#   - live segment and playlist latency, startup and stalls, and the
#     viewers' distance from the live edge (origin publishing a segment to
#     a viewer having it), which holding playlists must not lengthen.
#
# The audience: VIEWERS live viewers (default 1500) joining over 15 s and
# watching for HOLD (default 45s) a 4-rendition ladder of 2 s segments,
# from an origin that takes ORIGIN_LATENCY (default 100ms) to answer for
# playlists and segments.
# The cluster runs on core 1, the load generator on core 0.
#
# With PART_DURATION (such as 500ms) the stream is low-latency HLS: parts
# of that duration, and viewers that play part by part with blocking
# playlist reloads; "segments" in the figures are then parts, and the
# live edge is the LL-HLS target (<= 2 part durations plus a hit).
#
# Usage: loadtest/bench/prefetch.sh          (about 2 minutes)
#        PART_DURATION=500ms loadtest/bench/prefetch.sh
#        REPORTS=DIR keeps the JSON and HTML reports.
source "$(dirname "$0")/lib.sh"

VIEWERS=${VIEWERS:-1500}
ORIGIN_LATENCY=${ORIGIN_LATENCY:-100ms}
HOLD=${HOLD:-45s}
PART_DURATION=${PART_DURATION:-}
REPORTS=${REPORTS:-$work/reports}
mkdir -p "$REPORTS"
need_commands taskset:util-linux curl

ORIGIN=127.0.0.1:$(free_port)
scenario_origin_yaml "$ORIGIN" >"$work/origin.yaml"
if [ -n "$PART_DURATION" ]; then
  sed -i "s/^    segment_duration: 2s$/    segment_duration: 2s\n    part_duration: $PART_DURATION/; s/^    window: 6$/    window: 12/" "$work/origin.yaml"
  grep -q "part_duration: $PART_DURATION" "$work/origin.yaml" || { echo "the origin file's stream moved" >&2; exit 1; }
  export HEADLINE_COMMAND="PART_DURATION=$PART_DURATION loadtest/bench/prefetch.sh"
fi
# A packager a continent away: a loopback origin answers in microseconds,
# which would hide what a first viewer's wait for the origin costs.
cat >>"$work/origin.yaml" <<YAML
faults:
  - { path: '/live/*/*/*.ts', latency: $ORIGIN_LATENCY }
  - { path: '/live/*/*/index.m3u8', latency: $ORIGIN_LATENCY }
YAML
"$FANOUT" origin "$work/origin.yaml" >"$work/origin.log" 2>&1 &
pids+=($!)

cat >"$work/scenario.yaml" <<YAML
kind: scenario
name: prefetch
description: a live audience on a 4-rendition ladder of 2 s segments
seed: 11
target:
  addresses: ['127.0.0.1:1']
  host: localhost
limits:
  max_in_flight: 20000
  request_timeout: 10s
phases:
  - { name: joining, duration: 15s, arrival_rate: $((VIEWERS / 10)), population: $VIEWERS }
  - { name: watching, duration: $HOLD, arrival_rate: 5, population: $VIEWERS }
mix:
  - { viewer: live, stream: main, weight: 1 }
YAML

run_one() { # NAME PREFETCH_FIELDS
  local p1 p2 admins=() caches=""
  p1=127.0.0.1:$(free_port)
  p2=127.0.0.1:$(free_port)
  for i in 1 2 3; do
    local admin=127.0.0.1:$(free_port)
    admins+=("$admin")
    caches+="  - { id: c$i, listen: '127.0.0.1:$(free_port)', admin_listen: '$admin', capacity: 1GiB }"$'\n'
  done
  cat >"$work/up-$1.yaml" <<YAML
kind: up
cluster:
  sites:
    - name: bench
      hosts: [localhost]
      origin: { addresses: ['$ORIGIN'] }
      prefetch: $2
cache_nodes:
$caches
proxies:
  - { id: p1, listen: '$p1' }
  - { id: p2, listen: '$p2' }
YAML
  taskset -c 1 "$FANOUT" up "$work/up-$1.yaml" >"$work/up-$1.log" 2>&1 &
  local up=$!
  pids+=($up)
  wait_http "$p1"
  wait_http "$p2"
  echo "== prefetch $1" >&2
  taskset -c 0 "$FANOUT" --workers 1 loadtest run "$work/scenario.yaml" --quiet \
    --target "$p1" --target "$p2" --host localhost --origin "$ORIGIN" \
    --json "$REPORTS/$1.json" --html "$REPORTS/$1.html" >"$work/$1.out" || true
  # The nodes of one `fanout up` share its metrics: one admin shows all.
  curl -s "http://${admins[0]}/metrics" | grep -E '^fanout_cache_prefetches_total' >"$REPORTS/$1.prefetch" || true
  stop_pid "$up"
}

wait_http "$ORIGIN"
run_one off '{ playlists: false }'
run_one on '{ playlists: true }'

HEADLINE_FILE=$work/headline PARTS=$PART_DURATION python3 - "$REPORTS" <<'PY'
import json, os, re, sys
d = sys.argv[1]
off, on = (json.load(open(f"{d}/{n}.json")) for n in ("off", "on"))
def prefetches(name):
    counts = {}
    for line in open(f"{d}/{name}.prefetch"):
        m = re.search(r'result="(\w+)"', line)
        reason = re.search(r'reason="(\w*)"', line)
        key = m.group(1) + (f" ({reason.group(1)})" if reason and reason.group(1) else "")
        counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts
def seg(r, q):
    return r["classes"].get("live_segment", {}).get("total_ms", {}).get(q, 0)
rows = [
    ("requests", lambda r: r["totals"]["requests"]),
    ("failed", lambda r: r["totals"]["errors"]),
    ("new segments stored", lambda r: r["viewers"].get("new_segments_stored_ratio") or 0),
    ("origin req/segment", lambda r: (r.get("origin") or {}).get("live_segment_requests", 0) / max(1, (r.get("origin") or {}).get("live_segments", 0))),
    ("origin requests", lambda r: (r.get("origin") or {}).get("requests", 0)),
    ("segment p50 ms", lambda r: seg(r, "p50")),
    ("segment p99 ms", lambda r: seg(r, "p99")),
    ("segment p999 ms", lambda r: seg(r, "p999")),
    ("  from store p99 ms", lambda r: r["viewers"].get("segment_stored_ms", {}).get("p99", 0)),
    ("  forwarded p99 ms", lambda r: r["viewers"].get("segment_forwarded_ms", {}).get("p99", 0)),
    ("playlist p99 ms", lambda r: r["classes"].get("live_playlist", {}).get("total_ms", {}).get("p99", 0)),
    ("live edge p50 ms", lambda r: r["viewers"].get("live_edge_ms", {}).get("p50", 0)),
    ("live edge p99 ms", lambda r: r["viewers"].get("live_edge_ms", {}).get("p99", 0)),
    ("startup p99 ms", lambda r: r["viewers"]["startup_ms"]["p99"]),
    ("stall ratio", lambda r: r["viewers"]["stall_ratio"]),
]
print(f"scenario: {on['scenario']}, {on['duration_s']:.0f} s, peak {on['viewers']['peak_active']} viewers")
print(f"{'':<22}{'off':>12}{'on':>12}{'on/off':>9}")
for label, f in rows:
    a, b = f(off), f(on)
    ratio = f"{b / a:.2f}" if a else "-"
    fmt = lambda x: f"{x:.4f}" if isinstance(x, float) and x < 10 else (f"{x:.1f}" if isinstance(x, float) else str(x))
    print(f"{label:<22}{fmt(a):>12}{fmt(b):>12}{ratio:>9}")
p = prefetches("on")
started, used = p.get("started", 0), p.get("used", 0)
print("prefetches (on): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(p.items())))
unused = (started - used) / started if started else 0
print(f"prefetched, not asked for by the end: {unused:.1%} of {started:.0f}")
stored = on["viewers"].get("new_segments_stored_ratio") or 0
per = (on.get("origin") or {}).get("live_segment_requests", 0) / max(1, (on.get("origin") or {}).get("live_segments", 0))
if on["totals"]["errors"] == 0 and off["totals"]["errors"] == 0:
    with open(os.environ["HEADLINE_FILE"], "a") as out:
        unit = "part" if os.environ.get("PARTS") else "segment"
        what = ("New LL-HLS parts in the cache before their first viewer (prefetch, "
                f"{os.environ['PARTS']} parts)" if os.environ.get("PARTS")
                else "New live segments in the cache before their first viewer (prefetch)")
        out.write(f"{what}\t"
                  f"{100 * stored:.1f}% of first requests stored (off: "
                  f"{100 * (off['viewers'].get('new_segments_stored_ratio') or 0):.1f}%), "
                  f"{per:.2f} origin requests per {unit}, {unused:.1%} prefetched unused, "
                  f"{unit} p999 {seg(on, 'p999') / max(seg(off, 'p999'), 0.001):.2f}x, "
                  f"live edge p99 {on['viewers']['live_edge_ms']['p99']:.0f} ms "
                  f"({on['viewers']['live_edge_ms']['p99'] / max(off['viewers']['live_edge_ms']['p99'], 0.001):.2f}x off)\n")
PY
echo "reports: $REPORTS"
record_headline
