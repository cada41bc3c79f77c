#!/usr/bin/env bash
# Cache-hit benchmark: requests/s and p99 latency of cache hits at 1 KiB,
# 100 KiB and 1 MiB, measured with wrk (64 connections), for:
#   fanout-cache    a Fanout cache node alone
#   fanout-cluster  a Fanout proxy + cache node (one `fanout up` process):
#                   the viewer's path, hits answered by the proxy's hot tier
#   nginx           NGINX proxy_cache
#   varnish         Varnish (default settings, malloc store)
#   haproxy         HAProxy's cache (one thread)
#   bare-hyper      the synthetic origin: a hyper server sending the bytes
#                   from memory, with no cache at all (the ceiling)
# Each server is pinned to core 1 (Fanout with --workers 1, NGINX with one
# worker), wrk to core 0. Targets are interleaved; figures are medians over
# ROUNDS rounds; "vs haproxy" is requests/s relative to HAProxy's cache and
# "vs best peer" relative to the best of NGINX, Varnish and HAProxy.
# The last four columns say who was the bottleneck: how busy core 1 (the
# server) and core 0 (wrk) were, and requests per busy second of core 1,
# also relative to the best peer. When wrk's core is saturated (large objects),
# req/s measures wrk, and requests per core-1-second is the server's figure.
#
# A last table checks the edge-tier targets: the proxy >= 1.0x HAProxy and
# >= 1.0x the best other peer at every size, 1 KiB hot hits >= 0.9x the
# cache node alone, and the cache node >= 1.1x the best peer at 1 MiB.
#
# Usage: loadtest/bench/cache_hits.sh    (env: ROUNDS=2 DURATION=8 CONNECTIONS=64 SIZES="1KiB 100KiB 1MiB")
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-64}
SIZES=${SIZES:-"1KiB 100KiB 1MiB"}
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
# Busy and total ticks of cores 0 (wrk) and 1 (the servers), from /proc/stat.
core_ticks() { awk '$1 == "cpu0" || $1 == "cpu1" { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat | tr '\n' ' '; }
# Usage: busy_fractions "BEFORE" "AFTER" -> "server-core client-core" busy fractions.
busy_fractions() {
  read -r b0 t0 b1 t1 <<<"$1"; read -r a0 u0 a1 u1 <<<"$2"
  python3 -c "print(f'{($a1 - $b1) / max($u1 - $t1, 1):.3f} {($a0 - $b0) / max($u0 - $t0, 1):.3f}')"
}
echo "cache hits: wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, $(( ROUNDS * 3 * ${#targets[@]} * DURATION / 60 + 1 )) minutes, TCP congestion control $congestion"
for round in $(seq "$ROUNDS"); do
  for size in $SIZES; do
    for t in "${targets[@]}"; do
      read -r name addr <<<"$t"
      before=$(core_ticks)
      out=$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H 'Host: localhost' "http://$addr/$size/1")
      busy=$(busy_fractions "$before" "$(core_ticks)")
      rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
      p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
      errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
      echo "$size $name $rps $p99 $busy ${errors:-none}" >>"$results"
      printf '.'
    done
  done
done
echo
HEADLINE_FILE=$work/headline python3 - "$results" <<'PY'
import re, statistics, sys
def ms(v):
    n, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rows = {}
errors = []
for line in open(sys.argv[1]):
    size, name, rps, p99, server, client, err = line.split(" ", 6)
    rows.setdefault((size, name), []).append((float(rps), ms(p99), float(server), float(client)))
    if err.strip() != "none":
        errors.append(f"{size} {name}: {err.strip()}")
def med(size, name, i):
    return statistics.median(r[i] for r in rows[(size, name)])
# Server CPU: core 1's busy time per request, so a target that leaves core 1
# idle because wrk's core 0 is saturated still shows what it costs.
PEERS = ("nginx", "varnish", "haproxy")
print(f"{'size':<7} {'target':<15} {'req/s':>9} {'p99 ms':>8} {'vs haproxy':>11} {'vs best peer':>13}"
      f" {'core 1 busy':>12} {'core 0 busy':>12} {'req/core-1-s':>13} {'vs best peer':>13}")
checks = []
for size in dict.fromkeys(k[0] for k in rows):
    names = list(dict.fromkeys(k[1] for k in rows))
    rps = {n: med(size, n, 0) for n in names}
    eff = {n: statistics.median(r[0] / max(r[2], 1e-3) for r in rows[(size, n)]) for n in names}
    best = max(rps[p] for p in PEERS)
    best_eff = max(eff[p] for p in PEERS)
    for name in names:
        p99, server, client = (med(size, name, i) for i in (1, 2, 3))
        print(f"{size:<7} {name:<15} {rps[name]:>9.0f} {p99:>8.2f} {rps[name] / rps['haproxy']:>11.2f}"
              f" {rps[name] / best:>13.2f} {server:>12.0%} {client:>12.0%} {eff[name]:>13.0f} {eff[name] / best_eff:>13.2f}")
    proxy = rps["fanout-cluster"]
    others = max(rps[p] for p in PEERS if p != "haproxy")
    checks.append((f"{size} proxy vs haproxy", proxy / rps["haproxy"], 1.0))
    checks.append((f"{size} proxy vs best other peer", proxy / others, 1.0))
    if size == "1KiB":
        checks.append((f"{size} proxy vs cache node alone", proxy / rps["fanout-cache"], 0.9))
    if size == "1MiB":
        checks.append((f"{size} cache node vs best peer", rps["fanout-cache"] / best, 1.1))
print()
print(f"{'target (req/s ratio)':<36} {'measured':>9} {'target':>7}")
for what, ratio, target in checks:
    print(f"{what:<36} {ratio:>9.2f} {'>= ' + format(target, '.1f'):>7}  {'met' if ratio >= target else 'NOT met'}")
for e in errors:
    print("errors:", e)
# The README's headline rows: the viewer's path (proxy with its hot tier).
import os
with open(os.environ["HEADLINE_FILE"], "a") as out:
    for size in ("1KiB", "1MiB"):
        if (size, "fanout-cluster") not in rows or errors:
            continue
        rps = {n: med(size, n, 0) for n in dict.fromkeys(k[1] for k in rows)}
        peer = max(PEERS, key=lambda p: rps[p])
        out.write(f"Cache hits through the proxy, {size} objects, HTTP/1.1\t"
                  f"{rps['fanout-cluster']:,.0f} req/s: {rps['fanout-cluster'] / rps[peer]:.2f}x {peer}, the best peer\n")
PY
HEADLINE_COMMAND="ROUNDS=$ROUNDS DURATION=$DURATION SIZES=\"$SIZES\" loadtest/bench/cache_hits.sh" record_headline
