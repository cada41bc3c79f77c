#!/usr/bin/env bash
# Builds the registry Dockerfile on a machine that cannot pull images, with
# local stand-ins for its two base images, then runs the chaos suite on the
# result. The stand-ins are made from Debian's packages and this machine's
# Rust toolchain:
#   RUNTIME_IMAGE  fanout-base/bookworm-slim:local  debootstrap --variant=minbase bookworm
#   RUST_IMAGE     fanout-base/rust:local            the above + gcc, binutils, CA
#                                                    certificates (with any CA
#                                                    this machine adds, for an
#                                                    intercepting egress proxy)
#                                                    and the host's stable
#                                                    toolchain
# so what is tested is the Dockerfile itself: its stages, user, health check
# and entrypoint, with the same commands a registry user runs.
#
# Needs root (debootstrap), a Docker engine, and deb.debian.org and crates.io
# reachable from containers (the build stage fetches crates). Takes about
# ten minutes on two cores, most of it the release build inside the image;
# the base images are kept and reused on later runs.
#
# Usage: deploy/test-dockerfile.sh [--no-chaos]
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "test-dockerfile: debootstrap needs root" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "test-dockerfile: no Docker engine answers" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

runtime=fanout-base/bookworm-slim:local
rust=fanout-base/rust:local
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! docker image inspect "$runtime" >/dev/null 2>&1; then
  echo "test-dockerfile: making $runtime with debootstrap"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # What the slim image drops: caches and docs nobody reads in a container.
  rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/* \
    "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/*
  tar -C "$work/rootfs" -c . | docker import --change 'CMD ["bash"]' - "$runtime" >/dev/null
  rm -rf "$work/rootfs"
fi

if ! docker image inspect "$rust" >/dev/null 2>&1; then
  echo "test-dockerfile: making $rust from $runtime and $(rustc --version)"
  toolchain=$(rustc --print sysroot)
  mkdir -p "$work/rust/rust" "$work/rust/ca"
  cp -a "$toolchain/bin" "$toolchain/lib" "$toolchain/libexec" "$work/rust/rust/"
  # CAs this machine trusts beyond Debian's (an egress proxy's): the build
  # stage fetches crates through the same network.
  cp /usr/local/share/ca-certificates/*.crt "$work/rust/ca/" 2>/dev/null || true
  cat >"$work/rust/Dockerfile" <<DOCKERFILE
FROM $runtime
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev binutils ca-certificates >/dev/null \\
 && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null 2>&1
COPY rust/ /usr/local/rust/
ENV PATH=/usr/local/rust/bin:\$PATH CARGO_HOME=/usr/local/cargo
DOCKERFILE
  docker build --quiet -t "$rust" "$work/rust" >/dev/null
fi

echo "test-dockerfile: docker build (the registry Dockerfile, release build inside)"
started=$SECONDS
docker build --quiet -t fanout:dockerfile \
  --build-arg RUST_IMAGE="$rust" --build-arg RUNTIME_IMAGE="$runtime" . >/dev/null
size=$(docker image inspect -f '{{.Size}}' fanout:dockerfile | awk '{printf "%.1f MiB", $1/1048576}')
echo "test-dockerfile: built fanout:dockerfile ($size) in $((SECONDS - started)) s"

fail() { echo "test-dockerfile: $*" >&2; exit 1; }
[ "$(docker image inspect -f '{{.Config.User}}' fanout:dockerfile)" = fanout ] || fail "the image does not run as user fanout"
[ "$(docker run --rm --entrypoint id fanout:dockerfile -u)" = 10001 ] || fail "user fanout is not uid 10001"
docker image inspect -f '{{json .Config.Healthcheck.Test}}' fanout:dockerfile | grep -q '"probe"' \
  || fail "no HEALTHCHECK through fanout probe"
docker run --rm fanout:dockerfile --version | grep -q '^fanout ' || fail "fanout --version did not answer"
echo "test-dockerfile: runs as fanout (uid 10001), HEALTHCHECK through fanout probe, entrypoint answers"

if [ "${1:-}" != --no-chaos ]; then
  FANOUT_IMAGE=fanout:dockerfile bash tests/cluster/chaos.sh
fi
