#!/usr/bin/env bash
# Cache hits over TLS and HTTP/2, the way players connect: requests/s and
# p99 of hits at 1 KiB, 100 KiB and 1 MiB, measured with h2load (one thread,
# CONNECTIONS connections, STREAMS concurrent streams each), for:
#   fanout-proxy    a Fanout proxy terminating TLS, its hot tier answering,
#                   with its cache node in the same process (`fanout up`)
#   haproxy         HAProxy's cache behind its own TLS + HTTP/2 (one thread)
#   nginx           NGINX proxy_cache behind TLS + HTTP/2 (one worker)
# Each server is pinned to core 1, h2load to core 0. Targets are interleaved;
# figures are medians over ROUNDS rounds; "vs haproxy" is requests/s
# relative to HAProxy, "vs best" to the best of the others. Every server
# offers TLS 1.3 with its defaults and negotiates h2 by ALPN.
#
# Usage: loadtest/bench/cache_hits_h2.sh  (env: ROUNDS=3 DURATION=8 CONNECTIONS=32 STREAMS=10 SIZES="1KiB 100KiB 1MiB")
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-32}
STREAMS=${STREAMS:-10}
SIZES=${SIZES:-"1KiB 100KiB 1MiB"}
need_commands nginx:nginx-light haproxy:haproxy h2load:nghttp2-client taskset:util-linux openssl:openssl
make_certificate

ORIGIN=127.0.0.1:$(free_port)
UP_PROXY=127.0.0.1:$(free_port)
UP_TLS=127.0.0.1:$(free_port)
UP_CACHE=127.0.0.1:$(free_port)
NGINX=127.0.0.1:$(free_port)
HAPROXY=127.0.0.1:$(free_port)

objects=""
for size in $SIZES; do
  objects+="  - { prefix: /$size/, count: 10, size: $size, cache_control: 'public, max-age=3600' }"$'\n'
done
printf 'kind: origin\nlisten: %s\nobjects:\n%s' "'$ORIGIN'" "$objects" >"$work/origin.yaml"
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
  - id: p1
    listen: '$UP_PROXY'
    tls:
      listen: '$UP_TLS'
      certificates: [{ cert_file: tls.crt, key_file: tls.key, names: [localhost] }]
YAML

taskset -c 0 "$FANOUT" --log warn --workers 1 origin "$work/origin.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log warn --workers 1 up "$work/up.yaml" >/dev/null & pids+=($!)
start_nginx_tls "$NGINX" "$ORIGIN" 1
start_haproxy_tls "$HAPROXY" "$ORIGIN" 1
wait_http "$ORIGIN"
wait_http "$UP_PROXY"

targets=("fanout-proxy $UP_TLS" "haproxy $HAPROXY" "nginx $NGINX")
for t in "${targets[@]}"; do
  read -r name addr <<<"$t"
  for _ in $(seq 100); do curl -sk -o /dev/null "https://$addr/" -H 'Host: localhost' && break; sleep 0.05; done
  # Fill every cache (twice: some keep an object on its second request).
  for size in $SIZES; do
    for _ in 1 2; do
      curl -sfk --http2 -o /dev/null -H 'Host: localhost' "https://$addr/$size/1" || { echo "$name: GET /$size/1 over TLS failed" >&2; exit 1; }
    done
  done
  proto=$(curl -sk --http2 -o /dev/null -w '%{http_version}' "https://$addr/1KiB/1")
  [ "$proto" = 2 ] || { echo "$name did not speak HTTP/2 (got $proto)" >&2; exit 1; }
done

results=$work/results.txt
echo "cache hits over TLS + HTTP/2: h2load -t1 -c$CONNECTIONS -m$STREAMS -D$DURATION, $ROUNDS rounds, TCP congestion control $congestion"
for round in $(seq "$ROUNDS"); do
  for size in $SIZES; do
    for t in "${targets[@]}"; do
      read -r name addr <<<"$t"
      out=$(taskset -c 0 h2load -t1 -c"$CONNECTIONS" -m"$STREAMS" -D"$DURATION" --warm-up-time=1 "https://localhost:${addr##*:}/$size/1" 2>&1)
      rps=$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($i ~ /req\/s/) { gsub(",", "", $(i-1)); print $(i-1) } }' <<<"$out")
      failed=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) print $i }' <<<"$out")
      # h2load's "time for request" line: min max mean sd; its p99 is not
      # printed, so the mean + 2 sd stands in for the tail.
      tail=$(awk '/^time for request:/ { print $4, $5, $6, $7 }' <<<"$out")
      echo "$size $name ${rps:-0} ${failed:-?} $tail" >>"$results"
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
failed = {}
for line in open(sys.argv[1]):
    size, name, rps, fail, *tail = line.split()
    mean, sd = (ms(tail[2]), ms(tail[3])) if len(tail) == 4 else (float("nan"),) * 2
    rows.setdefault((size, name), []).append((float(rps), mean, sd))
    failed[(size, name)] = failed.get((size, name), 0) + (int(fail) if fail.isdigit() else 0)
print(f"{'size':<7} {'target':<13} {'req/s':>9} {'mean ms':>8} {'+2sd ms':>8} {'vs haproxy':>11} {'vs best other':>14} {'failed':>7}")
for size in dict.fromkeys(k[0] for k in rows):
    med = {name: statistics.median(r[0] for r in rows[(s, name)]) for (s, name) in rows if s == size}
    for name in med:
        rs = rows[(size, name)]
        mean = statistics.median(r[1] for r in rs)
        tail = statistics.median(r[1] + 2 * r[2] for r in rs)
        best_other = max(v for n, v in med.items() if n != name)
        print(f"{size:<7} {name:<13} {med[name]:>9.0f} {mean:>8.2f} {tail:>8.2f} {med[name] / med['haproxy']:>11.2f} {med[name] / best_other:>14.2f} {failed[(size, name)]:>7}")
PY
