"""JAX's persistent compilation cache, so a restart skips XLA compilation.

A pool compiles its step at start-up (seconds on a small CPU); with the cache
on disk a later process loads the executable instead. Every compilation is
cached (no minimum compile time or size), keyed by JAX on the program, the
XLA flags and the backend, so a changed design simply compiles anew.
"""

from __future__ import annotations

from pathlib import Path

import jax


def enable_compilation_cache(directory: str | Path) -> Path:
  """Stores and reuses compiled executables under ``directory`` (created)."""
  path = Path(directory).expanduser().resolve()
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
