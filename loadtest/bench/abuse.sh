#!/usr/bin/env bash
# Abuse at the wire: starts `fanout up` (a proxy with a plain and a TLS
# listener, one cache node) in front of the synthetic origin, and runs
# loadtest/abuse/abuse.py against the proxy's listeners and the cache
# node's while a well-behaved client keeps asking for a cached object.
#
# Each case prints one row: whether the server held (closed or limited the
# abusive connections), the well-behaved client's requests, errors and p99
# against its baseline, and the server's peak resident memory. The script
# exits 1 if any case failed.
#
# Usage: loadtest/bench/abuse.sh
#   HEADER_TIMEOUT=10s   the proxy's and node's header-read timeout (the
#                        default; CI sets 2s to keep the timed cases short)
#   MAX_CONNECTIONS=10000  their connection limit (the default)
#   RSS_BOUND_MIB=512    the memory the server must stay under
#   DURATION=5           seconds each case's abuse is repeated for
#   CASES="slowloris h2-rapid-reset"  run only these
#   TARGETS="proxy tls node"  the listeners attacked: the proxy's plain and
#                        TLS ones, the cache node's
#   P99_GATE=0           report a p99 over 2x the baseline without failing
source "$(dirname "$0")/lib.sh"

HEADER_TIMEOUT=${HEADER_TIMEOUT:-10s}
MAX_CONNECTIONS=${MAX_CONNECTIONS:-10000}
RSS_BOUND_MIB=${RSS_BOUND_MIB:-512}
DURATION=${DURATION:-5}
need_commands openssl:openssl taskset:util-linux

# The abusive clients are Python (raw frames, decoded with the `hpack`
# package); kept in a virtualenv between runs.
HPACK_VERSION=4.0.0
venv="${XDG_CACHE_HOME:-$HOME/.cache}/fanout/abuse-hpack-$HPACK_VERSION"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import hpack' 2>/dev/null; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "python3 -m venv failed: install python3-venv" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q "hpack==$HPACK_VERSION"
fi

ORIGIN=127.0.0.1:$(free_port)
PROXY=127.0.0.1:$(free_port)
PROXY_TLS=127.0.0.1:$(free_port)
CACHE=127.0.0.1:$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat >"$work/origin.yaml" <<YAML
kind: origin
listen: '$ORIGIN'
objects:
  - { prefix: /1KiB/, count: 10, size: 1KiB, cache_control: 'public, max-age=3600' }
  - { prefix: /1MiB/, count: 10, size: 1MiB, cache_control: 'public, max-age=3600' }
YAML
# The cache node takes the defaults (10 s, 10 000): it has no limits setting,
# since it faces proxies rather than viewers.
limits="{ header_read_timeout: $HEADER_TIMEOUT, max_connections: $MAX_CONNECTIONS }"
cat >"$work/up.yaml" <<YAML
kind: up
cluster:
  sites:
    - name: abuse
      hosts: [localhost]
      origin: { addresses: ['$ORIGIN'] }
cache_nodes:
  - { id: c1, listen: '$CACHE', capacity: 1GiB }
proxies:
  - id: p1
    listen: '$PROXY'
    limits: $limits
    tls:
      listen: '$PROXY_TLS'
      certificates: [{ cert_file: cert.pem, key_file: key.pem, names: [localhost], default: true }]
YAML

taskset -c 0 "$FANOUT" --log warn --workers 1 origin "$work/origin.yaml" & pids+=($!)
taskset -c 1 "$FANOUT" --log error --workers 1 up "$work/up.yaml" >/dev/null & pids+=($!)
server=$!
for t in "$ORIGIN" "$PROXY" "$CACHE"; do wait_http "$t"; done
for t in "$PROXY" "$CACHE"; do
  for size in 1KiB 1MiB; do curl -sf -o /dev/null -H 'Host: localhost' "http://$t/$size/1"; done
done

seconds() { python3 -c "import sys; v=sys.argv[1]; print(float(v[:-2])/1000 if v.endswith('ms') else float(v.rstrip('s')))" "$1"; }
args=(--viewer "$PROXY" --pid "$server" --rss-bound-mib "$RSS_BOUND_MIB"
  --header-timeout "$(seconds "$HEADER_TIMEOUT")" --max-connections "$MAX_CONNECTIONS")
declare -A url=([proxy]="http://$PROXY" [tls]="https://$PROXY_TLS"
  [node]="http://$CACHE?header_timeout=10&max_connections=10000")
for t in ${TARGETS:-proxy tls node}; do args+=(--target "$t=${url[$t]}"); done
args+=(--duration "$DURATION")
[ "${P99_GATE:-1}" = 0 ] && args+=(--no-p99-gate)
for c in ${CASES:-}; do args+=(--case "$c"); done
echo "abuse: fanout up on core 1 (one worker), header-read timeout $HEADER_TIMEOUT, connection limit $MAX_CONNECTIONS"
"$venv/bin/python" loadtest/abuse/abuse.py "${args[@]}"
kill -0 "$server" 2>/dev/null || { echo "fanout up has exited" >&2; exit 1; }
