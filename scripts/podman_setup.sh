#!/usr/bin/env bash
# Prepares (idempotently) what the container tests need: podman and its
# helpers (through scripts/install_system_packages.sh, which runs apt-get only
# when a package is missing), and the base image localhost/debian-base:bookworm
# in the project's podman store (scripts/podman.sh).
#
# No container registry is reachable from CI, so the base is made here:
# debootstrap's minimal Debian bookworm with Python 3.11 (/usr/bin/python3)
# and its venv module, imported as an image. That takes 40 to 80 s, so it
# runs only when the image is missing; the store lives under /var/tmp and
# outlasts the run. Needs root, as in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_IMAGE=localhost/debian-base:bookworm

bash scripts/install_system_packages.sh
# `image exists` answers 1 for a missing image; anything else means podman
# itself does not work, and debootstrap would not help.
status=0
bash scripts/podman.sh image exists "$BASE_IMAGE" || status=$?
case $status in
  0) exit 0 ;;
  1) ;;
  *) echo "podman_setup.sh: podman does not work (status $status)" >&2; exit 1 ;;
esac

echo "podman_setup.sh: making $BASE_IMAGE with debootstrap" >&2
rootfs=$(mktemp -d /var/tmp/carfac-debootstrap.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
# The mirror apt itself uses (CI may pin a snapshot); Debian's CDN otherwise.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" \
  "${mirror:-http://deb.debian.org/debian}" >/dev/null
# Downloaded packages and apt lists are of no use in an image (about 90 MB).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
# An imported tarball has no configuration; give it the environment the
# official python images have, so Dockerfiles work the same on both.
tar -C "$rootfs" -c . | bash scripts/podman.sh import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$BASE_IMAGE" >/dev/null
