"""What machine a benchmark ran on: CPU model, cores and vector flags (printed beside every figure)."""

from __future__ import annotations

import os
import platform

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
