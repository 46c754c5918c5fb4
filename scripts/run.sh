#!/usr/bin/env bash
# The main job: sets up the environment (idempotent), then serves the CARFAC
# WebSocket service (`carfac-server`) on http://127.0.0.1:8000, on the CPU,
# until Ctrl-C or SIGTERM.  Usage: scripts/run.sh [carfac-server flags]
# (e.g. --port 9000 --capacity 16); every flag is also a CARFAC_* variable.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
# Keep compiled executables between runs: a restart is ready in about a second.
export CARFAC_COMPILE_CACHE_DIR="${CARFAC_COMPILE_CACHE_DIR:-$PWD/.cache/jax-compile}"
exec .venv/bin/carfac-server "$@"
