"""Streaming sample-rate conversion to the model's rate (libsoxr).

One ``StreamResampler`` per audio stream: chunks of any length go in, and the
resampled samples come out with the filter's history carried between chunks,
so chunked output equals one-shot output. When the rates are equal it is an
exact pass-through (no filtering, no delay).
"""

from __future__ import annotations

import numpy as np


class StreamResampler:
  """Converts (n, channels) float32 chunks from ``in_rate`` to ``out_rate``."""

  def __init__(self, in_rate: float, out_rate: float, channels: int = 1, quality: str = "HQ"):
    if in_rate <= 0 or out_rate <= 0:
      raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
    if channels < 1:
      raise ValueError(f"channels must be >= 1, got {channels}")
    self.in_rate, self.out_rate, self.channels = float(in_rate), float(out_rate), channels
    self._stream = None
    if self.in_rate != self.out_rate:
      import soxr  # imported here so the pass-through needs no libsoxr

      self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, channels, dtype="float32", quality=quality)

  @property
  def passthrough(self) -> bool:
    return self._stream is None

  def _as_frames(self, chunk) -> np.ndarray:
    array = np.asarray(chunk, np.float32)
    if array.ndim == 1 and self.channels == 1:
      array = array[:, None]
    if array.ndim != 2 or array.shape[1] != self.channels:
      raise ValueError(f"chunk must be (n, {self.channels}), got {array.shape}")
    return np.ascontiguousarray(array)

  def process(self, chunk) -> np.ndarray:
    """Resamples one chunk; returns (m, channels) float32 (m may be 0)."""
    frames = self._as_frames(chunk)
    if self._stream is None:
      return frames.copy()
    return self._stream.resample_chunk(frames, last=False).reshape(-1, self.channels)

  def flush(self) -> np.ndarray:
    """Ends the stream: returns the samples still held in the filter."""
    if self._stream is None:
      return np.zeros((0, self.channels), np.float32)
    empty = np.zeros((0, self.channels), np.float32)
    return self._stream.resample_chunk(empty, last=True).reshape(-1, self.channels)
