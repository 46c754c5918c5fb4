"""NaN and +-Inf samples: ``count_non_finite``, the one check that every layer's policy for them uses.

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
