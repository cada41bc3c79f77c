#!/usr/bin/env bash
# Brings the compose cluster up from local files only: builds fanout:local
# (deploy/build-local-image.sh), makes the secrets once, starts every part,
# and applies config/cluster.yaml to the control plane.
#
# Usage: examples/compose/up.sh        (env: COMPOSE_PROJECT_NAME, FANOUT_IMAGE)
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${FANOUT_IMAGE:-}" ]; then
  ../../deploy/build-local-image.sh fanout:local
fi
mkdir -p config/secrets
for s in cluster.secret write.token; do
  [ -s "config/secrets/$s" ] || head -c 24 /dev/urandom | base64 >"config/secrets/$s"
done
# The parts run as uid 10001 and read the secrets through a read-only mount.
chmod 644 config/secrets/*
docker-compose up -d --quiet-pull 2>/dev/null || docker-compose up -d
ctl() {
  docker-compose exec -T control-1 /usr/local/bin/fanout --log error ctl \
    --server control-1:7000,control-2:7000,control-3:7000 \
    --token-file /etc/fanout/secrets/write.token "$@"
}
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.2; done
ctl apply -f /etc/fanout/cluster.yaml
echo "proxies: http://$(docker-compose port proxy-1 8080)  http://$(docker-compose port proxy-2 8080)"
echo "try: curl -i http://$(docker-compose port proxy-1 8080)/live/main/master.m3u8"
