"""A one-line progress bar for a streamed file: audio sent of the file's length, frames received.

Redrawn in place (carriage return) at most ``interval_s`` apart, so a fast
stream costs the terminal little; with no ``out`` (the CLI's output is not a
terminal) it only counts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import TextIO

import numpy as np


class Progress:
  """Tracks the seconds of audio sent (``track``) and the frames received (``on_frames``)."""

  def __init__(self, total_s: float, out: TextIO | None, width: int = 30, interval_s: float = 0.1):
    self.total_s, self.out, self.width, self.interval_s = total_s, out, width, interval_s
    self.sent_s, self.frames = 0.0, 0
    self._drawn_at = -float("inf")

  async def track(self, chunks: AsyncIterable[np.ndarray], sample_rate: float) -> AsyncIterator[np.ndarray]:
    """Passes ``chunks`` on, counting their seconds."""
    async for chunk in chunks:
      yield chunk
      self.sent_s += len(chunk) / sample_rate
      self.draw()

  def on_frames(self, header: dict[str, int], rows: np.ndarray) -> None:
    """A ``stream`` callback: counts the frames received."""
    self.frames += len(rows)
    self.draw()

  def draw(self, force: bool = False) -> None:
    """Redraws the line, unless it was drawn less than ``interval_s`` ago."""
    now = time.monotonic()
    if self.out is None or (not force and now - self._drawn_at < self.interval_s):
      return
    self._drawn_at = now
    fraction = min(1.0, self.sent_s / self.total_s) if self.total_s > 0 else 1.0
    filled = round(fraction * self.width)
    bar = "#" * filled + "." * (self.width - filled)
    self.out.write(f"\r[{bar}] {fraction:4.0%}  {self.sent_s:.1f}/{self.total_s:.1f} s sent, {self.frames} frames")
    self.out.flush()

  def close(self) -> None:
    """The final state, and the end of the line."""
    if self.out is not None:
      self.draw(force=True)
      self.out.write("\n")
      self.out.flush()
