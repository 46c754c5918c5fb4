"""Re-blocking: audio chunks of any length in, fixed-size model blocks out.

The engine's compiled step takes exactly ``block_size`` samples per stream;
sources deliver whatever length they like (a WebSocket message, a resampler output
chunk, a sound-card callback). ``Reblocker`` keeps the remainder between
calls, and ``flush`` zero-pads the final partial block so a stream's tail is
processed too.
"""

from __future__ import annotations

import numpy as np


class Reblocker:
  """Accumulates (n, channels) samples; yields (block_size, channels) blocks."""

  def __init__(self, block_size: int, channels: int = 1, dtype=np.float32):
    if block_size < 1 or channels < 1:
      raise ValueError("block_size and channels must be >= 1")
    self.block_size, self.channels = block_size, channels
    self._buffer = np.zeros((block_size, channels), dtype)
    self._filled = 0
    self.samples_in = 0  # real samples pushed so far (padding not counted)

  @property
  def pending(self) -> int:
    """Samples held back, waiting for a full block."""
    return self._filled

  def held(self) -> np.ndarray:
    """A copy of the held-back samples, (pending, channels)."""
    return self._buffer[: self._filled].copy()

  def push(self, samples: np.ndarray) -> list[np.ndarray]:
    """Adds samples; returns the blocks they complete (each a fresh array)."""
    samples = np.asarray(samples).reshape(-1, self.channels)
    self.samples_in += len(samples)
    blocks = []
    start = 0
    while start < len(samples):
      take = min(self.block_size - self._filled, len(samples) - start)
      self._buffer[self._filled : self._filled + take] = samples[start : start + take]
      self._filled += take
      start += take
      if self._filled == self.block_size:
        blocks.append(self._buffer.copy())
        self._filled = 0
    return blocks

  def flush(self) -> list[np.ndarray]:
    """The held-back samples as one zero-padded block (none if empty)."""
    if self._filled == 0:
      return []
    block = np.zeros_like(self._buffer)
    block[: self._filled] = self._buffer[: self._filled]
    self._filled = 0
    return [block]
