# The Fanout image for a machine that can pull from a registry:
#   docker build -t fanout .
# One binary runs every part; the command picks it (control, cache, proxy,
# origin, ctl). Without a registry, deploy/build-local-image.sh builds the
# same runtime layout from local files only, and deploy/test-dockerfile.sh
# builds this file with local stand-ins for the two base images.
#
# The base images are arguments, for mirrors and pinned digests:
#   docker build --build-arg RUNTIME_IMAGE=registry.example/debian:bookworm-slim .
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin fanout \
 && strip target/release/fanout

FROM ${RUNTIME_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/fanout fanout \
 && mkdir -p /var/lib/fanout/data && chown -R fanout:fanout /var/lib/fanout
COPY --from=build /src/target/release/fanout /usr/local/bin/fanout
USER fanout
WORKDIR /var/lib/fanout
# Override per part: each serves /readyz on its own admin address.
HEALTHCHECK --interval=5s --timeout=3s --retries=3 \
  CMD ["/usr/local/bin/fanout", "probe", "http://127.0.0.1:9180/readyz"]
ENTRYPOINT ["/usr/local/bin/fanout"]
