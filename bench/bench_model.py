"""Model speed, side by side with the google/carfac JAX reference; prints JSON.

Default design (22050 Hz, 71 channels, two_cap), mono, float32, closed loop,
input N(0, 1) * 1e-4 as in the reference's own benchmark. Measures

- offline: one ``run_segment_jit`` call on ``--seconds`` of audio (best of 5),
  as x real time; ours also with only the NAP requested;
- streaming: ``run_segment_jit`` on 256-sample blocks, state threaded through
  (median and p99 over 300 blocks), as a fraction of the block's duration.

Set ``CARFAC_REFERENCE_SRC`` to a google/carfac ``python/src`` checkout to time
the reference in the same run and print ratios (ours / reference speed). The
reference runs in a child process twice: as its users run it (JAX's default
XLA flags) and with the XLA:CPU flags ``import carfac`` sets (so the ratio of
the model code alone is visible too).

Set ``CARFAC_REFERENCE_CPP`` to a google/carfac checkout to time its C++ too
(``bench/reference_cpp.py``): one call, 256-sample blocks and one stream per
core on threads. Its IHC is one-capacitor, so ours is then also timed with
``ihc_style="one_cap"`` and the C++ ratios use that figure.

    python bench/bench_model.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

import carfac

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_cpp  # noqa: E402
from machine import describe  # noqa: E402

FS = 22050.0
BLOCK = 256


def _best_time(call: Callable[[], object], repeats: int = 5) -> float:
  jax.block_until_ready(call())  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return min(times)


def _block_times(step: Callable[[np.ndarray, object], object], state, blocks: np.ndarray) -> list[float]:
  """Seconds per block; ``step(block, state) -> new_state``. First 20 are warm-up."""
  times = []
  for i, block in enumerate(blocks):
    start = time.perf_counter()
    state = step(block, state)
    jax.block_until_ready(state)
    if i >= 20:
      times.append(time.perf_counter() - start)
  return times


def _summary(offline_s: float, seconds: float, block_times: list[float]) -> dict:
  block_s = BLOCK / FS
  ordered = sorted(block_times)
  return {
    "offline_x_real_time": seconds / offline_s,
    "block_median_ms": 1e3 * statistics.median(ordered),
    "block_p99_ms": 1e3 * ordered[int(0.99 * (len(ordered) - 1))],
    "block_median_fraction_of_duration": statistics.median(ordered) / block_s,
  }


def bench_ours(x: np.ndarray, blocks: np.ndarray, ihc_style: str = "two_cap") -> dict:
  params = carfac.CarfacDesignParameters(fs=FS)
  params.ears[0].ihc.ihc_style = ihc_style
  hypers, weights, _ = carfac.design_and_init_carfac(params, np.float32)
  fresh = lambda: carfac.design_and_init_carfac(params, np.float32)[2]
  full = _best_time(lambda: carfac.run_segment_jit(x, hypers, weights, fresh()))
  naps_only = jax.jit(
    lambda x, s: carfac.run_segment_outputs(x, hypers, weights, s, outputs=("naps",)),
    donate_argnums=1,
  )
  nap_time = _best_time(lambda: naps_only(x, fresh()))
  step = lambda block, state: carfac.run_segment_jit(block, hypers, weights, state).state
  result = _summary(full, len(x) / FS, _block_times(step, fresh(), blocks))
  result["offline_naps_only_x_real_time"] = len(x) / FS / nap_time
  return result


def _load_reference(src: Path):
  """The reference JAX module, loaded by path under a private name."""
  path = src / "carfac" / "jax" / "carfac.py"
  spec = importlib.util.spec_from_file_location("carfac_reference_jax", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def bench_reference(src: Path, x: np.ndarray, blocks: np.ndarray) -> dict:
  ref = _load_reference(src)
  params = ref.CarfacDesignParameters(fs=FS, n_ears=1)
  hypers, weights, state = ref.design_and_init_carfac(params)
  offline = _best_time(lambda: ref.run_segment_jit(x, hypers, weights, state))
  step = lambda block, st: ref.run_segment_jit(block, hypers, weights, st)[2]
  return _summary(offline, len(x) / FS, _block_times(step, state, blocks))


def reference_in_child(src: str, seconds: float, our_flags: bool) -> dict:
  """Times the reference in a fresh process, with or without our XLA flags."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["CARFAC_XLA_TUNING"] = "0"  # this script's own `import carfac` must not set them
  if our_flags:
    from carfac._xla_flags import tuned_xla_flags

    env["XLA_FLAGS"] = tuned_xla_flags("")
  command = [sys.executable, __file__, "--seconds", str(seconds), "--reference-only", src]
  out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
  return json.loads(out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seconds", type=float, default=2.0)
  parser.add_argument("--reference-only", metavar="SRC", help=argparse.SUPPRESS)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  x = (rng.standard_normal(int(args.seconds * FS)) * 1e-4).astype(np.float32)
  blocks = (rng.standard_normal((320, BLOCK)) * 1e-4).astype(np.float32)
  if args.reference_only:
    print(json.dumps(bench_reference(Path(args.reference_only), x, blocks)))
    return
  report = {
    "machine": describe(),
    "config": {
      "fs": FS,
      "n_ch": 71,
      "ears": 1,
      "dtype": "float32",
      "block": BLOCK,
      "seconds": args.seconds,
      "jax": jax.__version__,
    },
    "ours": bench_ours(x, blocks),
  }
  src = os.environ.get("CARFAC_REFERENCE_SRC")
  if src:
    reference = reference_in_child(src, args.seconds, our_flags=False)
    report["reference"] = reference
    report["reference_with_our_xla_flags"] = reference_in_child(src, args.seconds, our_flags=True)
    report["ratios"] = {
      "offline_speedup": report["ours"]["offline_x_real_time"] / reference["offline_x_real_time"],
      "offline_naps_only_speedup": report["ours"]["offline_naps_only_x_real_time"] / reference["offline_x_real_time"],
      "block_median_speedup": reference["block_median_ms"] / report["ours"]["block_median_ms"],
    }
  cpp = reference_cpp.checkout()
  if cpp:
    ours = report["ours_one_cap"] = bench_ours(x, blocks, "one_cap")
    threads = os.cpu_count() or 1
    reference = report["reference_cpp"] = reference_cpp.time_reference(cpp, args.seconds, BLOCK, threads)
    report["ratios_one_cap_over_cpp"] = {
      "offline_naps_only_speed": ours["offline_naps_only_x_real_time"] / reference["offline_x_real_time"],
      "block_median_speed": reference["block_median_ms"] / ours["block_median_ms"],
    }
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
