# syntax=docker/dockerfile:1
#
# The ciosync daemon as a container image (the last stage, the default):
#
#   docker build -t ciosync:0.1.0 .
#
# and the Customer.io emulator, for CI service containers and compose
# (README, "The emulator in CI"):
#
#   docker build --target emulator -t ciosync-emulator:0.1.0 .
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

# The emulator alone: `-p ciosync-emulator` compiles only its crate and the
# wire types, not the daemon. A stage of its own, so that `--target emulator`
# never builds the daemon and the default build never builds the emulator.
FROM rust:1-bookworm AS emulator-build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ciosync-emulator --bin ciosync-emulator \
    && install -m 0755 target/release/ciosync-emulator /usr/local/bin/ciosync-emulator

# Like the daemon's: distroless, no shell, no curl, user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS emulator
COPY --from=emulator-build /usr/local/bin/ciosync-emulator /usr/local/bin/ciosync-emulator
USER 65532:65532
# The Track API, /_emulator/ and /_emulator/health, on every interface (its
# own default is 127.0.0.1, unreachable from outside a container). The
# credentials come from CIOSYNC_EMULATOR_SITE_ID and CIOSYNC_EMULATOR_API_KEY;
# further flags (e.g. --tls-self-signed /tmp/tls --tls-name customerio) go
# after the image name, or as a service's `command`.
EXPOSE 8089
ENTRYPOINT ["/usr/local/bin/ciosync-emulator", "--listen", "0.0.0.0:8089"]
# Exec form: there is no shell to run a CMD-SHELL check. The probe asks
# /_emulator/health over HTTP, then HTTPS, 2 s each, so it fits both modes.
HEALTHCHECK --interval=5s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/ciosync-emulator", "--health-check", "127.0.0.1:8089"]

# The daemon; last, so a plain `docker build` builds it.
FROM gcr.io/distroless/cc-debian12:nonroot AS daemon
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
