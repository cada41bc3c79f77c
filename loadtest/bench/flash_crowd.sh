#!/usr/bin/env bash
# Flash-crowd benchmark: CLIENTS clients, each on a connection opened
# beforehand, ask for one new object within 100 ms while the origin takes
# 200 ms to answer: the moment a new live segment appears.
#
# For each target it prints p50/p99/max latency (scheduled send -> last body
# byte) and how many requests reached the origin (a cache should send one),
# then each p99 as a ratio to NGINX's. Targets, all in front of the same
# synthetic origin, in one run on this machine:
#   fanout-cache    a Fanout cache node alone
#   fanout-cluster  a Fanout proxy + cache node (one `fanout up` process):
#                   the crowd collapses at the proxy's hot tier, then at the node
#   nginx           NGINX proxy_cache with proxy_cache_lock on
#   varnish         Varnish with its default request coalescing
#   haproxy         HAProxy's cache (which does not coalesce)
# The server under test is pinned to core 1, the load generator and origin to
# core 0 (`taskset`), so neither steals the other's CPU.
#
# Usage: loadtest/bench/flash_crowd.sh        (env: CLIENTS=1000 ROUNDS=3 SIZES="1KiB 1MiB")
# Needs root for apt-get when nginx or varnish is missing.
source "$(dirname "$0")/lib.sh"

CLIENTS=${CLIENTS:-1000}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"1KiB 1MiB"}
need_commands nginx:nginx-light varnishd:varnish haproxy:haproxy taskset:util-linux

ORIGIN=127.0.0.1:$(free_port)
CACHE=127.0.0.1:$(free_port)
UP_PROXY=127.0.0.1:$(free_port)
UP_CACHE=127.0.0.1:$(free_port)
NGINX=127.0.0.1:$(free_port)
VARNISH=127.0.0.1:$(free_port)
HAPROXY=127.0.0.1:$(free_port)

objects=""
faults=""
for size in $SIZES; do
  objects+="  - { prefix: /$size/, count: 10000, size: $size, cache_control: 'public, max-age=300' }"$'\n'
  faults+="  - { path: '/$size/*', latency: 200ms }"$'\n'
done
cat > "$work/origin.yaml" <<YAML
kind: origin
listen: '$ORIGIN'
objects:
$objects
faults:
$faults
YAML
cat > "$work/cluster.yaml" <<YAML
kind: cluster
sites:
  - name: bench
    hosts: [localhost]
    origin: { addresses: ['$ORIGIN'], response_timeout: 30s }
YAML
cat > "$work/cache.yaml" <<YAML
kind: cache
id: bench-cache
listen: '$CACHE'
capacity: 4GiB
cluster: cluster.yaml
YAML
cat > "$work/up.yaml" <<YAML
kind: up
cluster:
  sites:
    - name: bench
      hosts: [localhost]
      origin: { addresses: ['$ORIGIN'], response_timeout: 30s }
cache_nodes:
  - { id: c1, listen: '$UP_CACHE', capacity: 4GiB }
proxies:
  - { id: p1, listen: '$UP_PROXY' }
YAML
taskset -c 0 "$FANOUT" --log warn --workers 1 origin "$work/origin.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log warn --workers 1 cache "$work/cache.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log warn --workers 1 up "$work/up.yaml" >/dev/null & pids+=($!)
start_nginx "$NGINX" "$ORIGIN" 1
start_varnish "$VARNISH" "$ORIGIN" 1
start_haproxy "$HAPROXY" "$ORIGIN" 1
for t in "$ORIGIN" "$CACHE" "$UP_PROXY" "$NGINX" "$VARNISH" "$HAPROXY"; do wait_http "$t"; done

targets=("fanout-cache $CACHE" "fanout-cluster $UP_PROXY" "nginx $NGINX" "varnish $VARNISH" "haproxy $HAPROXY")
results=$work/results.jsonl
n=0
echo "flash crowd: $CLIENTS clients within 100 ms, origin latency 200 ms, $ROUNDS rounds after a warm-up"
for size in $SIZES; do
  for round in $(seq 0 "$ROUNDS"); do
    for t in "${targets[@]}"; do
      read -r name addr <<<"$t"
      n=$((n + 1))
      path="/$size/$n"
      line=$(taskset -c 0 "$FANOUT" --log warn loadtest flash-crowd --target "$addr" --path "$path" \
        --clients "$CLIENTS" --spread 100ms --origin "$ORIGIN" --json || true)
      # Round 0 warms connection pools and is not counted.
      if [ "$round" -gt 0 ]; then
        echo "{\"target\":\"$name\",\"size\":\"$size\",\"result\":$line}" >>"$results"
      fi
      printf '.'
    done
  done
done
echo
HEADLINE_FILE=$work/headline CLIENTS=$CLIENTS python3 - "$results" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
table = {}
for r in rows:
    table.setdefault((r["size"], r["target"]), []).append(r["result"])
print(f"{'size':<6} {'target':<15} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'origin reqs':>12} {'failed':>7} {'p99/nginx':>10}")
for size in dict.fromkeys(r["size"] for r in rows):
    med = lambda t, k: statistics.median(x[k] for x in table[(size, t)])
    ref = med("nginx", "p99_ms")
    for target in dict.fromkeys(r["target"] for r in rows):
        res = table[(size, target)]
        origin = "/".join(str(x["origin_requests"]) for x in res)
        failed = sum(x["errors"] for x in res)
        print(f"{size:<6} {target:<15} {med(target,'p50_ms'):>8.1f} {med(target,'p99_ms'):>8.1f} {max(x['max_ms'] for x in res):>8.1f} {origin:>12} {failed:>7} {med(target,'p99_ms')/ref:>10.2f}")
print("p50/p99: medians over rounds; origin reqs: per round (1 is ideal); ratio < 1 is faster than NGINX")
# The edge-tier targets for the viewer's path (through the proxy).
limits = {"1KiB": 250, "1MiB": 600}
print()
for size in dict.fromkeys(r["size"] for r in rows):
    res = table.get((size, "fanout-cluster"))
    if not res:
        continue
    p99 = statistics.median(x["p99_ms"] for x in res)
    one = all(x["origin_requests"] == 1 for x in res)
    print(f"{size} through the proxy: origin requests {'1 per round: met' if one else 'more than 1: NOT met'}", end="")
    if size in limits:
        print(f"; p99 {p99:.0f} ms against <= {limits[size]} ms: {'met' if p99 <= limits[size] else 'NOT met'}")
    else:
        print()
    # The README's headline row: the 1 MiB flash crowd through the proxy.
    if size == "1MiB" and not any(x["errors"] for x in res):
        peers = {t: statistics.median(x["p99_ms"] for x in table[(size, t)])
                 for t in ("nginx", "varnish", "haproxy") if (size, t) in table}
        best = min(peers, key=peers.get)
        origin = max(x["origin_requests"] for x in res)
        with open(os.environ["HEADLINE_FILE"], "a") as out:
            out.write(f"Flash crowd: {os.environ['CLIENTS']} viewers ask for one new 1 MiB object within 100 ms, origin 200 ms away\t"
                      f"{origin} origin request{'s' if origin != 1 else ''}; p99 {p99:.0f} ms, {p99 / peers[best]:.2f}x {best}'s, the best peer\n")
PY
HEADLINE_COMMAND="CLIENTS=$CLIENTS ROUNDS=$ROUNDS SIZES=\"$SIZES\" loadtest/bench/flash_crowd.sh" record_headline
