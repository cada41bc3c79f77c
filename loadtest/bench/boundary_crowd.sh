#!/usr/bin/env bash
# A flash crowd at a live segment boundary, with and without prefetch, and
# against the p99 of a hit: CLIENTS viewers (each on a connection opened
# beforehand) ask for a new live segment within 100 ms of the playlist
# listing it, while the origin takes ORIGIN_LATENCY to answer.
#
# Each round waits, through the proxy, for the media playlist to list a
# new segment N, then runs two crowds of the same size, one after the
# other:
#   boundary  N, the moment it is listed (a new segment's first viewers);
#   hit       N again, now stored everywhere it will be: the p99 of a hit
#             for this crowd on this machine, the reference.
# The issue-21 target: with prefetch on, the boundary crowd's p99 is the
# hit crowd's (ratio near 1), not a hit plus an origin round trip, which
# is what the same crowd gets with prefetch off.
#
# Two clusters (`fanout up`: 3 cache nodes, 1 proxy with its hot tier), one
# with `prefetch: { playlists: true }` and one without, run one at a time
# on core 1; the crowds and the origin on core 0.
#
# Usage: loadtest/bench/boundary_crowd.sh   (env: CLIENTS=1000 ROUNDS=5
#        ORIGIN_LATENCY=100ms; about a minute)
source "$(dirname "$0")/lib.sh"

CLIENTS=${CLIENTS:-1000}
ROUNDS=${ROUNDS:-5}
ORIGIN_LATENCY=${ORIGIN_LATENCY:-100ms}
need_commands taskset:util-linux curl

ORIGIN=127.0.0.1:$(free_port)
PLAYLIST=/live/main/hi/index.m3u8
cat >"$work/origin.yaml" <<YAML
kind: origin
listen: '$ORIGIN'
live:
  - name: main
    segment_duration: 2s
    window: 6
    renditions:
      # 500 KB segments.
      - { name: hi, bandwidth: 2000000 }
faults:
  - { path: '/live/*/*/*.ts', latency: $ORIGIN_LATENCY }
  - { path: '/live/*/*/index.m3u8', latency: $ORIGIN_LATENCY }
YAML
taskset -c 0 "$FANOUT" --log warn origin "$work/origin.yaml" >"$work/origin.log" 2>&1 &
pids+=($!)
wait_http "$ORIGIN"

newest() { # PROXY: the newest segment number the playlist lists
  curl -s -H 'Host: localhost' "http://$1$PLAYLIST" | sed -n 's/^\([0-9]*\)\.ts$/\1/p' | tail -1
}

results=$work/results.jsonl
run_one() { # NAME PREFETCH_FIELDS
  local proxy=127.0.0.1:$(free_port) caches=""
  for i in 1 2 3; do
    caches+="  - { id: c$i, listen: '127.0.0.1:$(free_port)', capacity: 1GiB }"$'\n'
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
  - { id: p1, listen: '$proxy' }
YAML
  taskset -c 1 "$FANOUT" --log warn up "$work/up-$1.yaml" >"$work/up-$1.log" 2>&1 &
  local up=$!
  pids+=($up)
  wait_http "$proxy"
  local last now round
  last=$(newest "$proxy")
  # Round 0 warms the pools and the playlist's first sight; not counted.
  for round in $(seq 0 "$ROUNDS"); do
    while now=$(newest "$proxy"); [ -z "$now" ] || [ "$now" -le "${last:-0}" ]; do sleep 0.02; done
    last=$now
    for crowd in boundary hit; do
      line=$(taskset -c 0 "$FANOUT" --log warn loadtest flash-crowd --target "$proxy" \
        --path "/live/main/hi/$now.ts" --clients "$CLIENTS" --spread 100ms --origin "$ORIGIN" --json || true)
      if [ "$round" -gt 0 ] && [ -n "$line" ]; then
        echo "{\"prefetch\":\"$1\",\"crowd\":\"$crowd\",\"result\":$line}" >>"$results"
      fi
    done
    printf '.' >&2
  done
  echo >&2
  stop_pid "$up"
}

echo "boundary crowd: $CLIENTS viewers within 100 ms of a new segment being listed, origin $ORIGIN_LATENCY away, $ROUNDS rounds" >&2
run_one off '{ playlists: false }'
run_one on '{ playlists: true }'

HEADLINE_FILE=$work/headline python3 - "$results" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def of(prefetch, crowd):
    return [r["result"] for r in rows if r["prefetch"] == prefetch and r["crowd"] == crowd]
med = lambda xs, k: statistics.median(x[k] for x in xs) if xs else float("nan")
print(f"{'prefetch':<9} {'crowd':<9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'hits':>12} {'origin reqs':>12} {'failed':>7}")
for p in ("off", "on"):
    for c in ("boundary", "hit"):
        xs = of(p, c)
        hits = "/".join(str(x["hits"]) for x in xs)
        origin = "/".join(str(x.get("origin_requests")) for x in xs)
        print(f"{p:<9} {c:<9} {med(xs,'p50_ms'):>8.1f} {med(xs,'p99_ms'):>8.1f} {max((x['max_ms'] for x in xs), default=0):>8.1f} {hits:>12} {origin:>12} {sum(x['errors'] for x in xs):>7}")
print("medians over rounds; hits and origin requests per round")
# Each round's boundary p99 over its own hit crowd's, then the median.
ratio = {p: statistics.median(b["p99_ms"] / max(h["p99_ms"], 0.001) for b, h in zip(of(p, "boundary"), of(p, "hit")))
         for p in ("off", "on")}
print(f"boundary p99 / hit p99: prefetch off {ratio['off']:.2f}x, on {ratio['on']:.2f}x")
failed = sum(r["result"]["errors"] for r in rows)
if failed == 0 and of("on", "boundary"):
    with open(os.environ["HEADLINE_FILE"], "a") as out:
        out.write(f"A boundary crowd: 1000 viewers ask for a new live segment within 100 ms of its listing, prefetch on\t"
                  f"p99 {med(of('on','boundary'),'p99_ms'):.0f} ms, {ratio['on']:.2f}x a hit crowd's "
                  f"(prefetch off: {ratio['off']:.2f}x)\n")
PY
record_headline
