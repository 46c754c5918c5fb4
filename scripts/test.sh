#!/usr/bin/env bash
# Sets up the environment (idempotent: system packages for the audio tests,
# then the virtual environment) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_system_packages.sh
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
