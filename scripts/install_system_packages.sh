#!/usr/bin/env bash
# Installs (idempotently) the Debian packages the tests need beyond Python:
#   libportaudio2                        PortAudio, which `sounddevice` loads at import
#   pulseaudio pulseaudio-utils          a sound server with a null sink (scripts/virtual_audio.sh)
#   libasound2-plugins                   ALSA's `pulse` device, through which PortAudio reaches it
#   sox                                  making and inspecting test audio by hand
#   podman buildah runc                  building and running the container image without a Docker
#                                        engine (runc: crun refuses this host's hybrid cgroups)
#   debootstrap                          the image's Debian base, made locally (no registry is reachable)
#   uidmap fuse-overlayfs slirp4netns    podman's helpers for user namespaces, storage and networking
#   haproxy                              the load balancer that tests/test_load_balancer.py puts in front of replicas
#   chromium                             the browser that tests/test_web_page.py drives (Python playwright,
#                                        which cannot download its own browser here)
# With --bench, also what the benchmarks need and the tests do not:
#   libeigen3-dev                        the headers the google/carfac C++ reference is compiled against
#                                        (bench/bench_model.py with CARFAC_REFERENCE_CPP set)
# apt-get runs only when one of them is missing, so a prepared machine pays
# one dpkg-query. Needs root (as in CI; no sudo is used).
set -euo pipefail
PACKAGES=(libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins sox haproxy
  podman buildah runc debootstrap uidmap fuse-overlayfs slirp4netns chromium)
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(libeigen3-dev)
fi

missing=()
for package in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_system_packages.sh: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "install_system_packages.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
