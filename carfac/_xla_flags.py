"""XLA:CPU settings that make CARFAC's per-sample time loop fast.

1. XLA:CPU runs a ``while`` loop as a sequence of thunks (one per fused
   kernel, tens of nanoseconds each) unless the loop touches fewer bytes than
   a threshold (1 KiB by default); then the whole loop is emitted as one
   native function. CARFAC's loop body is a few dozen small kernels on
   71-channel vectors, so the thunk overhead dominates: raising the
   threshold makes one stream about 3.4x faster, bit-identical.
2. Preferring 512-bit vectors lets LLVM use AVX-512 where the CPU has it
   (about 1.2x for batched streams); elsewhere it is only a preference.

Measured by ``bench/bench_model.py`` and ``bench/bench_engine.py``. XLA reads
``XLA_FLAGS`` once, when it first starts, so they are set on import of
``carfac``, before JAX computes anything; a setting already present in
``XLA_FLAGS`` is left as it is, and ``CARFAC_XLA_TUNING=0`` leaves
``XLA_FLAGS`` alone.
"""

from __future__ import annotations

import os
import re
import warnings

LOOP_OPTION = "xla_cpu_small_while_loop_byte_threshold"
LOOP_THRESHOLD_BYTES = 10**15  # every loop CARFAC could run
VECTOR_FLAG = "--xla_cpu_prefer_vector_width"
_EXTRA = "--xla_backend_extra_options="


def tuned_xla_flags(xla_flags: str) -> str:
  """``xla_flags`` plus our settings, each only where not already set."""
  if LOOP_OPTION not in xla_flags:
    setting = f"{LOOP_OPTION}={LOOP_THRESHOLD_BYTES}"
    match = re.search(re.escape(_EXTRA) + r"(\S*)", xla_flags)
    if match is None:
      xla_flags = f"{xla_flags} {_EXTRA}{setting}"
    else:
      merged = f"{match.group(1)},{setting}" if match.group(1) else setting
      xla_flags = xla_flags[: match.start(1)] + merged + xla_flags[match.end(1) :]
  if VECTOR_FLAG not in xla_flags:
    xla_flags = f"{xla_flags} {VECTOR_FLAG}=512"
  return xla_flags.strip()


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge
  except ImportError:  # layout of a future JAX: assume not started
    return False
  return xla_bridge.backends_are_initialized()


def apply_xla_tuning() -> None:
  """Adds the settings to ``XLA_FLAGS`` unless opted out or too late."""
  if os.environ.get("CARFAC_XLA_TUNING", "1") == "0":
    return
  flags = os.environ.get("XLA_FLAGS", "")
  tuned = tuned_xla_flags(flags)
  if tuned == flags:
    return
  if _backends_started():
    warnings.warn(
      "JAX was used before `import carfac`, so XLA:CPU will run CARFAC's time "
      "loop as separate kernels (about 3x slower on CPU). Import carfac first, "
      f"or set XLA_FLAGS='{tuned}'.",
      stacklevel=3,
    )
    return
  os.environ["XLA_FLAGS"] = tuned
