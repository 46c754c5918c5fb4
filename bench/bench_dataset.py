"""Dataset throughput: ``carfac-nap INPUT... OUT_DIR`` against one file at a time, and against the pool; JSON.

Writes ``--files`` WAV files of 5 to 30 s (noise and tones, mono, at
``--rate``) to a temporary folder, then times, in one process:

- dataset: ``engine.dataset.DatasetConverter`` over all of them (``--batch``
  files stepped together, one shard per core), reading, resampling and
  writing included: x real time = audio seconds / wall seconds;
- one file at a time, as ``carfac-nap IN OUT`` does it: a fresh one-slot
  pool per file (``audio_to_nap_frames``, compiled per file), on the first
  ``--loop-files`` files, and the same loop with one one-slot pool reused
  (compiled once: the loop's cost without its compilations);
- the pool alone: a full pool of the dataset's size stepping blocks already
  in memory: the ceiling the dataset run is measured against.

    python bench/bench_dataset.py [--files 200] [--batch 32] [--rate 22050]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

import carfac
from engine import dataset
from engine.offline import audio_to_nap_frames
from engine.pool import StreamPool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import median_step  # noqa: E402
from machine import describe  # noqa: E402

MODEL_RATE, HOP, FRAMES_PER_BLOCK = 22050.0, 220, 64


def write_files(folder: Path, n: int, rate: int, seed: int = 0) -> list[Path]:
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(n):
    seconds = rng.uniform(5, 30)
    t = np.arange(round(seconds * rate)) / rate
    audio = 0.05 * rng.standard_normal(len(t)) + 0.1 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
    paths.append(folder / f"file{i:04d}.wav")
    soundfile.write(paths[-1], audio.astype(np.float32), rate, subtype="PCM_16")
  return paths


def bench_dataset(paths: list[Path], out_dir: Path, batch: int, shards: int) -> dict:
  options = dataset.Options(
    model_rate=MODEL_RATE, hop=HOP, frames_per_block=FRAMES_PER_BLOCK, batch=batch, shards=shards
  )
  converter = dataset.DatasetConverter(options)
  compile_started = time.perf_counter()
  converter.pool(1)  # compiled before the clock starts, as the pool figure below is
  compile_s = time.perf_counter() - compile_started
  started = time.perf_counter()
  summary = converter.run(dataset.expand_inputs([str(p) for p in paths], out_dir), out_dir)
  wall = time.perf_counter() - started
  assert summary.done == len(paths) and summary.failed == 0, summary
  return {
    "files": len(paths),
    "audio_s": summary.audio_seconds,
    "wall_s": wall,
    "compile_s": compile_s,
    "x_real_time": summary.audio_seconds / wall,
  }


def bench_one_at_a_time(paths: list[Path], reuse_pool: bool) -> dict:
  params = carfac.CarfacDesignParameters(fs=MODEL_RATE)
  block = HOP * FRAMES_PER_BLOCK
  pool = StreamPool(params, capacity=1, block_size=block, hop=HOP) if reuse_pool else None
  audio_s = 0.0
  started = time.perf_counter()
  for path in paths:
    audio = soundfile.read(path, dtype="float32", always_2d=True)[0]
    audio_s += len(audio) / MODEL_RATE
    if pool is None:
      audio_to_nap_frames(audio, params, HOP)
      continue
    slot = pool.join()
    padded = np.zeros((-(-len(audio) // block) * block, 1), np.float32)
    padded[: len(audio)] = audio
    for start in range(0, len(padded), block):
      pool.step({slot: padded[start : start + block]})
    pool.leave(slot)
  wall = time.perf_counter() - started
  return {"files": len(paths), "audio_s": audio_s, "wall_s": wall, "x_real_time": audio_s / wall}


def bench_pool(batch: int, shards: int, steps: int = 10) -> dict:
  block = HOP * FRAMES_PER_BLOCK
  pool = StreamPool(carfac.CarfacDesignParameters(fs=MODEL_RATE), batch, block, HOP, shards=shards)
  step = median_step(pool, [pool.join() for _ in range(batch)], steps)
  return {"batch": batch, "shards": shards, "step_median_s": step, "x_real_time": batch * block / MODEL_RATE / step}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--files", type=int, default=200)
  parser.add_argument("--loop-files", type=int, default=20, help="files timed one at a time (a slow loop)")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--rate", type=int, default=22050, help="the files' rate (other than 22050: resampled)")
  args = parser.parse_args()
  cores = os.cpu_count() or 1
  shards = max(d for d in range(1, cores + 1) if args.batch % d == 0)
  with tempfile.TemporaryDirectory() as folder:
    (Path(folder) / "in").mkdir()
    paths = write_files(Path(folder) / "in", args.files, args.rate)
    pool = bench_pool(args.batch, shards)
    batched = bench_dataset(paths, Path(folder) / "out", args.batch, shards)
    fresh = bench_one_at_a_time(paths[: args.loop_files], reuse_pool=False)
    reused = bench_one_at_a_time(paths[: args.loop_files], reuse_pool=True)
  report = {
    "machine": describe(),
    "config": {"files_rate_hz": args.rate, "model_rate_hz": MODEL_RATE, "hop": HOP, "block": HOP * FRAMES_PER_BLOCK},
    "pool_alone": pool,
    "dataset": batched,
    "one_at_a_time_fresh_pool": fresh,
    "one_at_a_time_reused_pool": reused,
    "ratios": {
      "dataset_over_pool_alone": batched["x_real_time"] / pool["x_real_time"],
      "dataset_over_one_at_a_time_fresh": batched["x_real_time"] / fresh["x_real_time"],
      "dataset_over_one_at_a_time_reused": batched["x_real_time"] / reused["x_real_time"],
    },
  }
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
