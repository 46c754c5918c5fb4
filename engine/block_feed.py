"""One stream's input path: source chunks at any rate -> the pool's blocks.

A source delivers float32 chunks of any length at its own rate; the pool
takes fixed-size blocks at the model's rate. ``BlockFeed`` chains the steps:

  non-finite check -> ``StreamResampler`` (to the model rate) -> ``Reblocker``

Non-finite policy: NaN and +-Inf samples are counted in ``nonfinite_samples``
and replaced by 0 before resampling. A sound card or decoder glitch should
not end a live stream, and a NaN must not reach the resampler, whose filter
would smear it over its neighbours, nor the pool, which rejects such a block.
"""

from __future__ import annotations

import numpy as np

from engine.reblock import Reblocker
from engine.resample import StreamResampler


class BlockFeed:
  """Turns (n, channels) chunks at ``in_rate`` into model-rate blocks."""

  def __init__(self, in_rate: float, model_rate: float, channels: int, block_size: int):
    self._resampler = StreamResampler(in_rate, model_rate, channels)
    self._reblocker = Reblocker(block_size, channels)
    self.channels = channels
    self.nonfinite_samples = 0

  @property
  def model_samples(self) -> int:
    """Model-rate samples produced so far (padding of the last block excluded)."""
    return self._reblocker.samples_in

  def push(self, chunk: np.ndarray) -> list[np.ndarray]:
    """Adds one chunk; returns the (block_size, channels) blocks it completes."""
    chunk = np.asarray(chunk, np.float32)
    bad = ~np.isfinite(chunk)
    if bad.any():
      self.nonfinite_samples += int(bad.sum())
      chunk = np.where(bad, np.float32(0), chunk)
    return self._reblocker.push(self._resampler.process(chunk))

  def finish(self) -> list[np.ndarray]:
    """Ends the stream: the resampler's tail and the zero-padded last block."""
    return self._reblocker.push(self._resampler.flush()) + self._reblocker.flush()
