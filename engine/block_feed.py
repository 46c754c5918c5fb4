"""One stream's input path: source chunks at any rate -> the pool's blocks.

A source delivers float32 chunks of any length at its own rate; the pool
takes fixed-size blocks at the model's rate. ``BlockFeed`` chains the steps:

  non-finite check, clipping -> ``StreamResampler`` (to the model rate) -> ``Reblocker``

Non-finite policy: NaN and +-Inf samples are counted in ``nonfinite_samples``
and replaced by 0 before resampling (the audio sources' part of the policy;
every layer's part, and why: README, "Bad input").

Amplitude policy: finite samples are clipped to +-``MAX_SAMPLE`` (counted in
``clipped_samples``). Full scale is 1; the float32 model stays finite up to
about 1e12 and overflows to NaN from about 1e19 (one such sample poisons its
stream's state for good), and the resampler turns samples near float32's
largest value (3.4e38) into NaN, which would make the pool reject the whole
batch that block is in. Clipping at 1e6 (120 dB above full scale) keeps
every finite input valid audio with finite output, with a margin of 1e6.
"""

from __future__ import annotations

import numpy as np

from carfac.finite import count_non_finite
from engine.reblock import Reblocker
from engine.resample import StreamResampler

MAX_SAMPLE = np.float32(1e6)  # largest sample magnitude passed on (full scale is 1)


class BlockFeed:
  """Turns (n, channels) chunks at ``in_rate`` into model-rate blocks."""

  def __init__(self, in_rate: float, model_rate: float, channels: int, block_size: int):
    self._resampler = StreamResampler(in_rate, model_rate, channels)
    self._reblocker = Reblocker(block_size, channels)
    self.channels = channels
    self.nonfinite_samples = 0
    self.clipped_samples = 0

  @property
  def model_samples(self) -> int:
    """Model-rate samples produced so far (padding of the last block excluded)."""
    return self._reblocker.samples_in

  def flush_resampler(self) -> list[np.ndarray]:
    """Before a hand-over: the resampler's tail into the blocks (returns those it completes), no padding.

    So the samples held in the resampler's filter are not lost when the
    stream continues elsewhere with a fresh resampler; only the filter's
    edges at the seam differ from an uninterrupted run.
    """
    return self._reblocker.push(self._resampler.flush())

  def held_samples(self) -> np.ndarray:
    """Model-rate samples received but not yet in a block, (n, channels); the resampler's own history excluded."""
    return self._reblocker.held()

  def restore(self, blocks_done: int, held: np.ndarray) -> None:
    """Continues a stream whose first ``blocks_done`` blocks were run elsewhere; ``held``: its ``held_samples``.

    The resampler starts afresh (see ``flush_resampler``): at the model's rate
    the continuation is exact; resampled, it differs at the seam.
    """
    held = np.asarray(held, np.float32)
    block_size = self._reblocker.block_size
    if held.ndim != 2 or held.shape[1] != self.channels or len(held) >= block_size:
      raise ValueError(f"held samples must be (n < {block_size}, {self.channels}), got {held.shape}")
    if count_non_finite(held) or np.abs(held).max(initial=0) > MAX_SAMPLE:
      raise ValueError("held samples must be finite and within the clipping level")
    if self._reblocker.samples_in or self._reblocker.pending:
      raise ValueError("restore needs a fresh feed")
    self._reblocker.samples_in = blocks_done * block_size
    self._reblocker.push(held)

  def push(self, chunk: np.ndarray) -> list[np.ndarray]:
    """Adds one chunk; returns the (block_size, channels) blocks it completes."""
    chunk = np.asarray(chunk, np.float32)
    non_finite = count_non_finite(chunk)
    if non_finite:
      self.nonfinite_samples += non_finite
      chunk = np.nan_to_num(chunk, nan=0.0, posinf=0.0, neginf=0.0)  # a copy: the caller's chunk stays as it is
    loud = np.abs(chunk) > MAX_SAMPLE
    if loud.any():
      self.clipped_samples += int(loud.sum())
      chunk = np.clip(chunk, -MAX_SAMPLE, MAX_SAMPLE)
    return self._reblocker.push(self._resampler.process(chunk))

  def finish(self) -> list[np.ndarray]:
    """Ends the stream: the resampler's tail and the zero-padded last block."""
    return self._reblocker.push(self._resampler.flush()) + self._reblocker.flush()

  def over_real_samples(self, rows: np.ndarray, first: int, span: int) -> np.ndarray:
    """The leading ``rows`` computed from real samples only (none from padding).

    ``rows[i]`` is row ``first + i`` of the stream and covers ``span`` model
    samples: a frame of a ``span``-sample hop, or one sample's raw output
    (``span=1``). Rows reaching past ``model_samples`` into the last block's
    zero padding are cut.
    """
    return rows[: max(0, self.model_samples // span - first)]
