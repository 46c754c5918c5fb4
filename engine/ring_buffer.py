"""A bounded single-producer/single-consumer ring buffer of audio frames.

The sound card's callback (the producer, on PortAudio's thread) must never
block and should not allocate: ``write`` copies into a preallocated
``(capacity, channels)`` float32 array with at most two slice assignments and
takes no lock. The engine's thread (the consumer) takes samples out with
``read``. Correctness rests on the GIL and on each side publishing only after
copying: the producer moves the write index only after its copy, the consumer
moves the read index only after its copy, and each index is written by one
side alone (a free-threaded, no-GIL Python would also need memory
barriers). The indices count frames since the start (they never wrap), so
``write_index - read_index`` is always the number of frames held.

Overflow policy: when a write does not fit, the frames that fit are kept and
the rest of that write (the newest audio) is dropped and counted in
``overflowed`` (frames; a frame is one sample of every channel), and the
event in ``overflow_events``. Dropping the oldest audio instead would need
the producer to move the read index, breaking the one-writer-per-index rule.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
  """Holds up to ``capacity`` float32 frames of ``channels`` samples."""

  def __init__(self, capacity: int, channels: int = 1):
    if capacity < 1 or channels < 1:
      raise ValueError(f"capacity and channels must be >= 1, got {capacity}, {channels}")
    self.capacity, self.channels = capacity, channels
    self._data = np.zeros((capacity, channels), np.float32)
    self._write_index = 0  # frames ever written; moved by the producer only
    self._read_index = 0  # frames ever read; moved by the consumer only
    self.overflowed = 0  # frames dropped because the buffer was full
    self.overflow_events = 0  # writes that dropped anything

  def read_available(self) -> int:
    """Frames the consumer can read now."""
    return self._write_index - self._read_index

  def write(self, frames: np.ndarray) -> int:
    """Producer: copies what fits of (n, channels) ``frames``; returns frames kept."""
    if frames.ndim != 2 or frames.shape[1] != self.channels:
      raise ValueError(f"frames must be (n, {self.channels}), got {frames.shape}")
    free = self.capacity - (self._write_index - self._read_index)
    count = min(len(frames), free)
    if count < len(frames):
      self.overflowed += len(frames) - count
      self.overflow_events += 1
    start = self._write_index % self.capacity
    first = min(count, self.capacity - start)
    self._data[start : start + first] = frames[:first]
    self._data[: count - first] = frames[first:count]
    self._write_index += count  # publish only after the copy
    return count

  def read(self, max_frames: int) -> np.ndarray:
    """Consumer: takes up to ``max_frames`` of the oldest frames, (m, channels)."""
    count = min(max_frames, self.read_available())
    start = self._read_index % self.capacity
    first = min(count, self.capacity - start)
    out = np.empty((count, self.channels), np.float32)
    out[:first] = self._data[start : start + first]
    out[first:] = self._data[: count - first]
    self._read_index += count  # free the space only after the copy
    return out
