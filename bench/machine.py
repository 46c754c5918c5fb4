"""What machine a benchmark ran on: CPU model, cores and vector flags (printed beside every figure)."""

from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl")


def describe() -> dict:
  """CPU model, logical CPUs, and which of the vector extensions that matter to XLA:CPU it has."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      for line in cpuinfo:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
          break
  except OSError:
    pass
  return {"cpu": model, "cpus": os.cpu_count(), "vector_flags": [f for f in _VECTOR_FLAGS if f in flags]}


def accelerator() -> dict:
  """JAX's backend and its devices (e.g. an NVIDIA H200), printed beside the CPU: figures depend on both."""
  import jax  # here, not at the top: the server benchmark's parent process does not start JAX

  return {"jax": jax.__version__, "backend": jax.default_backend(), "devices": [d.device_kind for d in jax.devices()]}


def device_copy_bandwidth_gb_s(megabytes: int = 1024, repeats: int = 10) -> float:
  """Memory bandwidth (GB/s read + written) of a copy on JAX's default device: the floor's rate on a GPU."""
  import jax
  import jax.numpy as jnp

  source = jnp.ones(megabytes * 2**20 // 4, jnp.float32)
  copy = jax.jit(lambda a: a * 2)
  copy(source).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    copy(source).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * source.nbytes / best / 1e9


def copy_bandwidth_gb_s(threads: int = 1, megabytes: int = 64, repeats: int = 10) -> float:
  """Memory bandwidth (GB/s read + written) of ``threads`` concurrent copies, each of its own array.

  Each array is far larger than a core's L2, as a pool's SAI frames are, so
  this is what passes over whole frames can reach. numpy's copy releases the
  GIL, so the threads copy in parallel; the best of ``repeats`` rounds.
  """
  n = megabytes * 2**20 // 4
  sources = [np.ones(n, np.float32) for _ in range(threads)]
  targets = [np.empty_like(s) for s in sources]
  copy = lambda pair: np.copyto(pair[1], pair[0])
  best = float("inf")
  with ThreadPoolExecutor(threads) as executor:
    for _ in range(repeats):
      start = time.perf_counter()
      list(executor.map(copy, zip(sources, targets)))
      best = min(best, time.perf_counter() - start)
  return 2 * threads * n * 4 / best / 1e9
