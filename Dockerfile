# syntax=docker/dockerfile:1
# upstash-operator: a static musl binary on a distroless, non-root base.
#
#   docker build -t upstash-operator .
#
# The builder compiles for x86_64-unknown-linux-musl (ring needs musl-gcc from musl-tools); the
# image holds the binary and the CA bundle of distroless/static, nothing else.

FROM rust:1.95-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --target x86_64-unknown-linux-musl --bin upstash-operator \
    && cp target/x86_64-unknown-linux-musl/release/upstash-operator /upstash-operator

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="upstash-operator" \
      org.opencontainers.image.description="Kubernetes operator that provisions and watches Upstash Redis caches" \
      org.opencontainers.image.source="https://github.com/upstash-operator/upstash-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder --chown=65532:65532 /upstash-operator /usr/local/bin/upstash-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/upstash-operator"]
