#!/bin/bash
# The checks that need an accelerator, in one call of a few minutes (README, "On a GPU"):
# the model on the GPU against the CPU (float64), a full pool's step from 1 to 4096 streams,
# and the pictures' extra cost at 256 slots. Runs from the repository root with the
# machine's own python3 (JAX with its CUDA plugin, numpy, pytest); JSON goes to $OUT
# (default: a temporary folder), a summary to stdout.
set -u
OUT=${OUT:-$(mktemp -d)}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
timeout 120 python3 -m pytest -q -rs --noconftest tests/test_accelerator.py
timeout 150 python3 bench/bench_engine.py --batch-sweep --batches 1,256,1024,4096 --steps 10 > "$OUT/sweep.json"
timeout 120 python3 bench/bench_engine.py --pictures-only --capacity 256 --shards 1 --steps 10 > "$OUT/pictures.json"
python3 - "$OUT" <<'PY'
import json, sys
sweep = json.load(open(f"{sys.argv[1]}/sweep.json"))["batch_sweep"]
pictures = json.load(open(f"{sys.argv[1]}/pictures.json"))["pictures"][0]
for run in sweep:
  print(f"{run['capacity']:5d} streams: {run['step_median_ms']:7.2f} ms per block, {run['aggregate_x_real_time']:7.0f}x real time")
print(f"pictures at 256 slots: +{100 * pictures['pictures_extra_over_nap_step']:.0f}% over the NAP step")
PY
