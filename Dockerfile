# The podiam image: one binary, its C libraries, Debian's CA certificates and a non-root user, on
# an empty base (no shell, no package manager).
#
#   docker build -t podiam:0.1.0 .
#
# Without Docker or a registry, scripts/build-image builds the same image with buildah from a
# Debian root made by mmdebstrap; both assemble the root filesystem with scripts/image-rootfs, and
# tests/image/check.sh fails when this file's final stage (its COPY destinations, USER, ENTRYPOINT
# and labels) and the image the script built disagree. VERSION must be the workspace version in
# Cargo.toml (the check says so when it is not).
ARG VERSION=0.1.0
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS builder
# `podiam version` names this commit (.git is not in the build context):
#   docker build --build-arg REVISION=$(git rev-parse --short=12 HEAD) -t podiam:0.1.0 .
ARG REVISION=unknown
WORKDIR /src
COPY . .
# The cache mounts keep crates and build artefacts between builds; the binary leaves the cached
# target directory in the same step, as the root filesystem /rootfs.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    PODIAM_GIT_COMMIT=${REVISION} cargo build --release --locked -p podiam-cli \
    && scripts/image-rootfs / target/release/podiam /rootfs \
    && mkdir -m 0700 /home-nonroot

FROM scratch
ARG VERSION
ARG REVISION=unknown
COPY --from=builder /rootfs/ /
COPY --from=builder --chown=65532:65532 /home-nonroot/ /home/nonroot/
LABEL org.opencontainers.image.title="podiam" \
      org.opencontainers.image.description="AWS-compatible IAM, STS and EKS Auth, EKS Pod Identity agent and IRSA webhook" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/podiam"]
