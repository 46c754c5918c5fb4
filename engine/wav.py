"""WAV files with the standard library's ``wave``: integer PCM in, 16-bit PCM out, float samples in [-1, 1).

``carfac-nap`` reads its one-file input with ``read_wav``; files of other
formats go through ``engine.file_source`` (libsndfile).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

_PCM_DTYPES = {1: np.uint8, 2: np.int16, 4: np.int32}


def read_wav(path: Path) -> tuple[np.ndarray, float]:
  """Integer PCM WAV -> (float32 samples in [-1, 1), (n_samp, n_channels)), rate."""
  with wave.open(str(path), "rb") as wav:
    width, n_channels = wav.getsampwidth(), wav.getnchannels()
    if width not in _PCM_DTYPES:
      raise ValueError(f"{path}: {8 * width}-bit WAV not supported (8, 16 or 32-bit PCM)")
    raw = np.frombuffer(wav.readframes(wav.getnframes()), _PCM_DTYPES[width])
    rate = float(wav.getframerate())
  if width == 1:
    samples = (raw.astype(np.float32) - 128) / 128
  else:
    samples = raw.astype(np.float32) / float(2 ** (8 * width - 1))
  return samples.reshape(-1, n_channels), rate


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
  """Float samples (n_samp,) or (n_samp, n_channels) -> 16-bit PCM WAV."""
  samples = np.atleast_2d(np.asarray(samples).T).T
  pcm = np.clip(np.round(samples * 32768), -32768, 32767).astype("<i2")
  with wave.open(str(path), "wb") as wav:
    wav.setnchannels(samples.shape[1])
    wav.setsampwidth(2)
    wav.setframerate(rate)
    wav.writeframes(pcm.tobytes())
