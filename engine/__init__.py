"""Streaming engine: many CARFAC streams on the device, stepped block by block.

The names below load on first use (PEP 562), so that tools which only need
the audio sources (``engine.file_source``, ``engine.microphone``), such as
``carfac-client``, start without importing JAX.
"""

from __future__ import annotations

import importlib

_LAZY = {
  "BlockResult": "engine.pool",
  "StreamPool": "engine.pool",
  "max_frames": "engine.frames",
  "reduce_to_frames": "engine.frames",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
  return getattr(importlib.import_module(_LAZY[name]), name)
