# syntax=docker/dockerfile:1
# Switchyard in a container: build with the Rust toolchain, run from a slim Debian as a non-root
# user, state in a volume, health from `switchyard health` (grpc.health.v1).
#
#   docker build -t switchyard .
#   docker run -p 50051:50051 -v switchyard-data:/var/lib/switchyard switchyard
#   docker run ... switchyard serve --config /etc/switchyard/config.toml ...   (mount your config)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build between builds (BuildKit, Docker's default builder).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchyard \
    && cp target/release/switchyard /usr/local/bin/switchyard

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/switchyard \
        --shell /usr/sbin/nologin switchyard \
    && mkdir -p /var/lib/switchyard && chown switchyard:switchyard /var/lib/switchyard
COPY --from=build /usr/local/bin/switchyard /usr/local/bin/switchyard
USER switchyard
WORKDIR /var/lib/switchyard
VOLUME ["/var/lib/switchyard"]
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["switchyard", "health", "--addr", "127.0.0.1:50051"]
ENTRYPOINT ["switchyard"]
# Plaintext on 0.0.0.0 is refused unless allowed: the default image expects TLS to end in front of
# it (ingress, service mesh). To serve TLS itself, mount a config with server.tls and drop the flag.
CMD ["serve", "--listen", "0.0.0.0:50051", "--data-dir", "/var/lib/switchyard", "--allow-plaintext"]
