"""FileSource: files stream back exactly; through the runner they give the offline frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

import carfac
from engine.file_source import FileSource
from engine.pool import BlockResult, StreamPool
from engine.resample import StreamResampler
from engine.runner import EngineRunner

MODEL_RATE, HOP = 22050.0, 220


@pytest.fixture(scope="module")
def pool() -> StreamPool:
  return StreamPool(carfac.CarfacDesignParameters(fs=MODEL_RATE), capacity=1, block_size=512, hop=HOP)


def _write(path: Path, rate: int, seconds: float, channels: int) -> np.ndarray:
  """A two-tone test file; returns what soundfile reads back from it in one go."""
  t = np.arange(int(rate * seconds)) / rate
  tones = [0.3 * np.sin(2 * np.pi * f * t) for f in (500.0, 1500.0)[:channels]]
  soundfile.write(path, np.stack(tones, axis=1), rate, subtype="PCM_16")
  return soundfile.read(path, dtype="float32", always_2d=True)[0]


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
@pytest.mark.parametrize("channels", [1, 2])
def test_a_file_streams_back_identically(tmp_path: Path, suffix: str, channels: int) -> None:
  expected = _write(tmp_path / f"tones{suffix}", 16000, 0.77, channels)
  source = FileSource(tmp_path / f"tones{suffix}", chunk_frames=1000)
  assert (source.sample_rate, source.channels, source.frames) == (16000.0, channels, len(expected))
  chunks = list(source)
  assert all(c.dtype == np.float32 and c.shape[1] == channels for c in chunks)
  assert [len(c) for c in chunks[:-1]] == [1000] * (len(chunks) - 1)
  np.testing.assert_array_equal(np.concatenate(chunks), expected)
  np.testing.assert_array_equal(np.concatenate(list(source)), expected)  # iterating again restarts


def test_a_missing_file_fails_on_construction(tmp_path: Path) -> None:
  with pytest.raises(soundfile.LibsndfileError, match=r"Error opening '.*absent\.wav'"):
    FileSource(tmp_path / "absent.wav")


@pytest.mark.parametrize("file_rate", [22050, 16000])
def test_runner_frames_equal_the_offline_frames(tmp_path: Path, pool: StreamPool, file_rate: int) -> None:
  audio = _write(tmp_path / "tone.flac", file_rate, 0.4, 1)
  results: list[BlockResult] = []
  runner = EngineRunner(pool, FileSource(tmp_path / "tone.flac", chunk_frames=777), results.append)
  runner.run()
  frames = np.concatenate([r.frames for r in results])
  assert [r.first_frame for r in results] == np.cumsum([0] + [len(r.frames) for r in results[:-1]]).tolist()

  # Resampled in one shot by the engine's resampler (whose fidelity tests/test_resample.py checks against soxr).
  one_shot = StreamResampler(file_rate, MODEL_RATE, 1)
  at_model_rate = np.concatenate([one_shot.process(audio), one_shot.flush()])
  hypers, weights, state = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(fs=MODEL_RATE), np.float32)
  naps = np.asarray(carfac.run_segment(at_model_rate, hypers, weights, state).naps)
  n_frames = len(at_model_rate) // HOP  # complete hops of real samples only
  expected = naps[: n_frames * HOP].reshape(n_frames, HOP, *naps.shape[1:]).mean(axis=1)
  assert frames.shape == expected.shape
  np.testing.assert_allclose(frames, expected, atol=1e-4 * np.abs(expected).max())
  assert runner.feed.model_samples == len(at_model_rate) and runner.feed.nonfinite_samples == 0
