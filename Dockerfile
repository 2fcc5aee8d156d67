# syntax=docker/dockerfile:1
#
# The saga platform in one image: the six binaries in /usr/local/bin (orchestrator, inventory,
# payment, shipping, notification, and outside: the simulated payment gateway and carrier).
# The command names the process to run, e.g. `docker run --rm saga-platform payment`;
# infra/deploy/docker-compose.yml sets it per service. There is no entrypoint wrapper: the
# process is PID 1 and gets SIGTERM itself (each stops its intake, drains, exits 0).
#
#   docker build -t saga-platform .
#
# Stages:
#   chef     the Rust toolchain (the workspace's rust-version) and cargo-chef;
#   planner  the dependency recipe, computed from the manifests and Cargo.lock only;
#   builder  the dependencies first (a layer cached until the recipe changes), then the workspace;
#   runtime  Debian slim (the builder's glibc), a non-root user, curl for health checks.
# Nothing is built against a database: the code has no compile-time checked queries, and the
# migrations are embedded.

ARG RUST_VERSION=1.94
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir -p /out \
    && for bin in orchestrator inventory payment shipping notification orders outside; do \
           cp "target/release/$bin" /out/; \
       done

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 saga \
    && useradd --system --uid 10001 --gid saga --no-create-home --shell /usr/sbin/nologin saga
COPY --from=builder /out/ /usr/local/bin/
# Numeric, so that an orchestrator (runAsNonRoot) can tell it is not root.
USER 10001:10001
ENV RUST_LOG=info
# Each process listens on 127.0.0.1 by default: in a container set <NAME>_HTTP_ADDR (and
# OUTSIDE_GATEWAY_ADDR / OUTSIDE_CARRIER_ADDR) to 0.0.0.0:<port>, as the compose file does.
EXPOSE 8080 8081 8082 8083 8084 8091 8092
CMD ["orchestrator"]
