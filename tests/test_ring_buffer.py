"""RingBuffer: lossless below capacity, exact across the wrap, counted overflow, no allocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from engine.ring_buffer import RingBuffer


def _ramp(start: int, n: int, channels: int = 2) -> np.ndarray:
  """Frames whose samples encode their stream position, so order errors show."""
  t = np.arange(start, start + n, dtype=np.float32)
  return np.stack([t + 0.5 * c for c in range(channels)], axis=1)


def test_nothing_is_lost_while_the_reader_keeps_up() -> None:
  rng = np.random.default_rng(0)
  ring = RingBuffer(capacity=1000, channels=2)
  written, read, position = [], [], 0
  for _ in range(300):
    n = int(rng.integers(0, ring.capacity - ring.read_available() + 1))
    chunk = _ramp(position, n)
    assert ring.write(chunk) == n
    written.append(chunk)
    position += n
    read.append(ring.read(int(rng.integers(0, 700))))
  read.append(ring.read(ring.capacity))
  np.testing.assert_array_equal(np.concatenate(read), np.concatenate(written))
  assert position > 10 * ring.capacity  # wrapped many times
  assert ring.overflowed == ring.overflow_events == 0 and ring.read_available() == 0


def test_wrap_around_is_exact() -> None:
  ring = RingBuffer(capacity=10, channels=2)
  ring.write(_ramp(0, 7))
  np.testing.assert_array_equal(ring.read(5), _ramp(0, 5))
  assert ring.write(_ramp(7, 8)) == 8  # 3 frames at the end, 5 at the start
  assert ring.read_available() == 10
  np.testing.assert_array_equal(ring.read(100), _ramp(5, 10))


def test_overflow_keeps_what_fits_and_counts_the_rest_exactly() -> None:
  ring = RingBuffer(capacity=8, channels=1)
  assert ring.write(_ramp(0, 5, 1)) == 5
  assert ring.write(_ramp(5, 5, 1)) == 3
  assert (ring.overflowed, ring.overflow_events) == (2, 1)
  assert ring.write(_ramp(10, 4, 1)) == 0
  assert (ring.overflowed, ring.overflow_events) == (6, 2)
  np.testing.assert_array_equal(ring.read(8), _ramp(0, 8, 1))  # the oldest frames survive
  assert ring.write(_ramp(20, 8, 1)) == 8 and ring.overflowed == 6


def test_wrong_channel_count_is_rejected() -> None:
  with pytest.raises(ValueError, match=r"\(n, 2\)"):
    RingBuffer(16, channels=2).write(np.zeros((4, 1), np.float32))


def _measure_write_allocations() -> tuple[int, int, int]:
  """(overflow events, largest transient bytes, net growth bytes) of 2000 writes."""
  ring = RingBuffer(capacity=4800, channels=2)
  block = _ramp(0, 480)  # one 10 ms sound-card callback at 48 kHz, stereo (3840 bytes)
  ring.write(block)
  tracemalloc.start()
  try:
    start = tracemalloc.get_traced_memory()[0]
    largest_transient = 0
    for i in range(2000):
      if i % 3 == 0:
        ring.read(1000)  # the consumer allocates its copy; measured outside the write
      tracemalloc.reset_peak()
      before = tracemalloc.get_traced_memory()[0]
      ring.write(block)  # wraps, and overflows when the reader lags
      largest_transient = max(largest_transient, tracemalloc.get_traced_memory()[1] - before)
    growth = tracemalloc.get_traced_memory()[0] - start
  finally:
    tracemalloc.stop()
  return ring.overflow_events, largest_transient, growth


def test_write_allocates_nothing_per_call() -> None:
  # In a fresh interpreter: tracemalloc counts every thread's allocations, and
  # threads other tests leave running (servers, engine shards) would be counted.
  code = "import json, test_ring_buffer as t; print(json.dumps(t._measure_write_allocations()))"
  here = Path(__file__).resolve().parent
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)])}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
  assert result.returncode == 0, result.stderr
  overflow_events, largest_transient, growth = json.loads(result.stdout)
  assert overflow_events > 0  # the overflow path was measured too
  assert largest_transient < 1024, largest_transient  # views and ints only; a copy of the block is 3840
  assert growth < 1024, growth
