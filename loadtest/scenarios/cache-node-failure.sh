#!/usr/bin/env bash
# Runs cache-node-failure.yaml the way it is meant to be run: a synthetic
# origin, three cache nodes and a proxy as separate processes on free
# loopback ports, and the scenario's fault step killing cache-2 (SIGKILL)
# 15 s in. Passes when no viewer saw an error: the proxy retries on the
# next ring node and its health checks take the dead node out.
#
# Usage: bash loadtest/scenarios/cache-node-failure.sh   (env: REPORTS=DIR)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --quiet
FANOUT=$PWD/target/release/fanout
work=$(mktemp -d)
REPORTS=${REPORTS:-$work}
mkdir -p "$REPORTS"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 200); do curl -s -o /dev/null "http://$1/$2" && return 0; sleep 0.05; done
  echo "nothing answers at $1" >&2; exit 1
}

ORIGIN=127.0.0.1:$(free_port)
PROXY=127.0.0.1:$(free_port)
PROXY_ADMIN=127.0.0.1:$(free_port)
cat >"$work/origin.yaml" <<YAML
kind: origin
listen: '$ORIGIN'
live:
  - name: main
    segment_duration: 2s
    renditions:
      - { name: 720p, bandwidth: 3000000 }
      - { name: 240p, bandwidth: 400000 }
objects:
  - { prefix: /static/, count: 500, size: 16KiB }
YAML
cat >"$work/cluster.yaml" <<YAML
kind: cluster
sites:
  - name: live
    hosts: [localhost]
    origin: { addresses: ['$ORIGIN'] }
health: { interval: 500ms, timeout: 250ms, rise: 2, fall: 2 }
YAML
printf 'kind: proxy\nid: proxy-1\nlisten: %s\nadmin_listen: %s\ncluster: cluster.yaml\ncache_nodes:\n' \
  "'$PROXY'" "'$PROXY_ADMIN'" >"$work/proxy.yaml"
"$FANOUT" origin "$work/origin.yaml" >"$work/origin.log" 2>&1 &
pids+=($!)
for i in 1 2 3; do
  addr=127.0.0.1:$(free_port)
  admin=127.0.0.1:$(free_port)
  printf "kind: cache\nid: cache-%s\nlisten: '%s'\nadmin_listen: '%s'\ncapacity: 256MiB\ncluster: cluster.yaml\n" \
    "$i" "$addr" "$admin" >"$work/cache-$i.yaml"
  printf "  - { id: cache-%s, address: '%s' }\n" "$i" "$addr" >>"$work/proxy.yaml"
  "$FANOUT" cache "$work/cache-$i.yaml" >"$work/cache-$i.log" 2>&1 &
  pids+=($!)
  [ "$i" = 2 ] && export FANOUT_VICTIM_PID=$!
  wait_http "$admin" readyz
done
"$FANOUT" proxy "$work/proxy.yaml" >"$work/proxy.log" 2>&1 &
pids+=($!)
wait_http "$PROXY_ADMIN" readyz

echo "cache-2 is pid $FANOUT_VICTIM_PID; the scenario kills it 15 s in."
"$FANOUT" loadtest run loadtest/scenarios/cache-node-failure.yaml \
  --target "$PROXY" --origin "$ORIGIN" \
  --json "$REPORTS/cache-node-failure.json" --html "$REPORTS/cache-node-failure.html" \
  --fail-if 'errors>0' --fail-if 'stall_ratio>0.01'
