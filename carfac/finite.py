"""NaN and +-Inf samples: ``count_non_finite`` (and ``rows_with_non_finite`` for a batch of blocks), the one
check that every layer's policy for them uses.

The policy of each layer (the server, the audio sources, the pool and this
library, where only ``PitchogramPipeline.process_samples`` checks) is
written once: README, "Bad input".
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def count_non_finite(samples: ArrayLike) -> int:
  """How many of ``samples`` are NaN or +-Inf (0: all finite)."""
  return int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))


def rows_with_non_finite(batch: np.ndarray) -> np.ndarray:
  """Indices along ``batch``'s first axis (e.g. streams) of the rows that hold a NaN or +-Inf, in one pass."""
  return np.flatnonzero(~np.isfinite(batch.reshape(len(batch), -1)).all(axis=1))
