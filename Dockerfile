# The connector as a container image: the binary, the debezium-cdc SmartModule (.wasm) and a
# config location, on a slim Debian, run as a user of its own.
#
#   docker build -t iceberg-cdc-sink .
#   docker run --rm -v $PWD/connector.yaml:/etc/iceberg-cdc/connector.yaml:ro \
#     -v iceberg-cdc-state:/var/lib/iceberg-cdc \
#     -e EXTERNAL_IP=10.0.0.5 -e S3_ACCESS_KEY=... -e S3_SECRET_KEY=... \
#     -e BOOTSTRAP_SERVER_URL=kafka:9092 iceberg-cdc-sink
#
# README "The container image" has the rest (secrets, metrics, what CI builds it from).

# Where the images come from; CI sets them to images made locally (no registry).
ARG BUILDER=docker.io/library/rust:1-bookworm
ARG BASE=docker.io/library/debian:bookworm-slim
# `build` compiles the binaries here; `prebuilt` takes them from the build context's `out/`
# (iceberg-cdc-sink and debezium_cdc.wasm, built beside). A stage nobody uses is skipped.
ARG BINARIES=build

FROM ${BUILDER} AS build
WORKDIR /src
COPY . .
# Debian's rustc-web, rust-web-src and lld build the .wasm (build-wasm.sh installs them)
RUN bash smartmodule/build-wasm.sh --locked \
 && cargo build --release --locked -p iceberg-cdc-sink \
 && mkdir /out \
 && cp target/release/iceberg-cdc-sink target/wasm32-unknown-unknown/release-lto/debezium_cdc.wasm /out/

FROM ${BASE} AS prebuilt
COPY out/iceberg-cdc-sink out/debezium_cdc.wasm /out/

FROM ${BINARIES} AS binaries

FROM ${BASE}
RUN if [ -x /usr/bin/apt-get ] && [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then \
      apt-get update && apt-get install -y --no-install-recommends ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --gid 10001 iceberg-cdc \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/iceberg-cdc --no-create-home iceberg-cdc \
 && mkdir -p /etc/iceberg-cdc /var/lib/iceberg-cdc \
 && chown 10001:10001 /var/lib/iceberg-cdc
COPY --from=binaries /out/iceberg-cdc-sink /usr/local/bin/iceberg-cdc-sink
COPY --from=binaries /out/debezium_cdc.wasm /usr/local/share/iceberg-cdc/debezium_cdc.wasm
# the SmartModule for `uses: cdc-iceberg/debezium-cdc@0.1.0` when iceberg.smartmodules
# names none
ENV DEBEZIUM_CDC_WASM=/usr/local/share/iceberg-cdc/debezium_cdc.wasm
USER 10001:10001
WORKDIR /var/lib/iceberg-cdc
# the SQLite catalog, the dead letters (by default next to it) and a local warehouse live
# here when the config says so
VOLUME /var/lib/iceberg-cdc
# /metrics, /health, /ready when iceberg.metrics.address is set (e.g. 0.0.0.0:9464)
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/iceberg-cdc-sink", "--config", "/etc/iceberg-cdc/connector.yaml"]
