# Shared by the benchmark scripts in this folder: installing reference
# servers from Debian packages, free ports, waiting for listeners, and
# starting NGINX and Varnish as caches in front of an origin.
# Source it; it defines functions and the variables FANOUT and work.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# Installs the Debian packages that provide these commands, if missing.
# Usage: need_commands nginx:nginx-light varnishd:varnish wrk:wrk
need_commands() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  if ((${#missing[@]})); then
    echo "installing ${missing[*]} from Debian packages..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# FANOUT=path measures that binary instead of building this checkout.
if [ -z "${FANOUT:-}" ]; then cargo build --release --quiet; fi
FANOUT=${FANOUT:-$PWD/target/release/fanout}

# With BBR the kernel paces every TCP socket itself (there is no fq qdisc on
# loopback), arming a timer as each burst goes out. On 2026-12-01 that
# halved Fanout's 1 MiB hits and a bare hyper server's, and cost Varnish,
# NGINX and HAProxy 9-30 % (docs/performance.md): say so, since the
# figures are not comparable across the two settings.
congestion=$(cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null || echo unknown)
if [ "$congestion" = bbr ]; then
  echo "note: TCP congestion control is bbr, which paces loopback sockets in the kernel;" \
    "large-object figures are lower than with cubic (see docs/performance.md)" >&2
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

# The README's headline table: a script appends "measure<TAB>figure" lines
# to $work/headline (the command that reproduces them is HEADLINE_COMMAND,
# or the script as it was run), and record_headline writes them into the
# table, dated, when the script ends well.
HEADLINE_COMMAND=${HEADLINE_COMMAND:-}
record_headline() {
  [ -s "$work/headline" ] || return 0
  local command=${HEADLINE_COMMAND:-loadtest/bench/$(basename "$0")}
  awk -v c="$command" '{ print $0 "\t" c }' "$work/headline" >"$work/headline.rows"
  python3 loadtest/bench/headline.py README.md "$work/headline.rows"
}

# Stops one process this script started and forgets it, so cleanup does
# not signal a pid the system may have given to another process since.
stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until something answers HTTP at $1 (any status).
wait_http() {
  for _ in $(seq 200); do
    if curl -s -o /dev/null -H 'Host: localhost' "http://$1/"; then
      # Something answering is not enough: a server that could not bind
      # its port has exited, and whatever holds the port (a leftover from
      # an earlier run) would be measured in its place.
      for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { echo "a server started by this script (pid $p) has exited; see its messages above" >&2; exit 1; }
      done
      return 0
    fi
    sleep 0.05
  done
  echo "nothing answers at $1; server logs:" >&2
  tail -n 5 "$work"/*.log >&2 2>/dev/null || true
  exit 1
}

# Starts NGINX as a cache with a cache lock, one worker, pinned to core $3.
# Usage: start_nginx LISTEN ORIGIN CORE
start_nginx() {
  mkdir -p "$work/nginx-cache"
  cat >"$work/nginx.conf" <<CONF
user root;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  proxy_cache_path $work/nginx-cache levels=1:2 keys_zone=bench:32m max_size=4g inactive=10m use_temp_path=off;
  upstream origin { server $2; keepalive 64; }
  # Its default of 1000 requests per connection would make wrk reconnect
  # and charge NGINX for handshakes no other server pays.
  keepalive_requests 1000000;
  server {
    listen $1;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 30s;
      proxy_cache_lock_age 30s;
    }
  }
}
CONF
  taskset -c "$3" nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' &
  pids+=($!)
}

# Starts Varnish with its defaults and a 4 GiB memory store, pinned to core $3.
# Usage: start_varnish LISTEN ORIGIN CORE
start_varnish() {
  taskset -c "$3" varnishd -F -n "$work/varnish" -a "$1" -b "$2" -s malloc,4G \
    -p thread_pool_min=200 -p thread_pool_max=5000 >/dev/null 2>"$work/varnish.log" &
  pids+=($!)
}

# Starts HAProxy with its cache (objects up to 2 MiB), one thread, pinned
# to core $3. Usage: start_haproxy LISTEN ORIGIN CORE
start_haproxy() {
  cat >"$work/haproxy.cfg" <<CONF
global
  maxconn 8000
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
cache bench
  total-max-size 4095
  max-object-size 2097152
  max-age 3600
frontend fe
  bind $1
  default_backend be
backend be
  http-request cache-use bench
  http-response cache-store bench
  server origin $2
CONF
  taskset -c "$3" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  pids+=($!)
}

# Starts NGINX as a plain reverse proxy (no cache, keep-alive upstream),
# one worker pinned to core $3. Usage: start_nginx_proxy LISTEN UPSTREAM CORE
start_nginx_proxy() {
  cat >"$work/nginx-proxy.conf" <<CONF
user root;
worker_processes 1;
pid $work/nginx-proxy.pid;
error_log $work/nginx-proxy-error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  upstream up { server $2; keepalive 256; }
  server {
    listen $1;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_buffering off;
    }
  }
}
CONF
  taskset -c "$3" nginx -c "$work/nginx-proxy.conf" -g 'daemon off;' & pids+=($!)
}

# Starts HAProxy as a plain reverse proxy (one thread, keep-alive to the
# server), pinned to core $3. Usage: start_haproxy_proxy LISTEN UPSTREAM CORE
start_haproxy_proxy() {
  cat >"$work/haproxy-proxy.cfg" <<CONF
global
  maxconn 8000
  nbthread 1
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind $1
  default_backend be
backend be
  server up $2
CONF
  taskset -c "$3" haproxy -db -f "$work/haproxy-proxy.cfg" >"$work/haproxy-proxy.log" 2>&1 &
  pids+=($!)
}

# A self-signed certificate for localhost in $work: tls.crt, tls.key, and
# tls.pem (both, for HAProxy).
make_certificate() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
  cat "$work/tls.crt" "$work/tls.key" >"$work/tls.pem"
}

# HAProxy's cache behind TLS with HTTP/2 and HTTP/1.1 by ALPN, one thread,
# pinned to core $3. Usage: start_haproxy_tls LISTEN ORIGIN CORE
start_haproxy_tls() {
  cat >"$work/haproxy-tls.cfg" <<CONF
global
  maxconn 8000
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
cache bench
  total-max-size 4095
  max-object-size 2097152
  max-age 3600
frontend fe
  bind $1 ssl crt $work/tls.pem alpn h2,http/1.1
  default_backend be
backend be
  http-request cache-use bench
  http-response cache-store bench
  server origin $2
CONF
  taskset -c "$3" haproxy -db -f "$work/haproxy-tls.cfg" >"$work/haproxy-tls.log" 2>&1 &
  pids+=($!)
}

# NGINX proxy_cache behind TLS with HTTP/2, one worker pinned to core $3.
# Usage: start_nginx_tls LISTEN ORIGIN CORE
start_nginx_tls() {
  mkdir -p "$work/nginx-tls-cache"
  cat >"$work/nginx-tls.conf" <<CONF
user root;
worker_processes 1;
pid $work/nginx-tls.pid;
error_log $work/nginx-tls-error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  proxy_cache_path $work/nginx-tls-cache levels=1:2 keys_zone=benchtls:32m max_size=4g inactive=10m use_temp_path=off;
  upstream origin { server $2; keepalive 64; }
  # Its default of 1000 requests closes each HTTP/2 connection, which
  # h2load's timed runs do not reopen.
  keepalive_requests 1000000;
  server {
    listen $1 ssl http2;
    ssl_certificate $work/tls.crt;
    ssl_certificate_key $work/tls.key;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache benchtls;
      proxy_cache_lock on;
    }
  }
}
CONF
  taskset -c "$3" nginx -c "$work/nginx-tls.conf" -g 'daemon off;' &
  pids+=($!)
}

# The synthetic origin the shipped scenarios (quickstart, ipl-final,
# vod-longtail) ask for: live stream `main` on a 4-rendition ladder, 20
# VOD titles and /static/0..999. Usage: scenario_origin_yaml LISTEN
scenario_origin_yaml() {
  cat <<YAML
kind: origin
listen: '$1'
live:
  - name: main
    segment_duration: 2s
    window: 6
    renditions:
      - { name: 1080p, bandwidth: 6000000, resolution: 1920x1080 }
      - { name: 720p, bandwidth: 3000000, resolution: 1280x720 }
      - { name: 480p, bandwidth: 1200000, resolution: 854x480 }
      - { name: 240p, bandwidth: 400000, resolution: 426x240 }
vod:
  titles: 20
  segments: 150
  segment_duration: 4s
  renditions:
    - { name: 720p, bandwidth: 3000000, resolution: 1280x720 }
objects:
  - { prefix: /static/, count: 1000, size: 16KiB }
YAML
}
