"""One recording through the engine offline: the mean NAP of every complete hop, in bounded memory.

The audio is streamed through a one-slot ``StreamPool`` in fixed-size blocks
(one compilation whatever the length), so the frames are exactly what the
live service sends for the same audio. ``engine.dataset`` does the same for
many recordings at once.
"""

from __future__ import annotations

import numpy as np

import carfac
from engine.pool import StreamPool


def audio_to_nap_frames(
  audio: np.ndarray,
  params: carfac.CarfacDesignParameters,
  hop: int,
  frames_per_block: int = 64,
  weights: carfac.CarfacWeights | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Mean NAP per complete hop of ``audio`` (n_samp, n_ears), with the design's or trained ``weights``.

  Returns (frames (n_frames, n_ch, n_ears) float32, centre frequencies).
  """
  block = hop * frames_per_block
  pool = StreamPool(params, capacity=1, block_size=block, hop=hop, weights=weights)
  slot = pool.join()
  n_samp = audio.shape[0]
  padded = np.zeros((-(-n_samp // block) * block, audio.shape[1]), np.float32)
  padded[:n_samp] = audio
  frames = [pool.step({slot: padded[start : start + block]})[slot].frames for start in range(0, len(padded), block)]
  # Frames that reach into the zero padding are not the file's.
  return np.concatenate(frames)[: n_samp // hop], pool.centre_frequencies()
