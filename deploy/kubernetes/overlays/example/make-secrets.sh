#!/usr/bin/env bash
# Writes the files this overlay's secretGenerator reads, if missing: random
# tokens and cluster secret, and a self-signed certificate for
# live.example.com (replace tls.crt and tls.key with your real ones).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p secrets
umask 077
for f in write.token read.token cluster.secret; do
  [ -s "secrets/$f" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "secrets/$f"
done
if [ ! -s secrets/tls.crt ] || [ ! -s secrets/tls.key ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj /CN=live.example.com -addext subjectAltName=DNS:live.example.com \
    -keyout secrets/tls.key -out secrets/tls.crt 2>/dev/null
fi
echo "secrets in $(pwd)/secrets"
