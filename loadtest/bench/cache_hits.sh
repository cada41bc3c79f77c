#!/usr/bin/env bash
# Cache-hit benchmark: requests/s and p99 latency of cache hits at 1 KiB,
# 100 KiB and 1 MiB, measured with wrk (64 connections), for:
#   fanout-cache    a Fanout cache node alone
#   fanout-cluster  a Fanout proxy + cache node (one `fanout up` process)
#   nginx           NGINX proxy_cache
#   varnish         Varnish (default settings, malloc store)
#   haproxy         HAProxy's cache (one thread)
#   bare-hyper      the synthetic origin: a hyper server sending the bytes
#                   from memory, with no cache at all (the ceiling)
# Each server is pinned to core 1 (Fanout with --workers 1, NGINX with one
# worker), wrk to core 0. Targets are interleaved; figures are medians over
# ROUNDS rounds; the last column is requests/s relative to Varnish.
#
# Usage: loadtest/bench/cache_hits.sh    (env: ROUNDS=2 DURATION=8 CONNECTIONS=64)
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-64}
SIZES="1KiB 100KiB 1MiB"
need_commands nginx:nginx-light varnishd:varnish haproxy:haproxy wrk:wrk taskset:util-linux

ORIGIN=127.0.0.1:$(free_port)
BARE=127.0.0.1:$(free_port)
CACHE=127.0.0.1:$(free_port)
UP_PROXY=127.0.0.1:$(free_port)
UP_CACHE=127.0.0.1:$(free_port)
NGINX=127.0.0.1:$(free_port)
VARNISH=127.0.0.1:$(free_port)
HAPROXY=127.0.0.1:$(free_port)

objects=""
for size in $SIZES; do
  objects+="  - { prefix: /$size/, count: 10, size: $size, cache_control: 'public, max-age=3600' }"$'\n'
done
for name in origin bare; do
  addr=$ORIGIN; [ "$name" = bare ] && addr=$BARE
  printf 'kind: origin\nlisten: %s\nobjects:\n%s' "'$addr'" "$objects" >"$work/$name.yaml"
done
cat >"$work/cluster.yaml" <<YAML
kind: cluster
sites:
  - name: bench
    hosts: [localhost]
    origin: { addresses: ['$ORIGIN'] }
YAML
printf "kind: cache\nid: bench-cache\nlisten: '%s'\ncapacity: 1GiB\ncluster: cluster.yaml\n" "$CACHE" >"$work/cache.yaml"
cat >"$work/up.yaml" <<YAML
kind: up
cluster:
  sites:
    - name: bench
      hosts: [localhost]
      origin: { addresses: ['$ORIGIN'] }
cache_nodes:
  - { id: c1, listen: '$UP_CACHE', capacity: 1GiB }
proxies:
  - { id: p1, listen: '$UP_PROXY' }
YAML

taskset -c 0 "$FANOUT" --log warn --workers 1 origin "$work/origin.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log warn --workers 1 origin "$work/bare.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log warn --workers 1 cache "$work/cache.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log warn --workers 1 up "$work/up.yaml" >/dev/null & pids+=($!)
start_nginx "$NGINX" "$ORIGIN" 1
start_varnish "$VARNISH" "$ORIGIN" 1
start_haproxy "$HAPROXY" "$ORIGIN" 1
for t in "$ORIGIN" "$BARE" "$CACHE" "$UP_PROXY" "$NGINX" "$VARNISH" "$HAPROXY"; do wait_http "$t"; done

targets=("fanout-cache $CACHE" "fanout-cluster $UP_PROXY" "nginx $NGINX" "varnish $VARNISH" "haproxy $HAPROXY" "bare-hyper $BARE")
# Fill every cache, and check each answers with the object.
for size in $SIZES; do
  for t in "${targets[@]}"; do
    read -r name addr <<<"$t"
    for _ in 1 2; do curl -sf -o /dev/null -H 'Host: localhost' "http://$addr/$size/1" || { echo "$name: GET /$size/1 failed" >&2; exit 1; }; done
  done
done

results=$work/results.txt
echo "cache hits: wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, $(( ROUNDS * 3 * ${#targets[@]} * DURATION / 60 + 1 )) minutes"
for round in $(seq "$ROUNDS"); do
  for size in $SIZES; do
    for t in "${targets[@]}"; do
      read -r name addr <<<"$t"
      out=$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H 'Host: localhost' "http://$addr/$size/1")
      rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
      p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
      errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
      echo "$size $name $rps $p99 ${errors:-none}" >>"$results"
      printf '.'
    done
  done
done
echo
python3 - "$results" <<'PY'
import re, statistics, sys
def ms(v):
    n, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rows = {}
errors = []
for line in open(sys.argv[1]):
    size, name, rps, p99, err = line.split(" ", 4)
    rows.setdefault((size, name), []).append((float(rps), ms(p99)))
    if err.strip() != "none":
        errors.append(f"{size} {name}: {err.strip()}")
print(f"{'size':<7} {'target':<15} {'req/s':>9} {'p99 ms':>8} {'req/s vs varnish':>17}")
for size in dict.fromkeys(k[0] for k in rows):
    ref = statistics.median(r for r, _ in rows[(size, "varnish")])
    for name in dict.fromkeys(k[1] for k in rows):
        rps = statistics.median(r for r, _ in rows[(size, name)])
        p99 = statistics.median(p for _, p in rows[(size, name)])
        print(f"{size:<7} {name:<15} {rps:>9.0f} {p99:>8.2f} {rps / ref:>17.2f}")
for e in errors:
    print("errors:", e)
PY
