#!/usr/bin/env bash
# Sets up the environment (idempotent: system packages for the audio, browser
# and container tests, the virtual environment, then podman's configuration and
# base image) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_system_packages.sh
bash scripts/setup.sh
# Not fatal: without podman the rest of the suite still runs, and
# tests/test_container.py fails with the reason.
bash scripts/podman_setup.sh || echo "test.sh: podman set-up failed; the container tests will fail" >&2
exec .venv/bin/python -m pytest "$@"
