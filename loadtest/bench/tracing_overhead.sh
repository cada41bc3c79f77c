#!/usr/bin/env bash
# What tracing costs the data path: cache hits (1 KiB) through a Fanout
# proxy and cache node (`fanout up --workers 1`, pinned to core 1) measured
# with wrk on core 0, three ways:
#   off          no OTLP endpoint: nothing is recorded
#   unreachable  OTEL_EXPORTER_OTLP_ENDPOINT points at a closed port and
#                every request is sampled: spans are built, queued, and
#                dropped when the queue is full, since nothing takes them
#   collector    the same, with a collector that accepts and discards them
#   sampled-1%   the collector, with OTEL_TRACES_SAMPLER_ARG=0.01 (one trace
#                in a hundred kept): what production tracing would cost
# The last column is requests/s relative to "off".
#
# Usage: loadtest/bench/tracing_overhead.sh   (env: DURATION=8 CONNECTIONS=64)
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-64}
need_commands wrk:wrk taskset:util-linux

ORIGIN=127.0.0.1:$(free_port)
SINK=127.0.0.1:$(free_port)
CLOSED=127.0.0.1:$(free_port)
cat >"$work/origin.yaml" <<YAML
kind: origin
listen: '$ORIGIN'
objects:
  - { prefix: /obj/, count: 10, size: 1KiB, cache_control: 'public, max-age=3600' }
YAML
"$FANOUT" origin "$work/origin.yaml" >"$work/origin.log" 2>&1 &
pids+=($!)
# A collector that answers every export with 200 and keeps nothing.
python3 - "$SINK" >"$work/sink.log" 2>&1 <<'PY' &
import sys, http.server
host, port = sys.argv[1].rsplit(":", 1)
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((host, int(port)), H).serve_forever()
PY
pids+=($!)
wait_http "$ORIGIN"

run() { # NAME ENDPOINT [SAMPLE_RATIO]
  local proxy=127.0.0.1:$(free_port) cache=127.0.0.1:$(free_port)
  cat >"$work/up-$1.yaml" <<YAML
kind: up
cluster:
  sites:
    - name: bench
      hosts: [localhost]
      origin: { addresses: ['$ORIGIN'] }
cache_nodes:
  - { id: c1, listen: '$cache', capacity: 256MiB }
proxies:
  - { id: p1, listen: '$proxy' }
YAML
  if [ -n "$2" ]; then
    OTEL_EXPORTER_OTLP_ENDPOINT=$2 OTEL_TRACES_SAMPLER=parentbased_traceidratio \
      OTEL_TRACES_SAMPLER_ARG=${3:-1} taskset -c 1 "$FANOUT" --workers 1 up "$work/up-$1.yaml" >"$work/up-$1.log" 2>&1 &
  else
    taskset -c 1 "$FANOUT" --workers 1 up "$work/up-$1.yaml" >"$work/up-$1.log" 2>&1 &
  fi
  local pid=$!
  wait_http "$proxy"
  curl -s -o /dev/null -H 'Host: localhost' "http://$proxy/obj/1"
  taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H 'Host: localhost' "http://$proxy/obj/1" >"$work/wrk-$1.out"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk-$1.out")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk-$1.out")
  echo "$1 $rps $p99"
}

{
  run off ""
  run unreachable "http://$CLOSED"
  run collector "http://$SINK"
  run sampled-1% "http://$SINK" 0.01
} >"$work/results"
awk 'NR == 1 {base = $2} {printf "%-12s %10.0f req/s  p99 %-8s  %.2fx\n", $1, $2, $3, $2 / base}' "$work/results"
