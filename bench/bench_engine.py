"""Engine speed: the stream pool's aggregate throughput and cold start; JSON.

Default design (22050 Hz, 71 channels, two_cap), mono, float32, 256-sample
blocks, 10 ms hop (220 samples). Measures

- pool: every slot of a full ``StreamPool`` steps one block per call (median
  of ``--steps`` calls); aggregate x real time = capacity * block duration /
  step time, i.e. how many real-time streams the pool sustains. For
  capacities 64 and 128 and 1 or 2 shards (one per core);
- load curve: a 64-slot pool (1 and 2 shards) with 1, 2, 4, ... 64 active
  streams: the step time, and the batch size each shard ran (the cost
  follows the load), beside a capacity-1 pool and ``run_segment_jit`` on one
  stream in the same blocks, and the real-time capacity the pool measures
  for itself (``StepCosts``, a step within 70% of a block);
- pictures: a full 64-slot pool with every stream's SAI and pitchogram
  (``pitchogram=``) against the same pool without, 1 shard and one per core:
  the extra time per stream and block, and the SAI's memory floor: the
  bytes a frame must move (``sai_floor_bytes``) over the copy bandwidth
  measured beside it, as a fraction of the NAP step (``--pictures-only``:
  just this);
- batch sweep: one full shard of 1 to 128 streams, its cost per channel and
  sample (``--batch-sweep``: just this);
- per-stream weights: a full 64-slot pool whose streams each carry their
  own weights (``per_stream_weights=True``, hearing profiles) against shared
  weights, 1 shard and one per core (``--weights-only``: just this);
- block sizes: a full 64-slot pool, one shard per core, with blocks of 256
  to 14080 samples (``--blocks-only``: just this);
- cold start: wall time of a fresh process that imports, builds a 64-slot,
  2-shard pool and steps its first block, with JAX's persistent compilation
  cache empty and then warm;
- reference (``CARFAC_REFERENCE_SRC`` set to a google/carfac ``python/src``):
  ``jax.vmap`` of its ``run_segment`` over 64 streams (how its README batches
  streams), in a separate process with JAX's default flags;
- C++ reference (``CARFAC_REFERENCE_CPP`` set to a google/carfac checkout,
  ``bench/reference_cpp.py``): one stream per core on threads, against a full
  64-slot pool of our ``one_cap`` design (the C++ IHC) with one shard per core,
  as x real time per core (``--cpp-only``: just this).

    python bench/bench_engine.py [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import carfac
from engine.pool import StreamPool
from engine.scheduler import StepCosts

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_cpp  # noqa: E402
from machine import accelerator, copy_bandwidth_gb_s, describe, device_copy_bandwidth_gb_s  # noqa: E402

FS, BLOCK, HOP = 22050.0, 256, 220
ROOT = Path(__file__).resolve().parents[1]

_COLD_START = """
import time; t0 = time.perf_counter()
import sys, numpy as np, carfac
from engine.compile_cache import enable_compilation_cache
from engine.pool import StreamPool
enable_compilation_cache(sys.argv[1])
pool = StreamPool(carfac.CarfacDesignParameters(), capacity=64, block_size=256, hop=220, shards=2)
slot = pool.join()
assert len(pool.step({slot: np.full(256, 0.01, np.float32)})[slot].frames) == 1
"""

_REFERENCE_VMAP = """
import importlib.util, json, sys, time, jax, jax.numpy as jnp, numpy as np
spec = importlib.util.spec_from_file_location("carfac_reference_jax", sys.argv[1] + "/carfac/jax/carfac.py")
ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
n_streams, block = int(sys.argv[2]), int(sys.argv[3])
hypers, weights, state = ref.design_and_init_carfac(ref.CarfacDesignParameters(fs=22050.0, n_ears=1))
states = jax.tree.map(lambda a: jnp.stack([a] * n_streams), state)
run = jax.jit(jax.vmap(lambda x, s: ref.run_segment(x, hypers, weights, s)[2], in_axes=(0, 0)))
x = jnp.asarray(np.random.default_rng(0).standard_normal((n_streams, block)).astype(np.float32) * 1e-4)
states = jax.block_until_ready(run(x, states))
times = []
for _ in range(10):
  t = time.perf_counter(); states = jax.block_until_ready(run(x, states)); times.append(time.perf_counter() - t)
print(json.dumps({"streams": n_streams, "step_median_ms": 1e3 * sorted(times)[5],
                  "aggregate_x_real_time": n_streams * block / 22050.0 / sorted(times)[5]}))
"""


def median_step(pool: StreamPool, slots: list[int], steps: int) -> float:
  """Median wall time of ``pool.step`` with a block of noise for each of ``slots`` (after 3 warm-up steps)."""
  rng = np.random.default_rng(0)
  blocks = (rng.standard_normal((pool.capacity, pool.block_size, pool.n_ears)) * 1e-2).astype(np.float32)
  times = []
  for i in range(steps + 3):
    start = time.perf_counter()
    pool.step({slot: blocks[slot] for slot in slots})
    if i >= 3:
      times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_pool(capacity: int, shards: int, steps: int, ihc_style: str = "two_cap", block: int = BLOCK) -> dict:
  """A full pool's median step; only its full batch size is compiled (the only one a full pool runs)."""
  params = carfac.CarfacDesignParameters(fs=FS)
  params.ears[0].ihc.ihc_style = ihc_style
  start = time.perf_counter()
  pool = StreamPool(params, capacity, block, HOP, shards=shards, buckets=(capacity // shards,))
  build_s = time.perf_counter() - start
  median = median_step(pool, [pool.join() for _ in range(capacity)], steps)
  return {
    "capacity": capacity,
    "shards": shards,
    "ihc_style": ihc_style,
    "block": block,
    "build_and_compile_s": build_s,
    "step_median_ms": 1e3 * median,
    "step_fraction_of_block": median / (block / FS),
    "aggregate_x_real_time": capacity * block / FS / median,
  }


BLOCK_LADDER = (256, 1024, 4096, 14080)  # 14080: 64 hops of 220, carfac-nap's block


def bench_block_sizes(steps: int, shards: int, capacity: int = 64) -> list[dict]:
  """A full pool's aggregate throughput against the block size: what a step's fixed cost takes at small blocks."""
  return [bench_pool(capacity, shards, max(3, steps * BLOCK // block), block=block) for block in BLOCK_LADDER]


BATCH_LADDER = (1, 4, 16, 64, 128)


def bench_batch_sweep(steps: int, batches: Sequence[int] = BATCH_LADDER) -> list[dict]:
  """One shard, full, at each batch size: the cost per channel and sample, which would fall if batching vectorised."""
  n_ch = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(fs=FS))[0].ears[0].car.n_ch
  sweep = []
  for capacity in batches:
    run = bench_pool(capacity, 1, steps, "one_cap")
    sweep.append({**run, "ns_per_channel_sample": 1e6 * run["step_median_ms"] / (capacity * BLOCK * n_ch)})
  return sweep


def _full_pool_medians(variants: dict[str, dict], shards: int, steps: int, capacity: int) -> dict[str, float]:
  """Median step of a full pool built with each variant's ``StreamPool`` options, measured A B A B."""
  params = carfac.CarfacDesignParameters(fs=FS)
  pools = {
    name: StreamPool(params, capacity, BLOCK, HOP, shards=shards, buckets=(capacity // shards,), **options)
    for name, options in variants.items()
  }
  slots = {name: [pool.join() for _ in range(capacity)] for name, pool in pools.items()}
  rounds = {name: [] for name in pools}
  for _ in range(3):
    for name, pool in pools.items():
      rounds[name].append(median_step(pool, slots[name], steps))
  return {name: statistics.median(times) for name, times in rounds.items()}


def sai_floor_bytes(sai: carfac.SaiHypers, itemsize: int) -> int:
  """Bytes one SAI frame must move, per stream and segment, however its passes are fused.

  The frame is read and written (every column is blended into, with a
  weight that depends on the segment's triggers); the new NAP segment is
  written into the buffer; and at least one lagged window of ``sai_width``
  samples per channel is read from it. Between segments the frame and the
  buffer live in memory: a pool touches every stream's, far more than a
  core's L2.
  """
  return sai.num_channels * itemsize * (3 * sai.sai_width + sai.input_segment_width)


def pictures_bandwidth_floor(shards: int, capacity: int, nap_only_s: float) -> dict:
  """The SAI's memory floor for a full pool, against the NAP-only step.

  On a CPU, bandwidth is measured as ``shards`` concurrent copies, each of a
  shard's picture state (its streams' frames and buffers), the working set a
  step sweeps; on an accelerator, as one copy of the pool's picture state on
  the device.
  """
  (sai, _), (sai_state, _) = carfac.design_and_init_pitchogram_stages(
    FS, carfac.CarfacDesignParameters(fs=FS).ears[0].car, carfac.PitchogramPipelineParams(), np.float32
  )
  state_bytes = sai_state.ring.nbytes + sai_state.frame.nbytes
  megabytes = max(1, capacity // shards * state_bytes // 2**20)
  if accelerator()["backend"] == "cpu":
    bandwidth = copy_bandwidth_gb_s(shards, megabytes)
  else:
    bandwidth = device_copy_bandwidth_gb_s(shards * megabytes)
  floor_bytes = sai_floor_bytes(sai, sai_state.frame.dtype.itemsize)
  floor_s = capacity * floor_bytes / (bandwidth * 1e9)
  return {
    "sai_floor_bytes_per_stream_block": floor_bytes,
    "sai_state_bytes_per_stream": state_bytes,
    "copy_bandwidth_gb_s": bandwidth,
    "floor_ms_per_stream": 1e3 * floor_s / capacity,
    "floor_over_nap_step": floor_s / nap_only_s,
  }


def bench_pictures(shards: int, steps: int, capacity: int = 64) -> dict:
  """A full pool with the SAI and pitchogram of every stream against the same pool without, and the SAI's memory floor."""
  medians = _full_pool_medians(
    {"nap_only": {}, "with_pictures": {"pitchogram": carfac.PitchogramPipelineParams()}}, shards, steps, capacity
  )
  return {
    "capacity": capacity,
    "shards": shards,
    **{f"{name}_step_median_ms": 1e3 * t for name, t in medians.items()},
    "pictures_ms_per_stream": 1e3 * (medians["with_pictures"] - medians["nap_only"]) / capacity,
    "pictures_extra_over_nap_step": medians["with_pictures"] / medians["nap_only"] - 1,
    "with_pictures_aggregate_x_real_time": capacity * BLOCK / FS / medians["with_pictures"],
    "bandwidth_floor": pictures_bandwidth_floor(shards, capacity, medians["nap_only"]),
  }


def bench_per_stream_weights(shards: int, steps: int, capacity: int = 64) -> dict:
  """A full pool whose streams each carry their own weights (hearing profiles) against shared weights."""
  medians = _full_pool_medians({"shared": {}, "per_stream": {"per_stream_weights": True}}, shards, steps, capacity)
  return {
    "capacity": capacity,
    "shards": shards,
    **{f"{name}_weights_step_median_ms": 1e3 * t for name, t in medians.items()},
    "per_stream_over_shared": medians["per_stream"] / medians["shared"],
  }


def bench_load_curve(shards: int, steps: int, capacity: int = 64) -> dict:
  """Step time against active streams in one pool, and the capacity it measures for itself."""
  pool = StreamPool(carfac.CarfacDesignParameters(fs=FS), capacity, BLOCK, HOP, shards=shards)
  costs = StepCosts.measure(pool)
  curve, slots = [], []
  for active in sorted({1 << k for k in range(capacity.bit_length())} | {capacity}):
    slots += [pool.join() for _ in range(active - len(slots))]
    median = median_step(pool, slots, steps)
    curve.append({
        "active": active,
        "batch_per_shard": [pool.bucket_for(n) for n in pool.shard_streams],
        "step_median_ms": 1e3 * median,
        "step_fraction_of_block": median / (BLOCK / FS),
    })  # fmt: skip
  return {
    "capacity": capacity,
    "shards": shards,
    "curve": curve,
    "measured_step_ms": {size: 1e3 * t for size, t in costs.seconds.items()},
    "realtime_streams_at_70pct": costs.realtime_streams(pool, 0.7),
  }


def bench_one_stream(steps: int) -> dict:
  """A capacity-1 pool against ``run_segment_jit`` on the same 256-sample blocks of one stream."""
  pool = StreamPool(carfac.CarfacDesignParameters(fs=FS), 1, BLOCK, HOP)
  pool_s = median_step(pool, [pool.join()], steps)
  hypers, weights, state = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(fs=FS), np.float32)
  block = (np.random.default_rng(0).standard_normal(BLOCK) * 1e-2).astype(np.float32)
  times = []
  for i in range(steps + 3):
    start = time.perf_counter()
    out = carfac.run_segment_jit(block, hypers, weights, state)
    out.naps.block_until_ready()
    state = out.state
    if i >= 3:
      times.append(time.perf_counter() - start)
  jit_s = statistics.median(times)
  return {
    "capacity_1_pool_ms": 1e3 * pool_s,
    "run_segment_jit_ms": 1e3 * jit_s,
    "pool_speed_over_run_segment_jit": jit_s / pool_s,
  }


def bench_cold_start() -> dict:
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  with tempfile.TemporaryDirectory() as cache:
    walls = []
    for _ in range(2):
      start = time.perf_counter()
      subprocess.run([sys.executable, "-c", _COLD_START, cache], check=True, env=env)
      walls.append(time.perf_counter() - start)
  return {"empty_cache_s": walls[0], "warm_cache_s": walls[1]}


def bench_reference(src: str, n_streams: int = 64) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the reference as its users run it
  out = subprocess.run(
    [sys.executable, "-c", _REFERENCE_VMAP, src, str(n_streams), str(BLOCK)],
    check=True,
    env=env,
    capture_output=True,
    text=True,
  ).stdout
  return json.loads(out.strip().splitlines()[-1])


def _sizes(text: str) -> tuple[int, ...]:
  """A comma-separated list of positive sizes, e.g. ``1,64,4096``."""
  return tuple(int(part) for part in text.split(","))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--pictures-only", action="store_true", help="only the SAI and pitchogram cost")
  parser.add_argument("--weights-only", action="store_true", help="only the cost of per-stream weights")
  parser.add_argument("--blocks-only", action="store_true", help="only the throughput against the block size")
  parser.add_argument("--cpp-only", action="store_true", help="only the pool against the C++ reference")
  parser.add_argument("--batch-sweep", action="store_true", help="only one shard's cost per channel-sample by batch")
  parser.add_argument("--batches", type=_sizes, default=BATCH_LADDER, help="the sweep's batch sizes, e.g. 1,64,4096")
  parser.add_argument("--one-stream-only", action="store_true", help="only a capacity-1 pool against run_segment_jit")
  parser.add_argument("--capacity", type=int, default=64, help="slots of the pictures and weights pools")
  parser.add_argument("--shards", type=_sizes, default=None, help="shard counts to try (default: 1 and one per core)")
  args = parser.parse_args()
  cores = os.cpu_count() or 1
  shard_counts = args.shards or sorted({1, cores})
  if args.batch_sweep:
    sweep = bench_batch_sweep(args.steps, args.batches)
    print(json.dumps({"machine": describe() | accelerator(), "batch_sweep": sweep}, indent=2))
    return
  if args.one_stream_only:
    print(json.dumps({"machine": describe() | accelerator(), "one_stream": bench_one_stream(args.steps)}, indent=2))
    return
  if args.cpp_only:
    cpp = reference_cpp.checkout()
    if cpp is None:
      parser.error("--cpp-only needs CARFAC_REFERENCE_CPP (a google/carfac checkout)")
    print(json.dumps({"machine": describe() | accelerator(), **bench_against_cpp(cpp, args.steps, cores)}, indent=2))
    return
  if args.blocks_only:
    print(
      json.dumps({"machine": describe() | accelerator(), "block_sizes": bench_block_sizes(args.steps, cores)}, indent=2)
    )
    return
  per_stream_weights = [bench_per_stream_weights(s, args.steps, args.capacity) for s in shard_counts]
  if args.weights_only:
    print(json.dumps({"machine": describe() | accelerator(), "per_stream_weights": per_stream_weights}, indent=2))
    return
  pictures = [bench_pictures(s, args.steps, args.capacity) for s in shard_counts]
  if args.pictures_only:
    print(json.dumps({"machine": describe() | accelerator(), "pictures": pictures}, indent=2))
    return
  report = {
    "machine": describe() | accelerator(),
    "config": {"fs": FS, "block": BLOCK, "hop": HOP, "dtype": "float32"},
    "pool": [bench_pool(c, s, args.steps) for c in (64, 128) for s in (1, 2)],
    "pictures": pictures,
    "per_stream_weights": per_stream_weights,
    "block_sizes": bench_block_sizes(args.steps, cores),
    "load_curve": [bench_load_curve(s, args.steps) for s in (1, 2)],
    "one_stream": bench_one_stream(args.steps),
    "cold_start": bench_cold_start(),
  }
  for load in report["load_curve"]:
    load["one_active_over_capacity_1"] = load["curve"][0]["step_median_ms"] / report["one_stream"]["capacity_1_pool_ms"]
  src = os.environ.get("CARFAC_REFERENCE_SRC")
  if src:
    reference = bench_reference(src)
    best = max(p["aggregate_x_real_time"] for p in report["pool"])
    report["reference_vmap"] = reference
    report["ratios"] = {"pool_aggregate_speedup": best / reference["aggregate_x_real_time"]}
  cpp = reference_cpp.checkout()
  if cpp:
    report |= bench_against_cpp(cpp, args.steps, cores)
  print(json.dumps(report, indent=2))


def bench_against_cpp(cpp: str, steps: int, cores: int) -> dict:
  """A full 64-slot ``one_cap`` pool (one shard per core) against the C++ reference, a stream per core."""
  ours = bench_pool(64, cores, steps, "one_cap")
  reference = reference_cpp.time_reference(cpp, 10.0, BLOCK, cores)
  return {
    "pool_one_cap": ours,
    "reference_cpp": reference,
    "per_core_one_cap": {
      "pool_x_real_time": ours["aggregate_x_real_time"] / cores,
      "cpp_threads_x_real_time": reference["threads_aggregate_x_real_time"] / cores,
      "pool_over_cpp": ours["aggregate_x_real_time"] / reference["threads_aggregate_x_real_time"],
    },
  }


if __name__ == "__main__":
  main()
