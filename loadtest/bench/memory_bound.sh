#!/usr/bin/env bash
# Memory bound: a cache node with CAPACITY of cache receives requests for a
# working set TEN times larger (distinct objects of OBJECT_KIB, uniformly
# random, from wrk), and its resident memory is sampled throughout. It
# prints the peak RSS, the RSS with an empty cache (the fixed overhead), and
# both as a ratio to the capacity.
#
# Usage: loadtest/bench/memory_bound.sh   (env: CAPACITY_MIB=256 DURATION=30 OBJECT_KIB=100)
source "$(dirname "$0")/lib.sh"

CAPACITY_MIB=${CAPACITY_MIB:-256}
DURATION=${DURATION:-30}
OBJECT_KIB=${OBJECT_KIB:-100}
OBJECTS=$(( CAPACITY_MIB * 1024 * 10 / OBJECT_KIB ))
need_commands wrk:wrk taskset:util-linux

ORIGIN=127.0.0.1:$(free_port)
CACHE=127.0.0.1:$(free_port)
printf "kind: origin\nlisten: '%s'\nobjects:\n  - { prefix: /obj/, count: %d, size: %dKiB, cache_control: 'public, max-age=3600' }\n" \
  "$ORIGIN" "$OBJECTS" "$OBJECT_KIB" >"$work/origin.yaml"
printf "kind: cluster\nsites:\n  - name: bench\n    hosts: [localhost]\n    origin: { addresses: ['%s'] }\n" "$ORIGIN" >"$work/cluster.yaml"
printf "kind: cache\nid: mem\nlisten: '%s'\ncapacity: %dMiB\ncluster: cluster.yaml\n" "$CACHE" "$CAPACITY_MIB" >"$work/cache.yaml"
cat >"$work/random.lua" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/obj/" .. math.random(0, $OBJECTS - 1), { ["Host"] = "localhost" })
end
LUA

taskset -c 0 "$FANOUT" --log warn origin "$work/origin.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log warn --workers 1 cache "$work/cache.yaml" & cache_pid=$!; pids+=($cache_pid)
wait_http "$ORIGIN"; wait_http "$CACHE"

rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$cache_pid/status"; }
idle=$(rss_mib)
echo "cache node: capacity ${CAPACITY_MIB} MiB; working set $OBJECTS x ${OBJECT_KIB} KiB = $(( OBJECTS * OBJECT_KIB / 1024 )) MiB (10x); idle RSS ${idle} MiB"

peak=0
taskset -c 0 wrk -t1 -c32 -d"${DURATION}s" -s "$work/random.lua" "http://$CACHE" >"$work/wrk.txt" &
wrk_pid=$!
while kill -0 "$wrk_pid" 2>/dev/null; do
  now=$(rss_mib)
  peak=$(python3 -c "print(max($peak, $now))")
  printf '\r  RSS %8s MiB (peak %s MiB)' "$now" "$peak"
  sleep 1
done
echo
final=$(rss_mib)
rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")
python3 - "$CAPACITY_MIB" "$idle" "$peak" "$final" "$rps" <<'PY'
import sys
cap, idle, peak, final, rps = map(float, sys.argv[1:])
print(f"requests/s {rps:.0f}")
print(f"RSS idle {idle:.1f} MiB, peak {peak:.1f} MiB, at the end {final:.1f} MiB")
print(f"peak / capacity = {peak / cap:.2f}   (peak - idle) / capacity = {(peak - idle) / cap:.2f}")
PY
