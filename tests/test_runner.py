"""EngineRunner and BlockFeed: non-finite and amplitude policies, threading, stopping, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

import carfac
from engine.block_feed import MAX_SAMPLE, BlockFeed
from engine.pool import BlockResult, StreamPool
from engine.runner import EngineRunner

MODEL_RATE, HOP = 22050.0, 220


class ListSource:
  """Chunks from a list, at the model's rate; optionally raises at the end."""

  def __init__(self, chunks: list[np.ndarray], error: Exception | None = None):
    self.sample_rate, self.channels = MODEL_RATE, chunks[0].shape[1]
    self.chunks, self.error = chunks, error

  def __iter__(self) -> Iterator[np.ndarray]:
    yield from self.chunks
    if self.error is not None:
      raise self.error


class EndlessSilence:
  """A live source that never ends: 10 ms of zeros every 10 ms."""

  sample_rate, channels = MODEL_RATE, 1

  def __iter__(self) -> Iterator[np.ndarray]:
    while True:
      time.sleep(0.01)
      yield np.zeros((220, 1), np.float32)


@pytest.fixture(scope="module")
def pool() -> StreamPool:
  return StreamPool(carfac.CarfacDesignParameters(fs=MODEL_RATE), capacity=1, block_size=512, hop=HOP)


def _frames(pool: StreamPool, source) -> tuple[np.ndarray, EngineRunner]:
  results: list[BlockResult] = []
  runner = EngineRunner(pool, source, results.append)
  runner.run()
  return np.concatenate([r.frames for r in results]), runner


def test_block_feed_counts_and_zeroes_non_finite_samples() -> None:
  feed = BlockFeed(MODEL_RATE, MODEL_RATE, channels=2, block_size=4)
  chunk = np.array([[1, np.nan], [np.inf, 2], [3, -np.inf]], np.float32)
  blocks = feed.push(chunk) + feed.finish()
  np.testing.assert_array_equal(blocks[0], [[1, 0], [0, 2], [3, 0], [0, 0]])
  assert feed.nonfinite_samples == 3 and np.isnan(chunk[0, 1])  # the caller's array is untouched


def test_non_finite_samples_reach_the_model_as_zeros(pool: StreamPool) -> None:
  audio = 0.1 * np.sin(2 * np.pi * 1000 * np.arange(3000) / MODEL_RATE).astype(np.float32)[:, None]
  broken = audio.copy()
  broken[[10, 700, 2000]] = [[np.nan], [np.inf], [-np.inf]]
  zeroed = np.where(np.isfinite(broken), broken, 0).astype(np.float32)
  got, runner = _frames(pool, ListSource(np.array_split(broken, 7)))
  expected, _ = _frames(pool, ListSource(np.array_split(zeroed, 7)))
  np.testing.assert_array_equal(got, expected)
  assert runner.feed.nonfinite_samples == 3 and len(got) == 3000 // HOP


def test_block_feed_clips_enormous_finite_samples() -> None:
  """float32's largest value would come out of the resampler as NaN; clipped, it stays finite."""
  feed = BlockFeed(48000.0, MODEL_RATE, channels=1, block_size=256)
  chunk = np.full((4800, 1), np.finfo(np.float32).max)
  chunk[::2] *= -1
  blocks = feed.push(chunk) + feed.finish()
  assert feed.clipped_samples == 4800 and feed.nonfinite_samples == 0
  assert all(np.isfinite(block).all() for block in blocks)
  assert max(np.abs(block).max() for block in blocks) < 2 * MAX_SAMPLE  # the resampler's overshoot


@pytest.mark.parametrize("loud", [1e30, -1e19, float(np.finfo(np.float32).max)])
def test_enormous_samples_give_finite_frames_and_spare_the_rest_of_the_stream(pool: StreamPool, loud: float) -> None:
  """Unclipped, one sample from about 1e19 up turns the model's state into NaN for good."""
  audio = 0.1 * np.sin(2 * np.pi * 1000 * np.arange(6000) / MODEL_RATE).astype(np.float32)[:, None]
  audio[100:120] = loud
  got, runner = _frames(pool, ListSource(np.array_split(audio, 5)))
  assert runner.feed.clipped_samples == 20 and np.isfinite(got).all() and len(got) == 6000 // HOP
  quiet, _ = _frames(pool, ListSource([audio[3000:]]))
  assert np.abs(got[-5:]).max() < 10 * np.abs(quiet[-5:]).max()  # the stream recovers: no lasting damage


def test_a_live_source_runs_on_its_thread_until_stopped(pool: StreamPool) -> None:
  results: list[BlockResult] = []
  runner = EngineRunner(pool, EndlessSilence(), results.append)
  runner.start()
  deadline = time.monotonic() + 10
  while runner.frames < 20 and time.monotonic() < deadline:
    time.sleep(0.01)
  runner.stop(timeout=5)
  assert runner.frames >= 20 and runner.frames == sum(len(r.frames) for r in results)
  assert runner.frames == runner.feed.model_samples // HOP  # flushed: every complete hop delivered
  assert pool.active_streams == 0  # the slot was given back


def test_a_source_error_is_raised_by_join(pool: StreamPool) -> None:
  runner = EngineRunner(pool, ListSource([np.zeros((600, 1), np.float32)], OSError("device gone")), lambda r: None)
  runner.start()
  with pytest.raises(OSError, match="device gone"):
    runner.join(timeout=10)
  assert pool.active_streams == 0


def test_source_channels_must_match_the_ears(pool: StreamPool) -> None:
  with pytest.raises(ValueError, match="2 channel"):
    EngineRunner(pool, ListSource([np.zeros((10, 2), np.float32)]), lambda r: None)
