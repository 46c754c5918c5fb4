"""Asks XLA:CPU to compile CARFAC's per-sample time loop as one kernel.

XLA:CPU runs a ``while`` loop as a sequence of thunks (one per fused kernel,
tens of nanoseconds each), unless the loop touches fewer bytes than a
threshold (1 KiB by default); then the whole loop is emitted as one native
function. CARFAC's loop body is a few dozen small kernels on 71-channel
vectors, so the thunk overhead dominates: raising the threshold makes one
stream 3.4x faster on CPU with bit-identical results (measured by
``bench/bench_model.py``). The option is read once, when XLA first parses
``XLA_FLAGS``, so it is set on import of ``carfac``, before JAX computes
anything; set ``CARFAC_XLA_TUNING=0`` to leave ``XLA_FLAGS`` alone.
"""

from __future__ import annotations

import os
import re
import warnings

OPTION = "xla_cpu_small_while_loop_byte_threshold"
THRESHOLD_BYTES = 10**15  # every loop CARFAC could run
_EXTRA = "--xla_backend_extra_options="


def with_single_kernel_loops(xla_flags: str) -> str:
  """``xla_flags`` plus our option, merged into any extra-options flag present."""
  if OPTION in xla_flags:
    return xla_flags
  setting = f"{OPTION}={THRESHOLD_BYTES}"
  match = re.search(re.escape(_EXTRA) + r"(\S*)", xla_flags)
  if match is None:
    return f"{xla_flags} {_EXTRA}{setting}".strip()
  merged = f"{match.group(1)},{setting}" if match.group(1) else setting
  return xla_flags[: match.start(1)] + merged + xla_flags[match.end(1) :]


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge
  except ImportError:  # layout of a future JAX: assume not started
    return False
  return xla_bridge.backends_are_initialized()


def enable_single_kernel_loops() -> None:
  """Adds the option to ``XLA_FLAGS`` unless opted out or already set."""
  if os.environ.get("CARFAC_XLA_TUNING", "1") == "0":
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if OPTION in flags:
    return
  if _backends_started():
    warnings.warn(
        "JAX was used before `import carfac`, so XLA:CPU will run CARFAC's time "
        "loop as separate kernels (about 3x slower on CPU). Import carfac first, "
        f"or set XLA_FLAGS='{_EXTRA}{OPTION}={THRESHOLD_BYTES}'.",
        stacklevel=3,
    )
    return
  os.environ["XLA_FLAGS"] = with_single_kernel_loops(flags)
