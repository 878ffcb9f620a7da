# syntax=docker/dockerfile:1
#
# Tessera on the CPU backend (`pipelines/cpu`): the image deploy/k8s/ runs.
#
#   docker build -t tessera .
#   docker run --rm --network host -e TESSERA_API_SECRET=<secret> tessera --public-ip <PUBLIC-IP>
#
# Media uses two ports for every peer connection together: UDP 7882 (`--udp-port`) and ICE-TCP
# 7881 (`--tcp-port`), so publishing them works too:
#   docker run --rm -p 8080:8080 -p 7881:7881 -p 7882:7882/udp -e TESSERA_API_SECRET=<secret> \
#     tessera --public-ip <HOST-IP>
# (`--public-ip` is then required: the ICE candidates must carry the host's address, not the
# container's). Arguments after the image name are appended to `tessera serve`; every flag also
# has a TESSERA_* environment variable (README.md, "Configuration"). For NVENC see Dockerfile.gpu.

# ---- build ----------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
# The build half of scripts/setup.sh's BASE_PACKAGES (the image already has the C toolchain).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      pkg-config cmake libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads (the repository has no .dockerignore; this keeps target/ out).
COPY Cargo.toml Cargo.lock ./
COPY src/ src/
COPY assets/ assets/
COPY pipelines/ pipelines/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && cp target/release/tessera /usr/local/bin/tessera

# ---- runtime --------------------------------------------------------------------------------
# Same Debian release as the build stage: same glibc and GStreamer 1.22.
FROM debian:bookworm-slim
# The run half of BASE_PACKAGES: GStreamer's plugins (decoders, vp8enc/x264enc, rtp, the
# muxers), gstreamer1.0-x for `textrender` (the name labels on the tiles; a font comes with it
# through fontconfig, fonts-dejavu-core named so the labels look the same everywhere),
# ca-certificates for S3 uploads and HTTPS webhooks, curl for the HEALTHCHECK.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
      gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x fonts-dejavu-core \
      ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/tessera tessera \
 && install -d -o tessera -g tessera /var/lib/tessera/recordings
COPY --from=build /usr/local/bin/tessera /usr/local/bin/tessera
USER 10001:10001
WORKDIR /var/lib/tessera
# A container is reached from outside it, so listen on every interface (that needs
# TESSERA_API_SECRET, or TESSERA_INSECURE=true on a trusted network). An env default rather than
# a flag in ENTRYPOINT, so a deployment can still override it. Recordings and HLS go to an
# absolute path: mount a volume there, or set TESSERA_RECORDINGS_URL to upload them to S3.
# GStreamer's plugin registry cache goes under XDG_CACHE_HOME: /tmp, so a read-only root
# filesystem (deploy/k8s) needs only a writable /tmp.
ENV TESSERA_LISTEN=0.0.0.0:8080 \
    TESSERA_RECORDINGS_DIR=/var/lib/tessera/recordings \
    XDG_CACHE_HOME=/tmp/.cache
# HTTP (signaling, API, web client), ICE-TCP, and the one UDP port of every peer connection.
EXPOSE 8080/tcp 7881/tcp 7882/udp
# /healthz answers 200 while the process runs (readiness is /readyz: 503 while full or draining,
# which is no reason to restart it). Asks loopback on TESSERA_LISTEN's port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["sh", "-c", "curl -fsS -o /dev/null \"http://127.0.0.1:${TESSERA_LISTEN##*:}/healthz\" || exit 1"]
# docker stop sends SIGTERM: Tessera drains (no new rooms or joins; rooms run until empty or
# TESSERA_DRAIN_TIMEOUT) and exits. Give it the time: docker stop -t 330. A second SIGTERM
# exits at once.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tessera", "serve"]
