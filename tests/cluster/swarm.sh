#!/usr/bin/env bash
# The Docker Swarm stack (deploy/swarm) run for real, under a live audience
# from `fanout loadtest run` on both proxies' published ports:
#   1. scale the cache service 3 -> 4: the new task registers with the
#      control plane and new keys land on it;
#   2. scale it back to 4 -> 3: keys come back to the others;
#   3. roll the proxies to a new image tag with `docker service update`,
#      one proxy service after the other (the audience, like a player given
#      two addresses, moves to the other proxy while one restarts);
# with no failed viewer request. The swarm is left as it was found: a
# swarm this script initialised is left again, and whatever it created
# (stack, volumes, image tags) is removed. Run by .ci/run after chaos.sh
# when a Docker engine answers; skipped with a message otherwise.
#
# Usage: tests/cluster/swarm.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! docker info >/dev/null 2>&1; then
  echo "swarm: skipped: no Docker engine answers"
  exit 0
fi
swarm_state=$(docker info --format '{{.Swarm.LocalNodeState}}')
case "$swarm_state" in
  inactive) ;;
  active)
    [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] \
      || { echo "swarm: skipped: this engine is a swarm worker, not a manager"; exit 0; } ;;
  *) echo "swarm: skipped: the engine's swarm is $swarm_state"; exit 0 ;;
esac

stack=fanout-swarm-$$
work=$(mktemp -d)
cp -r deploy/swarm/. "$work/"
initialised=no
# swarm init creates docker_gwbridge, and leaving does not remove it.
had_gwbridge=$(docker network inspect docker_gwbridge >/dev/null 2>&1 && echo yes || echo no)
cleanup() {
  status=$?
  if [ "$status" != 0 ]; then
    echo "swarm: failed; last logs:" >&2
    for s in $(docker stack services -q "$stack" 2>/dev/null); do
      docker service logs --tail 10 "$s" >&2 2>&1 || true
    done
    [ -f "$work/load.out" ] && tail -5 "$work/load.out" >&2
  fi
  [ -n "${loader:-}" ] && kill "$loader" 2>/dev/null
  docker stack rm "$stack" >/dev/null 2>&1 || true
  # Volumes and the network go only once the stack's containers have.
  for _ in $(seq 100); do
    [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$stack")" ] && break
    sleep 0.3
  done
  for _ in $(seq 50); do
    docker network rm "${stack}_fanout" >/dev/null 2>&1 || true
    docker network inspect "${stack}_fanout" >/dev/null 2>&1 || break
    sleep 0.3
  done
  docker volume rm $(docker volume ls -q --filter "label=com.docker.stack.namespace=$stack") >/dev/null 2>&1 || true
  docker image rm "fanout:$stack-a" "fanout:$stack-b" >/dev/null 2>&1 || true
  if [ "$initialised" = yes ]; then
    docker swarm leave --force >/dev/null 2>&1
    [ "$had_gwbridge" = yes ] || docker network rm docker_gwbridge >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

deploy/build-local-image.sh fanout:local >"$work/image.log" 2>&1 \
  || { cat "$work/image.log" >&2; exit 1; }
FANOUT=$PWD/target/release/fanout
# Two tags of one image: the proxies are rolled from the first to the second.
docker tag fanout:local "fanout:$stack-a"
docker tag fanout:local "fanout:$stack-b"

if [ "$swarm_state" = inactive ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  initialised=yes
fi

# The parts and fanout ctl run as uid 10001: they read the secrets, and
# ctl the stack's files, through mounts of this directory.
chmod 755 "$work"
mkdir -p "$work/secrets"
chmod 755 "$work/secrets"
for s in cluster.secret write.token; do head -c 24 /dev/urandom | base64 >"$work/secrets/$s"; done
chmod 644 "$work/secrets/"*
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port1=$(free_port) port2=$(free_port)
(cd "$work" && FANOUT_IMAGE="fanout:$stack-a" FANOUT_PROXY_1_PORT=$port1 FANOUT_PROXY_2_PORT=$port2 \
  docker stack deploy --resolve-image never -c fanout-stack.yml -c demo-origin.yml "$stack" >deploy.log 2>&1) \
  || { cat "$work/deploy.log" >&2; exit 1; }

# fanout ctl from a container on the stack's network.
ctl() {
  docker run --rm --network "${stack}_fanout" -v "$work:/stack:ro" "fanout:$stack-a" \
    --log error ctl --timeout 20s --server control-1:7000,control-2:7000,control-3:7000 \
    --token-file /stack/secrets/write.token "$@"
}
for _ in $(seq 120); do ctl status >/dev/null 2>&1 && break; sleep 1; done
ctl apply -f /stack/config/cluster.yaml >/dev/null || { echo "swarm: the cluster config was not applied" >&2; exit 1; }
P=127.0.0.1:$port1 P2=127.0.0.1:$port2
serving() { curl -sf -o /dev/null "http://$P/o/0" && curl -sf -o /dev/null "http://$P2/o/0"; }
for _ in $(seq 150); do serving && break; sleep 0.4; done
serving || { echo "swarm: the proxies do not serve on $P and $P2" >&2; exit 1; }
members() { ctl --json members | jq -r '[.[] | select(.kind == "cache" and .state == "active") | .id] | sort | join(" ")'; }
echo "swarm: stack $stack up (proxies on $P and $P2; cache nodes: $(members))"

# Which cache node answers for each of 40 objects never asked for before
# (from /o/$1 on): prints "node count" lines.
owners() {
  for i in $(seq "$1" $(($1 + 39))); do
    curl -sf -D - -o /dev/null -H 'Host: localhost' "http://$P/o/$i" | tr -d '\r' \
      | awk -F': ' 'tolower($1) == "cache-status" { split($2, c, ";"); print c[1] }' \
      | grep '^fanout-cache' || true
  done | sort | uniq -c | awk '{ print $2 "=" $1 }' | tr '\n' ' '
}

# The audience: live viewers and page assets on both proxies; a request a
# stopping proxy refuses, or drops before any answer, goes to the other.
"$FANOUT" --log error loadtest run tests/cluster/rolling-restart.yaml \
  --target "$P" --target "$P2" --json "$work/report.json" >"$work/load.out" 2>&1 &
loader=$!
sleep 3

# 1. Scale up: the fourth task registers and takes keys.
docker service scale --detach=false "${stack}_cache=4" >/dev/null 2>&1
for _ in $(seq 60); do [ "$(members)" = "cache-1 cache-2 cache-3 cache-4" ] && break; sleep 0.5; done
[ "$(members)" = "cache-1 cache-2 cache-3 cache-4" ] \
  || { echo "swarm: cache-4 did not join: members are $(members)" >&2; exit 1; }
next=1000
took=no
for _ in $(seq 20); do
  seen=$(owners $next)
  next=$((next + 40))
  if grep -q 'fanout-cache-4=' <<<"$seen"; then took=yes; break; fi
  sleep 0.5
done
[ "$took" = yes ] || { echo "swarm: cache-4 joined but takes no keys: $seen" >&2; exit 1; }
echo "swarm: scaled cache 3 -> 4: members $(members); new keys: $seen"

# 2. Scale down: the keys come back to the three.
docker service scale --detach=false "${stack}_cache=3" >/dev/null 2>&1
back=no
for _ in $(seq 40); do
  seen=$(owners $next)
  next=$((next + 40))
  if ! grep -q 'fanout-cache-4=' <<<"$seen"; then back=yes; break; fi
  sleep 0.5
done
[ "$back" = yes ] || { echo "swarm: cache-4 is gone but still owns keys: $seen" >&2; exit 1; }
echo "swarm: scaled cache 4 -> 3: new keys: $seen"

# 3. Roll the proxies to the other image tag, one service after the other,
#    each only once the one before serves again.
for proxy in proxy-1 proxy-2; do
  docker service update --detach=false --no-resolve-image --image "fanout:$stack-b" "${stack}_$proxy" >/dev/null 2>&1
  images=$(docker service ps --filter desired-state=running --format '{{.Image}}' "${stack}_$proxy" | sort -u | tr '\n' ' ')
  [ "$images" = "fanout:$stack-b " ] || { echo "swarm: $proxy runs $images after the update" >&2; exit 1; }
  for _ in $(seq 150); do serving && break; sleep 0.2; done
  serving || { echo "swarm: the proxies do not serve after updating $proxy" >&2; exit 1; }
done
echo "swarm: proxies rolled to fanout:$stack-b"

kill -0 "$loader" 2>/dev/null || { echo "swarm: the audience ended early" >&2; cat "$work/load.out" >&2; exit 1; }
kill -INT "$loader"
wait "$loader" || true
loader=
jq -e .totals "$work/report.json" >/dev/null || { echo "swarm: no load report" >&2; cat "$work/load.out" >&2; exit 1; }
read -r ok failed failovers hit_ratio stalls < <(jq -r \
  '[.totals.requests, .totals.errors, .totals.failovers, (.totals.hit_ratio // 0) * 100, .viewers.stalls] | @tsv' "$work/report.json")
echo "swarm: audience through it all: $ok requests, $failed failed, $failovers moved to the other proxy, hit ratio $(printf '%.1f' "$hit_ratio")%, $stalls playback stalls"
[ "$failed" = 0 ] || { echo "swarm: viewer requests failed: $(jq -c '.errors, .first_errors' "$work/report.json")" >&2; exit 1; }
[ "$ok" -gt 100 ] || { echo "swarm: the audience did not run" >&2; exit 1; }
echo "swarm: all steps passed"
