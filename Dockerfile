# The truc image: the one `truc` binary (hub, node and every tool),
# statically linked against musl, on a distroless base with no shell.
#   docker build -t truc:latest .
# Not built in CI (no container registry is reachable there to pull the
# base images); deploy/k8s/check.sh lints this file with hadolint.

FROM rust:1.95-alpine AS build
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]
# A C compiler and musl's headers for ring (rustls' cryptography).
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# On Alpine the target is x86_64-unknown-linux-musl, static by default;
# the check fails the build if the binary is dynamically linked.
RUN cargo build --release --locked --bin truc \
    && if readelf -l target/release/truc | grep -q INTERP; then \
         echo "truc is not static" >&2; exit 1; \
       fi

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/truc /usr/local/bin/truc
# nonroot: uid and gid 65532, as the manifests' securityContext expects.
USER 65532:65532
# gRPC (hub 7000, node 7101), the node's HTTP listener (7102), ops (9100, 9101).
EXPOSE 7000 7101 7102 9100 9101
ENTRYPOINT ["/usr/local/bin/truc"]
