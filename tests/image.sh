# The container image, built and run without a registry, for connector/tests/image.rs:
# Debian's buildah builds the repository's Dockerfile on a base root filesystem made here by
# mmdebstrap (from Debian's packages) and imported into the local image store; podman runs it.
#
#   source tests/image.sh && start_image_tools      # installs the tools, makes the base image
#   bash tests/image.sh build BINARY WASM TAG        # the Dockerfile with these binaries
#   bash tests/image.sh run ARGS...                  # podman run with the flags this sandbox needs
#
# What this sandbox needs (README "The container image"): podman's default rlimits (nofile
# 1048576) exceed the hard limits here and the process lacks CAP_SYS_RESOURCE, so the limits
# are set at or below the current ones; crun refuses cgroups in hybrid mode, so runc runs the
# containers with the cgroupfs manager; buildah's RUN steps use chroot isolation.
IMAGE_BASE=${IMAGE_BASE:-localhost/cdc-test-base:bookworm}
IMAGE_DIR=${IMAGE_DIR:-/tmp/cdc-test-image}

image_tools_installed() {
  command -v buildah >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null \
    && command -v mmdebstrap >/dev/null
}

start_image_tools() {
  if ! image_tools_installed; then
    local SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq buildah podman runc \
      mmdebstrap uidmap >/dev/null
  fi
  if ! podman image exists "$IMAGE_BASE"; then
    mkdir -p "$IMAGE_DIR"
    # Debian's minimal base (apt, passwd, zlib: what the binary links) and the CA bundle
    mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$IMAGE_DIR/base.tar"
    podman import --quiet "$IMAGE_DIR/base.tar" "$IMAGE_BASE" >/dev/null
    rm -f "$IMAGE_DIR/base.tar"
  fi
  export CDC_TEST_IMAGE_SCRIPT
  CDC_TEST_IMAGE_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/image.sh"
}

# image_build BINARY WASM TAG: the Dockerfile's `prebuilt` path, these binaries in out/
image_build() {
  local root context
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  context=$(mktemp -d)
  mkdir -p "$context/out"
  strip -o "$context/out/iceberg-cdc-sink" "$1"
  cp "$2" "$context/out/debezium_cdc.wasm"
  buildah bud --quiet --isolation chroot --layers=false \
    --build-arg BASE="$IMAGE_BASE" --build-arg BINARIES=prebuilt \
    -f "$root/Dockerfile" -t "$3" "$context"
  local status=$?
  rm -rf "$context"
  # buildah keeps a working container (and its untagged image) for a stage that is only a
  # FROM (`binaries`): these machines build nothing else with buildah, so all such go
  buildah rm --all >/dev/null 2>&1 || true
  buildah rmi --prune >/dev/null 2>&1 || true
  return $status
}

image_run() {
  podman --runtime runc --cgroup-manager cgroupfs run \
    --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096 "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    build) shift; image_build "$@" ;;
    run) shift; image_run "$@" ;;
    *) echo "usage: $0 build BINARY WASM TAG | run ARGS..." >&2; exit 2 ;;
  esac
fi
