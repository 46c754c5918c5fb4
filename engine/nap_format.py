"""The ``.npz`` of NAP frames that ``carfac-nap`` and ``carfac-client`` write: one format, one writer.

NumPy only (no JAX, no model), so a client that only streams to a server
imports nothing of the model to save what it received.
"""

from __future__ import annotations

import numpy as np


def save_nap_npz(
  path, frames: np.ndarray, centre_frequencies, sample_rate: float, hop: int, source: str, **extra
) -> None:
  """Writes NAP frames (n, n_ch, n_ears) with what they are, as ``.npz``.

  Keys: ``nap``, ``centre_frequencies_hz``, ``sample_rate_hz`` (the model's),
  ``hop_samples``, ``source``, plus ``extra`` (e.g. the client's
  ``dropped_rows``); the one format of ``carfac-nap`` and ``carfac-client``.
  Not compressed: NAP floats shrink by only ~10% and take ~18x longer to
  write (measured: 27 vs 1.5 ms for 30 s of frames), which a dataset run
  would pay per file.
  """
  np.savez(
    path,
    nap=frames,
    centre_frequencies_hz=np.asarray(centre_frequencies),
    sample_rate_hz=sample_rate,
    hop_samples=hop,
    source=source,
    **extra,
  )
