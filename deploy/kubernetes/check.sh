#!/usr/bin/env bash
# Checks the Kubernetes manifests without a cluster (none can run here):
#  1. renders the base and the example overlay with `kubectl kustomize`;
#  2. validates every rendered object against Kubernetes $K8S_VERSION's
#     schemas, strictly (unknown fields fail), with kubernetes-validate;
#  3. checks what no schema knows: the Fanout files in the ConfigMap pass
#     `fanout check` with the environment each pod gets, their ports are
#     the containers' ports, and the control plane's peers are its pods.
# Usage: deploy/kubernetes/check.sh [path/to/fanout]   (default: target/debug/fanout)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
fanout="${1:-$root/target/debug/fanout}"
K8S_VERSION="${K8S_VERSION:-1.31.0}"
VALIDATE_VERSION=1.37.0

if ! command -v kubectl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
  else
    echo "kubectl is missing: install it (apt-get install kubernetes-client)" >&2
    exit 1
  fi
fi
venv="${XDG_CACHE_HOME:-$HOME/.cache}/fanout/kubernetes-validate-$VALIDATE_VERSION"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "python3 -m venv failed: install python3-venv" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q "kubernetes-validate==$VALIDATE_VERSION"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$here/overlays/example/make-secrets.sh" >/dev/null
for target in base overlays/example; do
  name="${target//\//-}"
  # kustomize's deprecation warnings are kept out of the output: the files
  # use the fields that Debian's kubectl 1.20 (kustomize 2) also reads.
  kubectl kustomize "$here/$target" >"$out/$name.yaml" 2>"$out/$name.err" || {
    cat "$out/$name.err" >&2
    exit 1
  }
  echo "rendered $target: $(grep -c '^kind:' "$out/$name.yaml") objects"
  "$venv/bin/kubernetes-validate" --quiet --strict -k "$K8S_VERSION" "$out/$name.yaml"
  echo "valid against Kubernetes $K8S_VERSION (strict): $target"
  "$venv/bin/python" "$here/check_rendered.py" "$out/$name.yaml" "$fanout"
done
