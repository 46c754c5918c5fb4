#!/usr/bin/env bash
# podman with the project's own configuration, so CI never touches the
# machine's /etc/containers or podman's default store:
#
#   scripts/podman.sh images          # any podman command line
#
# Everything lives under $CARFAC_PODMAN_DIR (default /var/tmp/carfac-podman,
# which survives between runs on the same machine, so the debootstrap base
# image and the build cache are made once). The configuration works around
# two limits of the CI sandbox (see /work/shared/recipes/environment.md, 3):
#   - CAP_SYS_RESOURCE is missing, so podman's default ulimits (it raises
#     nofile and nproc) fail with "setrlimit: Operation not permitted";
#     containers get lower limits instead;
#   - cgroups are hybrid v1 + v2, which crun refuses; runc accepts them.
# Storage is overlay (a run takes well under a second; vfs copies the whole
# root filesystem each time) in its own graphroot, because switching drivers
# on an existing store fails ("database graph driver mismatch").
set -euo pipefail
dir=${CARFAC_PODMAN_DIR:-/var/tmp/carfac-podman}

# Writes $1 from stdin unless it already has that content; the rename makes
# the change atomic for a podman reading it concurrently.
write_if_changed() {
  local content
  content=$(cat)
  if [ "$(cat "$1" 2>/dev/null)" != "$content" ]; then
    printf '%s\n' "$content" >"$1.tmp.$$"
    mv "$1.tmp.$$" "$1"
  fi
}

mkdir -p "$dir"
write_if_changed "$dir/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
write_if_changed "$dir/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$dir/storage"
runroot = "$dir/run"
EOF

export CONTAINERS_CONF=$dir/containers.conf CONTAINERS_STORAGE_CONF=$dir/storage.conf
exec podman "$@"
