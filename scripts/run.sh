#!/usr/bin/env bash
# The main job: sets up the environment (idempotent), then turns a WAV file
# into NAP frames.  Usage: scripts/run.sh [IN.wav [OUT.npz]]
# Without arguments it synthesises a 1 s demo (1 kHz tone) and converts that.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
in="${1:-}"
out="${2:-}"
if [ -z "$in" ]; then
  mkdir -p artifacts
  in=artifacts/demo_tone.wav
  out="${out:-artifacts/demo_tone_nap.npz}"
  .venv/bin/python -c "import numpy as np; from engine.nap_file import write_wav; t = np.arange(22050) / 22050; write_wav('$in', 0.1 * np.sin(2 * np.pi * 1000 * t), 22050)"
fi
exec .venv/bin/carfac-nap "$in" "${out:-${in%.*}_nap.npz}"
