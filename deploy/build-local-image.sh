#!/usr/bin/env bash
# Builds the runtime image `fanout:local` from local files only, for
# machines without a registry: the release binary, the shared libraries it
# links (as ldd lists them), and an unprivileged user, on `FROM scratch`.
# Same layout as the Dockerfile's runtime stage: /usr/local/bin/fanout,
# user 10001, data in /var/lib/fanout/data.
#
# Usage: deploy/build-local-image.sh [TAG]     (default TAG: fanout:local)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-fanout:local}

cargo build --release --locked --quiet --bin fanout
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc" "$ctx/data/data"
# The release profile keeps line tables for profiling; the image does not
# need them (88 MiB with, 15 MiB without).
cp target/release/fanout "$root/usr/local/bin/fanout"
strip "$root/usr/local/bin/fanout"
for lib in $(ldd target/release/fanout | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
echo 'fanout:x:10001:10001:fanout:/var/lib/fanout:/nonexistent' >"$root/etc/passwd"
echo 'fanout:x:10001:' >"$root/etc/group"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /var/lib/fanout/
USER 10001:10001
WORKDIR /var/lib/fanout
HEALTHCHECK --interval=5s --timeout=3s --retries=3 \
  CMD ["/usr/local/bin/fanout", "probe", "http://127.0.0.1:9180/readyz"]
ENTRYPOINT ["/usr/local/bin/fanout"]
DOCKERFILE
docker build --quiet -t "$tag" "$ctx" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MiB", $1/1048576}'))"
