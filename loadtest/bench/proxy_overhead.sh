#!/usr/bin/env bash
# Proxy overhead: requests/s and p99 of a 1 KiB cache hit through a proxy
# in front of one Fanout cache node, against the cache node alone:
#   cache-alone     wrk → Fanout cache node
#   fanout-proxy    wrk → Fanout proxy → cache node
#   nginx-proxy     wrk → NGINX (proxy_pass, keep-alive, no cache) → cache node
#   haproxy-proxy   wrk → HAProxy (one thread, keep-alive) → cache node
# The cache node and every proxy share core 1 (Fanout with --workers 1,
# NGINX with one worker, HAProxy with one thread); wrk runs on core 0. So
# the figure is what the proxy hop costs on the same CPU budget. Targets
# are interleaved; figures are medians over ROUNDS rounds; the last column
# is requests/s relative to the cache node alone.
#
# Usage: loadtest/bench/proxy_overhead.sh   (env: ROUNDS=2 DURATION=8 CONNECTIONS=64 SIZE=1KiB)
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-64}
SIZE=${SIZE:-1KiB}
need_commands nginx:nginx-light haproxy:haproxy wrk:wrk taskset:util-linux

ORIGIN=127.0.0.1:$(free_port)
CACHE=127.0.0.1:$(free_port)
PROXY=127.0.0.1:$(free_port)
NGINX=127.0.0.1:$(free_port)
HAPROXY=127.0.0.1:$(free_port)

printf "kind: origin\nlisten: '%s'\nobjects:\n  - { prefix: /o/, count: 10, size: %s, cache_control: 'public, max-age=3600' }\n" \
  "$ORIGIN" "$SIZE" >"$work/origin.yaml"
cat >"$work/cluster.yaml" <<YAML
kind: cluster
sites:
  - name: bench
    hosts: [localhost]
    origin: { addresses: ['$ORIGIN'] }
YAML
printf "kind: cache\nid: c1\nlisten: '%s'\ncapacity: 256MiB\ncluster: cluster.yaml\n" "$CACHE" >"$work/cache.yaml"
printf "kind: proxy\nid: p1\nlisten: '%s'\ncluster: cluster.yaml\ncache_nodes: [{ id: c1, address: '%s' }]\n" \
  "$PROXY" "$CACHE" >"$work/proxy.yaml"

taskset -c 0 "$FANOUT" --log warn --workers 1 origin "$work/origin.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log warn --workers 1 cache "$work/cache.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log warn --workers 1 proxy "$work/proxy.yaml" & pids+=($!)
start_nginx_proxy "$NGINX" "$CACHE" 1
start_haproxy_proxy "$HAPROXY" "$CACHE" 1
for t in "$ORIGIN" "$CACHE" "$PROXY" "$NGINX" "$HAPROXY"; do wait_http "$t"; done

targets=("cache-alone $CACHE" "fanout-proxy $PROXY" "nginx-proxy $NGINX" "haproxy-proxy $HAPROXY")
for t in "${targets[@]}"; do
  read -r name addr <<<"$t"
  for _ in 1 2; do
    curl -sf -o /dev/null -H 'Host: localhost' "http://$addr/o/1" || { echo "$name: GET /o/1 failed" >&2; exit 1; }
  done
  # Every path must be a cache hit at the node, or the comparison is void.
  head=$(curl -sfI -H 'Host: localhost' "http://$addr/o/1")
  grep -qi '^cache-status: .*hit' <<<"$head" \
    || { echo "$name: /o/1 is not a cache hit" >&2; exit 1; }
done

results=$work/results.txt
echo "proxy overhead, $SIZE hits: wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, about $(( ROUNDS * ${#targets[@]} * DURATION / 60 + 1 )) minutes"
for round in $(seq "$ROUNDS"); do
  for t in "${targets[@]}"; do
    read -r name addr <<<"$t"
    out=$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H 'Host: localhost' "http://$addr/o/1")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    echo "$name $rps $p99 ${errors:-none}" >>"$results"
    printf '.'
  done
done
echo
python3 - "$results" <<'PY'
import re, statistics, sys
def ms(v):
    n, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rows, errors = {}, []
for line in open(sys.argv[1]):
    name, rps, p99, err = line.split(" ", 3)
    rows.setdefault(name, []).append((float(rps), ms(p99)))
    if err.strip() != "none":
        errors.append(f"{name}: {err.strip()}")
ref = statistics.median(r for r, _ in rows["cache-alone"])
print(f"{'target':<15} {'req/s':>9} {'p99 ms':>8} {'req/s vs cache alone':>21}")
for name, samples in rows.items():
    rps = statistics.median(r for r, _ in samples)
    p99 = statistics.median(p for _, p in samples)
    print(f"{name:<15} {rps:>9.0f} {p99:>8.2f} {rps / ref:>21.2f}")
for e in errors:
    print("errors:", e)
PY
