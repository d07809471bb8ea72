# syntax=docker/dockerfile:1
# ecluse container image: a release build, then a small runtime with CA
# roots, git and ssh (for Git policy sources), iptables (for `ecluse iptables`
# in the transparent overlay's init container), running as a non-root user.
# The build step is the command .ci/run proves on every change:
#   cargo build --release --locked --bin ecluse

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY policies ./policies
COPY benches ./benches
COPY tests ./tests
COPY examples ./examples
RUN cargo build --release --locked --bin ecluse \
 && install -D -m 0755 target/release/ecluse /out/ecluse

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client iptables \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 ecluse \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/ecluse --shell /usr/sbin/nologin ecluse \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/ecluse
COPY --from=build /out/ecluse /usr/local/bin/ecluse
COPY examples/kubernetes/base/ecluse.yaml /etc/ecluse/ecluse.yaml
# State (CA, persisted policy, git cache) lives on a volume; the root
# filesystem can be mounted read-only.
VOLUME ["/var/lib/ecluse"]
USER 65532:65532
WORKDIR /var/lib/ecluse
EXPOSE 3128 9901
ENTRYPOINT ["/usr/local/bin/ecluse"]
CMD ["run", "--config", "/etc/ecluse/ecluse.yaml"]
