#!/usr/bin/env bash
# Chaos tests on the compose cluster (examples/compose): every part in its
# own container with its own address on a private network. Run by .ci/run
# when a Docker engine answers; skipped with a message otherwise.
#
# Steps, under load from `fanout loadtest flash-crowd` against both proxies
# where a claim is about clients, each failing the suite if it does not hold:
#   1. kill a cache node: no failed client request;
#   2. disconnect the control-plane leader from the network: a new leader
#      commits writes; reconnected, the old leader catches up;
#   3. restart every container one by one, control nodes, cache nodes and
#      proxies (a rolling upgrade), under a live and static audience from
#      `fanout loadtest run` that, like a player given two addresses,
#      moves to the other proxy when one refuses it: no failed request;
#   4. stop the whole control plane: proxies and cache nodes keep serving,
#      and a restarted cache node starts from its saved state and serves.
#
# Usage: tests/cluster/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! docker info >/dev/null 2>&1; then
  echo "chaos: skipped: no Docker engine answers"
  exit 0
fi
command -v docker-compose >/dev/null || { echo "chaos: docker-compose is missing" >&2; exit 1; }

export COMPOSE_PROJECT_NAME=fanout-chaos-$$
compose_dir=examples/compose
dc() { (cd "$compose_dir" && docker-compose "$@"); }
cleanup() {
  status=$?
  if [ "$status" != 0 ]; then
    echo "chaos: failed; last logs:" >&2
    dc logs --tail=15 >&2 || true
  fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT

cargo build --release --locked --quiet --bin fanout
FANOUT=$PWD/target/release/fanout
# Fixed host ports, so a restarted proxy comes back where clients look.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export FANOUT_PROXY_1_PORT=$(free_port) FANOUT_PROXY_2_PORT=$(free_port)
"$compose_dir/up.sh" >/dev/null
P1=127.0.0.1:$FANOUT_PROXY_1_PORT
P2=127.0.0.1:$FANOUT_PROXY_2_PORT

# Waits (up to 30 s) until both proxies answer 200 for /o/0.
wait_serving() {
  for _ in $(seq 150); do
    if curl -sf -o /dev/null "http://$P1/o/0" && curl -sf -o /dev/null "http://$P2/o/0"; then
      return 0
    fi
    sleep 0.2
  done
  echo "chaos: proxies do not serve" >&2
  return 1
}

# One round: 200 clients ask proxy $1 for one object within 1 s: one of 20
# hot ones, or PATH ($2). Prints the tool's JSON (it exits non-zero on
# errors; the JSON says how many).
round() {
  "$FANOUT" --log error loadtest flash-crowd --target "$1" --host localhost \
    --path "${2:-/o/$((RANDOM % 20))}" --clients 200 --spread 1s --timeout 10s --json || true
}

# Objects from /o/1000 on are asked for only once each, below: the proxies'
# hot tiers answer the 20 hot ones themselves, so only a new object shows
# which cache node owns it.

# Load on both proxies for SECONDS, in rounds. Prints the requests that
# succeeded, failed, and were cache hits; with a second argument, also
# appends each round to that file: start time (ns), ok, failed, hits.
load() {
  local until=$((SECONDS + $1)) ok=0 failed=0 hits=0 start out
  while [ "$SECONDS" -lt "$until" ]; do
    for p in "$P1" "$P2"; do
      start=$(date +%s%N)
      out=$(round "$p")
      ok=$((ok + $(jq .ok <<<"$out")))
      failed=$((failed + $(jq .errors <<<"$out")))
      hits=$((hits + $(jq .hits <<<"$out")))
      [ -z "${2:-}" ] || echo "$start $(jq -r '[.ok, .errors, .hits] | @tsv' <<<"$out")" >>"$2"
    done
  done
  echo "$ok $failed $hits"
}

ratio() { awk -v h="$1" -v n="$2" 'BEGIN { printf "%.1f%%", n ? 100 * h / n : 0 }'; }

# Hit ratio of the rounds in file $1 that started before (when $3 is
# "before") or after time $2 (ns).
ratio_around() {
  awk -v t="$2" -v side="$3" '(side == "before") == ($1 < t) { ok += $2; hits += $4 }
    END { printf "%.1f%%", ok ? 100 * hits / ok : 0 }' "$1"
}

wait_serving
echo "chaos: cluster up (proxies $P1 $P2)"

# 1. A cache node dies under load.
rounds=$(mktemp)
load 12 "$rounds" >"$compose_dir/.load1" &
loader=$!
sleep 3
killed_at=$(date +%s%N)
dc kill cache-2 >/dev/null 2>&1
wait "$loader"
read -r ok failed hits <"$compose_dir/.load1"
echo "chaos: cache-2 killed under load: $ok requests, $failed failed, hit ratio $(ratio "$hits" "$ok") ($(ratio_around "$rounds" "$killed_at" before) before the kill, $(ratio_around "$rounds" "$killed_at" after) after)"
rm -f "$rounds"
[ "$failed" = 0 ] || { echo "chaos: requests failed when a cache node died" >&2; exit 1; }
[ "$ok" -gt 0 ] || { echo "chaos: the load did not run" >&2; exit 1; }
# Its keys went to the others: new objects are answered without it.
out=$(round "$P1" /o/1000)
[ "$(jq '.caches["fanout-cache-2"] // 0' <<<"$out")" = 0 ] \
  || { echo "chaos: the dead cache-2 still answers: $out" >&2; exit 1; }
dc start cache-2 >/dev/null 2>&1
# Back in service once the proxies' probes see it: it answers again.
back=no
for i in $(seq 30); do
  out=$(round "$P1" "/o/$((1000 + i))")
  if [ "$(jq '.caches["fanout-cache-2"] // 0' <<<"$out")" != 0 ]; then back=yes; break; fi
done
[ "$back" = yes ] || { echo "chaos: cache-2 never took keys back after its restart" >&2; exit 1; }
echo "chaos: keys rebalanced: none on cache-2 while it was dead, some again after its restart ($(jq -c .caches <<<"$out"))"

# 2. The control-plane leader loses the network.
ctl_on() {
  local node=$1
  shift
  dc exec -T "$node" /usr/local/bin/fanout --log error ctl --timeout 20s \
    --server control-1:7000,control-2:7000,control-3:7000 \
    --token-file /etc/fanout/secrets/write.token "$@"
}
leader=$(ctl_on control-1 --json status | jq -r .leader)
other=control-$((leader % 3 + 1))
revision_before=$(ctl_on "$other" --json status | jq .revision)
network=${COMPOSE_PROJECT_NAME}_fanout
container=$(dc ps -q "control-$leader")
started=$(date +%s%N)
docker network disconnect "$network" "$container"
ctl_on "$other" purge --tag chaos-while-partitioned >/dev/null
committed=$(( ($(date +%s%N) - started) / 1000000 ))
new_leader=$(ctl_on "$other" --json status | jq -r .leader)
[ "$new_leader" != "$leader" ] || { echo "chaos: no new leader" >&2; exit 1; }
# Compose's service name is a network alias: give it back on reconnect.
docker network connect --alias "control-$leader" "$network" "$container"
target=$(ctl_on "$other" --json status | jq .revision)
for _ in $(seq 100); do
  caught=$(dc exec -T "control-$leader" /usr/local/bin/fanout --log error ctl --server 127.0.0.1:7000 --token-file /etc/fanout/secrets/write.token --json status | jq .revision)
  [ "$caught" -ge "$target" ] && break
  sleep 0.2
done
[ "$caught" -ge "$target" ] || { echo "chaos: the old leader did not catch up ($caught < $target)" >&2; exit 1; }
echo "chaos: leader control-$leader disconnected: control-$new_leader leads, a write committed ${committed} ms after the cut (revision $revision_before -> $target); the old leader caught up after reconnecting"

# 3. Rolling restart of every container but the origin, under a steady
#    audience on both proxies; the audience stops once the last part is back.
report=$(mktemp)
"$FANOUT" --log error loadtest run tests/cluster/rolling-restart.yaml \
  --target "$P1" --target "$P2" --json "$report" >"$compose_dir/.load3" 2>&1 &
loader=$!
sleep 3
for part in control-1 control-2 control-3 cache-1 cache-2 cache-3 proxy-1 proxy-2; do
  dc restart "$part" >/dev/null 2>&1
  # The next part goes only once this one serves again.
  for _ in $(seq 100); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$(dc ps -q "$part")")" = healthy ] && break
    sleep 0.2
  done
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$(dc ps -q "$part")")" = healthy ] \
    || { echo "chaos: $part did not come back healthy" >&2; exit 1; }
done
kill -0 "$loader" 2>/dev/null \
  || { echo "chaos: the audience ended before the restarts did" >&2; cat "$compose_dir/.load3" >&2; exit 1; }
kill -INT "$loader"
wait "$loader" || true
jq -e .totals "$report" >/dev/null \
  || { echo "chaos: no load report" >&2; cat "$compose_dir/.load3" >&2; exit 1; }
read -r ok failed failovers hit_ratio stalls < <(jq -r \
  '[.totals.requests, .totals.errors, .totals.failovers, (.totals.hit_ratio // 0) * 100, .viewers.stalls] | @tsv' "$report")
echo "chaos: rolling restart of 3 control nodes, 3 cache nodes and 2 proxies under load: $ok requests, $failed failed, $failovers moved to the other proxy, hit ratio $(printf '%.1f' "$hit_ratio")%, $stalls playback stalls"
[ "$failed" = 0 ] || { echo "chaos: requests failed during the rolling restart: $(jq -c '.errors, .first_errors' "$report")" >&2; exit 1; }
[ "$ok" -gt 100 ] || { echo "chaos: the audience did not run" >&2; exit 1; }
[ "$failovers" -gt 0 ] || { echo "chaos: no request met a restarting proxy; the step tested nothing" >&2; exit 1; }
rm -f "$report"

# 4. The whole control plane stops; the data path keeps serving, and a
#    cache node restarted meanwhile starts from its saved state.
read -r ok failed hits < <(load 4)
echo "chaos: before stopping the control plane: $ok requests, $failed failed, hit ratio $(ratio "$hits" "$ok")"
dc stop control-1 control-2 control-3 >/dev/null 2>&1
dc restart cache-1 >/dev/null 2>&1
wait_serving
read -r ok failed hits < <(load 6)
echo "chaos: control plane down, cache-1 restarted: $ok requests, $failed failed, hit ratio $(ratio "$hits" "$ok")"
[ "$failed" = 0 ] || { echo "chaos: requests failed without the control plane" >&2; exit 1; }
# Read whole before searching: with pipefail, `dc logs | grep -q` fails
# when grep exits at the first match and dc logs dies of SIGPIPE.
cache1_logs=$(dc logs cache-1 2>&1)
grep -q 'from="state file"' <<<"$cache1_logs" \
  || { echo "chaos: cache-1 did not start from its saved state" >&2; exit 1; }
rm -f "$compose_dir/.load1" "$compose_dir/.load3"
echo "chaos: all steps passed"
