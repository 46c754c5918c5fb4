"""Audio files as a streaming source (``soundfile``: WAV, FLAC, OGG, ...).

``FileSource`` reads a file in chunks, so memory stays bounded however long
the file is, and yields float32 ``(n, channels)`` chunks at the file's own
sample rate: an ``AudioSource`` for ``engine.runner.EngineRunner``, which
resamples to the model's rate. Every format libsndfile reads is accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.optional_import import import_optional

_INSTALL_HINT = "audio files need the audio extra (pip install -e '.[audio]')"


class FileSource:
  """Streams ``path`` in chunks of ``chunk_frames`` frames (the last may be shorter)."""

  def __init__(self, path: str | Path, chunk_frames: int = 4096):
    if chunk_frames < 1:
      raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    self._soundfile = import_optional("soundfile", _INSTALL_HINT)
    self.path, self.chunk_frames = Path(path), chunk_frames
    info = self._soundfile.info(str(self.path))  # fails here for a missing or unreadable file
    self.sample_rate = float(info.samplerate)
    self.channels = info.channels
    self.frames = info.frames
    self.start_frame = 0  # where iteration begins (a resumed stream goes on from there)

  def __iter__(self) -> Iterator[np.ndarray]:
    """The file from ``start_frame``, as float32 (n, channels) chunks."""
    with self._soundfile.SoundFile(str(self.path)) as audio:
      if self.start_frame:
        audio.seek(self.start_frame)
      while len(chunk := audio.read(self.chunk_frames, dtype="float32", always_2d=True)):
        yield chunk
