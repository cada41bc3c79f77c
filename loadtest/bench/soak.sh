#!/usr/bin/env bash
# Soak with churn: a cluster of separate processes (origin, 3 control
# nodes, 3 cache nodes, 2 proxies, all following the control plane) under a
# live audience for DURATION seconds, while
#   - a cache node is killed (-9) and restarted every KILL_EVERY seconds
#     (cache-1 and cache-2 in turn; cache-3 and every other process run the
#     whole time, so their growth is measurable);
#   - a new config version is applied every CONFIG_EVERY seconds;
#   - a purge is committed every PURGE_EVERY seconds;
#   - the proxies are reloaded (SIGHUP) every RELOAD_EVERY seconds.
# Every SAMPLE_EVERY seconds it samples each process's resident memory,
# open file descriptors, threads and async tasks (fanout_runtime_alive_tasks
# on its /metrics), and at the end prints each long-running process's
# growth from the end of WARMUP to the end of the run.
#
# Fails (exit 1) when a viewer request failed, a process died by itself, or
# a long-running process grew past the bounds after warm-up: more than
# FD_SLACK file descriptors, TASK_SLACK tasks, or RSS_SLACK_MIB MiB plus 25 %.
#
# Usage: loadtest/bench/soak.sh                 (an hour)
#        DURATION=180 WARMUP=60 KILL_EVERY=40 loadtest/bench/soak.sh   (CI's short run)
source "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-3600}
WARMUP=${WARMUP:-300}
KILL_EVERY=${KILL_EVERY:-180}
CONFIG_EVERY=${CONFIG_EVERY:-30}
PURGE_EVERY=${PURGE_EVERY:-10}
RELOAD_EVERY=${RELOAD_EVERY:-60}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
VIEWERS=${VIEWERS:-300}
FD_SLACK=${FD_SLACK:-64}
TASK_SLACK=${TASK_SLACK:-400}
RSS_SLACK_MIB=${RSS_SLACK_MIB:-64}
need_commands curl

cd "$work"
mkdir -p secrets data
head -c 24 /dev/urandom | base64 >secrets/cluster.secret
head -c 24 /dev/urandom | base64 >secrets/write.token
port() { echo "127.0.0.1:$(free_port)"; }
ORIGIN=$(port)
CONTROL=("$(port)" "$(port)" "$(port)")
SERVERS="${CONTROL[0]},${CONTROL[1]},${CONTROL[2]}"
servers_yaml="['${CONTROL[0]}', '${CONTROL[1]}', '${CONTROL[2]}']"

scenario_origin_yaml "$ORIGIN" >origin.yaml
declare -A admin command
for i in 1 2 3; do
  admin[control-$i]=$(port)
  cat >"control-$i.yaml" <<YAML
kind: control
id: $i
listen: '${CONTROL[$((i - 1))]}'
admin_listen: '${admin[control-$i]}'
data_dir: data/control-$i
cluster_secret_file: secrets/cluster.secret
write_token_file: secrets/write.token
peers:
  - { id: 1, address: '${CONTROL[0]}' }
  - { id: 2, address: '${CONTROL[1]}' }
  - { id: 3, address: '${CONTROL[2]}' }
YAML
  command[control-$i]="control control-$i.yaml"
done
for i in 1 2 3; do
  admin[cache-$i]=$(port)
  cat >"cache-$i.yaml" <<YAML
kind: cache
id: cache-$i
listen: '$(port)'
admin_listen: '${admin[cache-$i]}'
capacity: 128MiB
control: { servers: $servers_yaml, token_file: secrets/write.token, state_file: data/cache-$i.json }
YAML
  command[cache-$i]="cache cache-$i.yaml"
done
PROXIES=()
for i in 1 2; do
  admin[proxy-$i]=$(port)
  PROXIES+=("$(port)")
  cat >"proxy-$i.yaml" <<YAML
kind: proxy
id: proxy-$i
listen: '${PROXIES[$((i - 1))]}'
admin_listen: '${admin[proxy-$i]}'
control: { servers: $servers_yaml, token_file: secrets/write.token, state_file: data/proxy-$i.json }
YAML
  command[proxy-$i]="proxy proxy-$i.yaml"
done
cluster_yaml() { # STALE_ON_ERROR: a setting each new version changes
  cat <<YAML
kind: cluster
sites:
  - name: soak
    hosts: [localhost]
    origin: { addresses: ['$ORIGIN'] }
    cache: { stale_on_error: $1 }
    prefetch: { playlists: true }
YAML
}

declare -A pid
start() { # NAME
  # shellcheck disable=SC2086
  "$FANOUT" --log warn ${command[$1]} >>"$1.log" 2>&1 &
  pid[$1]=$!
  pids+=($!)
}
"$FANOUT" --log warn origin origin.yaml >origin.log 2>&1 &
pid[origin]=$!
pids+=($!)
for n in control-1 control-2 control-3; do start "$n"; done
ctl() { "$FANOUT" --log error ctl --server "$SERVERS" --token-file secrets/write.token "$@"; }
for _ in $(seq 150); do ctl status >/dev/null 2>&1 && break; sleep 0.2; done
cluster_yaml 10s >cluster.yaml
ctl apply -f cluster.yaml >/dev/null
for n in cache-1 cache-2 cache-3 proxy-1 proxy-2; do start "$n"; done
for p in "${PROXIES[@]}"; do wait_http "$p"; done
for _ in $(seq 150); do curl -sf -o /dev/null -H 'Host: localhost' "http://${PROXIES[0]}/live/main/master.m3u8" && break; sleep 0.2; done

cat >scenario.yaml <<YAML
kind: scenario
name: soak
description: a live audience through churn
seed: 23
target:
  addresses: ['127.0.0.1:1']
  host: localhost
limits:
  max_in_flight: 20000
  request_timeout: 10s
phases:
  - { name: joining, duration: 20s, arrival_rate: $((VIEWERS / 10)), population: $VIEWERS }
  - { name: watching, duration: $((DURATION - 20))s, arrival_rate: 2, population: $VIEWERS }
mix:
  - { viewer: live, stream: main, weight: 8 }
  - { viewer: vod, titles: 20, watch_segments: 20, weight: 2 }
YAML
"$FANOUT" --log warn loadtest run scenario.yaml --quiet --target "${PROXIES[0]}" --target "${PROXIES[1]}" \
  --host localhost --origin "$ORIGIN" --json report.json >loadtest.out 2>&1 &
load=$!
pids+=($load)

sample() { # T: one line per process: t name rss_kib fds threads tasks
  local n p tasks
  for n in "${!pid[@]}"; do
    p=${pid[$n]}
    [ -d "/proc/$p" ] || continue
    tasks=-1
    if [ -n "${admin[$n]:-}" ]; then
      tasks=$(curl -s --max-time 2 "http://${admin[$n]}/metrics" | awk '/^fanout_runtime_alive_tasks/ { print $2; exit }')
    fi
    echo "$1 $n $(awk '/^VmRSS/ { print $2 }' "/proc/$p/status") $(ls "/proc/$p/fd" | wc -l) $(awk '/^Threads/ { print $2 }' "/proc/$p/status") ${tasks:--1}"
  done >>samples.txt
}

echo "soak: ${DURATION}s, warm-up ${WARMUP}s, cache node killed every ${KILL_EVERY}s, config every ${CONFIG_EVERY}s, purge every ${PURGE_EVERY}s, proxies reloaded every ${RELOAD_EVERY}s" >&2
died="" kills=0 configs=0 purges=0 purge_waits=0 reloads=0 version=10 victim=1
start_time=$SECONDS
next_kill=$KILL_EVERY next_config=$CONFIG_EVERY next_purge=$PURGE_EVERY next_reload=$RELOAD_EVERY next_sample=0
restart_at=-1
while :; do
  t=$((SECONDS - start_time))
  [ "$t" -ge "$DURATION" ] && break
  for n in "${!pid[@]}"; do
    if [ "$n" != "cache-$victim" ] || [ "$restart_at" -lt 0 ]; then
      kill -0 "${pid[$n]}" 2>/dev/null || { died+=" $n"; unset "pid[$n]"; }
    fi
  done
  if [ "$t" -ge "$next_sample" ]; then sample "$t"; next_sample=$((t + SAMPLE_EVERY)); fi
  if [ "$restart_at" -ge 0 ] && [ "$t" -ge "$restart_at" ]; then
    start "cache-$victim"
    restart_at=-1
    victim=$((3 - victim))
  fi
  if [ "$t" -ge "$next_kill" ] && [ "$restart_at" -lt 0 ]; then
    kill -9 "${pid[cache-$victim]}" 2>/dev/null || true
    wait "${pid[cache-$victim]}" 2>/dev/null || true
    kills=$((kills + 1))
    restart_at=$((t + 5))
    next_kill=$((t + KILL_EVERY))
  fi
  if [ "$t" -ge "$next_config" ]; then
    version=$((version + 1))
    cluster_yaml "${version}s" >cluster.yaml
    ctl apply -f cluster.yaml >/dev/null && configs=$((configs + 1))
    next_config=$((t + CONFIG_EVERY))
  fi
  if [ "$t" -ge "$next_purge" ]; then
    # A committed purge that some part has not applied within 5 s (the
    # killed node, until it is back) is counted, not a failure.
    if ctl purge --wait 5s --prefix localhost /static/ >/dev/null 2>&1; then
      purges=$((purges + 1))
    else
      purge_waits=$((purge_waits + 1))
    fi
    next_purge=$((t + PURGE_EVERY))
  fi
  if [ "$t" -ge "$next_reload" ]; then
    kill -HUP "${pid[proxy-1]}" "${pid[proxy-2]}" 2>/dev/null && reloads=$((reloads + 1))
    next_reload=$((t + RELOAD_EVERY))
  fi
  sleep 1
done
sample "$((SECONDS - start_time))"
wait "$load" || true
echo "churn: $kills cache node kills, $configs config versions, $purges purges applied everywhere within 5 s (+$purge_waits committed, not yet everywhere), $reloads proxy reloads" >&2

status=0
[ -s report.json ] || { echo "the load generator wrote no report:" >&2; tail -20 loadtest.out >&2; exit 1; }
[ -z "$died" ] || { echo "NOT MET: died by themselves:$died" >&2; status=1; }
python3 - samples.txt report.json "$WARMUP" "$FD_SLACK" "$TASK_SLACK" "$RSS_SLACK_MIB" <<'PY' || status=1
import json, sys
samples, report, warmup, fd_slack, task_slack, rss_slack = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rows = {}
for line in open(samples):
    t, name, rss, fds, threads, tasks = line.split()
    rows.setdefault(name, []).append((int(t), int(rss), int(fds), int(threads), float(tasks)))
r = json.load(open(report))
errors, requests = r["totals"]["errors"], r["totals"]["requests"]
print(f"viewers: {requests} requests, {errors} failed, stall ratio {r['viewers']['stall_ratio']:.4f}, peak {r['viewers']['peak_active']} watching")
print(f"{'process':<10} {'RSS MiB at warm-up -> end (max)':>32} {'fds':>12} {'threads':>10} {'tasks':>14}")
ok = errors == 0
for name in sorted(rows):
    xs = rows[name]
    if name in ("cache-1", "cache-2"):
        print(f"{name:<10} {'(killed and restarted: not measured)':>32}")
        continue
    base = [x for x in xs if x[0] >= warmup][:1] or xs[-1:]
    a, b = base[0], xs[-1]
    mib = lambda k: k / 1024
    peak = max(x[1] for x in xs)
    grown = []
    if b[2] - a[2] > fd_slack: grown.append("fds")
    if a[4] >= 0 and b[4] - a[4] > task_slack: grown.append("tasks")
    if mib(b[1]) > mib(a[1]) * 1.25 + rss_slack: grown.append("RSS")
    ok &= not grown
    print(f"{name:<10} {mib(a[1]):>12.1f} -> {mib(b[1]):>7.1f} ({mib(peak):>6.1f}) {a[2]:>5} -> {b[2]:<5} {a[3]:>3} -> {b[3]:<4} {a[4]:>6.0f} -> {b[4]:<6.0f}{'  GREW: ' + ', '.join(grown) if grown else ''}")
print(f"bounds after warm-up: fds +{fd_slack}, tasks +{task_slack}, RSS +25% + {rss_slack} MiB; failed requests 0")
print("met" if ok else "NOT MET")
sys.exit(0 if ok else 1)
PY
exit $status
