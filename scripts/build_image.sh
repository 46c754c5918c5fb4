#!/usr/bin/env bash
# Builds the CPU image with podman, offline, from the debootstrap base:
#
#   scripts/build_image.sh [IMAGE]      # default localhost/carfac-server:ci
#
# The runtime dependencies (and the build backend) are made into wheels on
# the host, in docker/wheelhouse/, pinned to the versions installed in .venv,
# so that the image runs what the host's tests ran. The build installs from
# there alone (PIP_NO_INDEX=1): no network or CA bundle is needed inside it.
# The wheelhouse is refilled only when the requirements or the pins change,
# so its files (and with them podman's layer cache for the dependencies) stay
# as they are between builds.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${1:-localhost/carfac-server:ci}
BASE_IMAGE=localhost/debian-base:bookworm  # made by scripts/podman_setup.sh
WHEELHOUSE=docker/wheelhouse

bash scripts/podman_setup.sh
bash scripts/setup.sh

# What the image installs, and the build backend (docker/requirements.py).
mapfile -t requirements < <(.venv/bin/python docker/requirements.py --build)
pins=$(.venv/bin/python -m pip freeze --exclude-editable)
stamp=$WHEELHOUSE/.filled-$(printf '%s\n' "${requirements[@]}" "$pins" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  rm -f "$WHEELHOUSE"/*.whl "$WHEELHOUSE"/.filled-*
  .venv/bin/python -m pip wheel --quiet --wheel-dir "$WHEELHOUSE" \
    --constraint <(printf '%s\n' "$pins") "${requirements[@]}"
  touch "$stamp"
fi

# --format docker: OCI image configs cannot hold the HEALTHCHECK.
# --network none: proves that the build needs nothing but the wheelhouse.
bash scripts/podman.sh build --quiet --pull=never --format docker --network none \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg PIP_NO_INDEX=1 \
  -f docker/Dockerfile -t "$IMAGE" . >/dev/null
