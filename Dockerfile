# syntax=docker/dockerfile:1
#
# The ciosync daemon as a container image:
#
#   docker build -t ciosync:0.1.0 .
#
# The binary links only glibc and libgcc_s (TLS is rustls with bundled root
# certificates; no OpenSSL), so distroless's `cc` image is enough at run
# time. Builder and runtime are both Debian 12, so the glibc versions match.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and compiled dependencies between
# builds; the binary is copied out because the target dir is a cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ciosync \
    && install -m 0755 target/release/ciosync /usr/local/bin/ciosync

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/ciosync /usr/local/bin/ciosync
# distroless's `nonroot` user (uid and gid 65532); the Kubernetes Deployment
# runs as the same ids.
USER 65532:65532
# /metrics, /healthz, /readyz. The daemon listens on 127.0.0.1 by default:
# set CIOSYNC_METRICS_LISTEN=0.0.0.0:9820 (or [metrics] listen) in a container.
EXPOSE 9820
ENTRYPOINT ["/usr/local/bin/ciosync"]
# Mount the config file at /etc/ciosync/ciosync.toml; pass secrets as
# CIOSYNC_POSTGRES_URL and CIOSYNC_CUSTOMERIO_API_KEY.
CMD ["run", "--config", "/etc/ciosync/ciosync.toml", "--log-format", "json"]
