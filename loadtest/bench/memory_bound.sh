#!/usr/bin/env bash
# Memory bound: a Fanout cache node, or a proxy's hot tier, with CAPACITY
# receives requests for a working set TEN times larger (distinct objects of
# OBJECT_KIB, uniformly random, from wrk), and the process's resident memory
# is sampled throughout. It prints the peak RSS, the RSS before any request
# (the fixed overhead), and both as a ratio to the capacity, against the
# bound each is held to: a cache node's RSS within about 1.1 x capacity +
# 64 MiB, a proxy's within 1.1 x its hot-tier capacity + 64 MiB.
#
#   TARGET=cache  a cache node alone (its `capacity`)
#   TARGET=proxy  a proxy process (its `hot_tier.capacity`) in front of a
#                 cache node in another process, so the figure is the
#                 proxy's own; the node holds the whole working set, so the
#                 proxy sees hits, as in front of a warm cluster
#
# Usage: loadtest/bench/memory_bound.sh   (env: TARGET=cache CAPACITY_MIB=256 DURATION=30 OBJECT_KIB=100)
source "$(dirname "$0")/lib.sh"

TARGET=${TARGET:-cache}
CAPACITY_MIB=${CAPACITY_MIB:-256}
DURATION=${DURATION:-30}
OBJECT_KIB=${OBJECT_KIB:-100}
OBJECTS=$(( CAPACITY_MIB * 1024 * 10 / OBJECT_KIB ))
need_commands wrk:wrk taskset:util-linux
case "$TARGET" in cache | proxy) ;; *) echo "TARGET must be cache or proxy, not '$TARGET'" >&2; exit 2 ;; esac

ORIGIN=127.0.0.1:$(free_port)
CACHE=127.0.0.1:$(free_port)
PROXY=127.0.0.1:$(free_port)
printf "kind: origin\nlisten: '%s'\nobjects:\n  - { prefix: /obj/, count: %d, size: %dKiB, cache_control: 'public, max-age=3600' }\n" \
  "$ORIGIN" "$OBJECTS" "$OBJECT_KIB" >"$work/origin.yaml"
printf "kind: cluster\nsites:\n  - name: bench\n    hosts: [localhost]\n    origin: { addresses: ['%s'] }\n" "$ORIGIN" >"$work/cluster.yaml"
if [ "$TARGET" = cache ]; then
  node_capacity=$CAPACITY_MIB
else
  # Room for the whole working set, so every proxy request is a node hit.
  node_capacity=$(( CAPACITY_MIB * 12 ))
fi
printf "kind: cache\nid: mem\nlisten: '%s'\ncapacity: %dMiB\ncluster: cluster.yaml\n" "$CACHE" "$node_capacity" >"$work/cache.yaml"
cat >"$work/proxy.yaml" <<YAML
kind: proxy
id: mem-proxy
listen: '$PROXY'
cluster: cluster.yaml
cache_nodes:
  - { id: mem, address: '$CACHE' }
hot_tier: { capacity: ${CAPACITY_MIB}MiB }
YAML
cat >"$work/random.lua" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/obj/" .. math.random(0, $OBJECTS - 1), { ["Host"] = "localhost" })
end
LUA

taskset -c 0 "$FANOUT" --log warn origin "$work/origin.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log warn --workers 1 cache "$work/cache.yaml" & measured_pid=$!; pids+=($!)
wait_http "$ORIGIN"; wait_http "$CACHE"
url="http://$CACHE"
if [ "$TARGET" = proxy ]; then
  taskset -c 1 "$FANOUT" --log warn --workers 1 proxy "$work/proxy.yaml" & measured_pid=$!; pids+=($!)
  wait_http "$PROXY"
  url="http://$PROXY"
  # Fill the node with the whole working set first (through the node's own
  # listener), so the proxy's run measures its tier, not the origin.
  echo "filling the cache node with the working set..."
  for ((i = 0; i < OBJECTS; i += 1000)); do
    seq "$i" $(( i + 999 < OBJECTS - 1 ? i + 999 : OBJECTS - 1 )) |
      sed "s|^|http://$CACHE/obj/|" | xargs -P 8 -n 100 curl -sf -H 'Host: localhost' >/dev/null
    printf '\r  %d/%d' $(( i + 1000 < OBJECTS ? i + 1000 : OBJECTS )) "$OBJECTS"
  done
  echo
fi

rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$measured_pid/status"; }
idle=$(rss_mib)
echo "$TARGET: capacity ${CAPACITY_MIB} MiB; working set $OBJECTS x ${OBJECT_KIB} KiB = $(( OBJECTS * OBJECT_KIB / 1024 )) MiB (10x); idle RSS ${idle} MiB"

peak=0
taskset -c 0 wrk -t1 -c32 -d"${DURATION}s" -s "$work/random.lua" "$url" >"$work/wrk.txt" &
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
bound = 1.1 * cap + 64
print(f"requests/s {rps:.0f}")
print(f"RSS idle {idle:.1f} MiB, peak {peak:.1f} MiB, at the end {final:.1f} MiB")
print(f"peak / capacity = {peak / cap:.2f}   (peak - idle) / capacity = {(peak - idle) / cap:.2f}")
print(f"peak {peak:.0f} MiB against the bound 1.1 x capacity + 64 MiB = {bound:.0f} MiB: {peak / bound:.2f} of it, {'within' if peak <= bound else 'OVER'}")
PY
