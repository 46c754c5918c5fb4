"""Reading rendered cochleagrams back: which channel's band of pixel rows is brightest."""

from __future__ import annotations

import numpy as np
from matplotlib.transforms import Bbox


def brightest_channel(pixels: np.ndarray, box: Bbox, channels: int, last: float = 1.0) -> int:
  """The channel drawn brightest (mean RGB) inside ``box``, over its rightmost ``last`` fraction.

  ``pixels`` is an (height, width, 3 or 4) image; ``box`` the image axes'
  window extent (matplotlib display coordinates: pixels, origin bottom left),
  whose rows show channels 0 (top) to ``channels - 1``; the spines' pixel
  at each edge is left out.
  """
  height = pixels.shape[0]
  top, bottom = int(height - box.y1) + 1, int(height - box.y0) - 1
  left, right = int(box.x0) + 1, int(box.x1) - 1
  left = right - int((right - left) * last)
  luminance = pixels[top:bottom, left:right, :3].astype(float).mean(axis=(1, 2))
  return int(luminance.argmax() * channels / (bottom - top))
