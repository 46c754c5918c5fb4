"""Long run: audio through the engine at full speed, checked against the offline model as it goes.

``long_run`` streams one synthetic signal (three tones that change every
2 s, noise, and an envelope from silence to full scale, so the AGC keeps
working) through ``engine.runner.EngineRunner`` (``BlockFeed`` resampling
and re-blocking, a one-slot ``StreamPool`` of 256-sample blocks, 10 ms
frames) as fast as the engine runs. Alongside, in lockstep, the same chunks
go through the offline path: the same streaming resampler (chunked output
is bit-identical to one shot), then ``carfac.run_segment_jit`` over fixed
segments with the state carried (bit-identical to one call over the whole
signal), then the mean NAP per hop. Its figures:

- ``max_error``: the largest |engine - offline| frame difference over the
  run, relative to the offline frames' peak (the server tests allow 5e-5);
  ``error_by_window``: the same per ``rss_every_s`` window, to show it does
  not grow; ``nonfinite_frames`` (must be 0);
- ``x_real_time``: audio seconds per second of engine time (the offline
  reference's time is excluded), and the wall time;
- ``rss_mib``: this process's resident memory every ``rss_every_s``
  seconds of audio, and ``rss_growth_mib`` from the first sample to the last.

Run for a minute by ``tests/test_engine_long_run.py``, for an hour by
``bench/bench_long_run.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import psutil

import carfac
from engine.pool import BlockResult, StreamPool
from engine.resample import StreamResampler
from engine.runner import EngineRunner

MODEL_RATE, BLOCK, HOP = 22050.0, 256, 220
SEGMENT = 20 * HOP  # samples per offline run_segment call (a whole number of hops: frames align)


def rss_bytes() -> int:
  """This process's resident memory (Linux: VmRSS)."""
  return psutil.Process().memory_info().rss


def synthetic_audio(seconds: float, rate: float, chunk_s: float, seed: int) -> Iterator[np.ndarray]:
  """(n, 1) float32 chunks of the test signal, generated as they are read (bounded memory)."""
  rng = np.random.default_rng(seed)
  total, chunk = round(seconds * rate), round(chunk_s * rate)
  section = -1
  for first in range(0, total, chunk):
    t = np.arange(first, min(first + chunk, total)) / rate
    if int(t[0] // 2) != section:  # a new 2-s section: new tones
      section, tones = int(t[0] // 2), rng.uniform(100, min(6000, rate / 3), 3)
    envelope = 0.5 * (1 + np.sin(2 * np.pi * t / 7.3)) ** 2 / 4  # 0 (silence) to 0.5, every 7.3 s
    signal = sum(np.sin(2 * np.pi * f * t) for f in tones) / 3 + 0.2 * rng.standard_normal(len(t))
    yield (envelope * signal).astype(np.float32)[:, None]


class OfflineFrames:
  """The offline model fed the same chunks: its frames, as they complete."""

  def __init__(self, params: carfac.CarfacDesignParameters, rate: float):
    self.hypers, self.weights, self.state = carfac.design_and_init_carfac(params, np.float32)
    self.resampler = StreamResampler(rate, MODEL_RATE, 1)
    self.pending = np.zeros((0, 1), np.float32)
    self.samples = 0  # model-rate samples so far

  def push(self, chunk: np.ndarray) -> np.ndarray:
    return self._add(self.resampler.process(chunk), final=False)

  def finish(self) -> np.ndarray:
    return self._add(self.resampler.flush(), final=True)

  def _add(self, x: np.ndarray, final: bool) -> np.ndarray:
    self.samples += len(x)
    self.pending = np.concatenate([self.pending, x])
    frames = []
    while len(self.pending) >= SEGMENT or (final and len(self.pending)):
      real = min(len(self.pending), SEGMENT)
      segment = np.zeros((SEGMENT, 1), np.float32)
      segment[:real] = self.pending[:real]
      self.pending = self.pending[real:]
      out = carfac.run_segment_jit(segment, self.hypers, self.weights, self.state)
      self.state = out.state
      naps = np.asarray(out.naps)[: real - real % HOP].astype(np.float64)
      frames.append(naps.reshape(-1, HOP, *naps.shape[1:]).mean(axis=1))
    return np.concatenate(frames) if frames else np.zeros((0, 0, 1))


def _joined(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
  return b if a is None or not len(a) else np.concatenate([a, b])


class Comparison:
  """Engine frames against offline frames, matched by index as both arrive."""

  def __init__(self, window_frames: int):
    self.engine: np.ndarray | None = None  # frames not matched yet
    self.offline: np.ndarray | None = None
    self.compared = 0
    self.nonfinite = 0
    self.max_diff = 0.0
    self.peak = 0.0
    self.window_frames = window_frames
    self.window_diffs: list[float] = []  # the largest difference in each window of frames

  def add(self, engine: np.ndarray | None = None, offline: np.ndarray | None = None) -> None:
    if engine is not None and len(engine):
      self.nonfinite += int((~np.isfinite(engine)).any(axis=(1, 2)).sum())
      self.engine = _joined(self.engine, engine)
    if offline is not None and len(offline):
      self.offline = _joined(self.offline, offline)
    if self.engine is None or self.offline is None:
      return
    n = min(len(self.engine), len(self.offline))
    diff = np.abs(self.engine[:n] - self.offline[:n]).max(axis=(1, 2))
    windows = np.arange(self.compared, self.compared + n) // self.window_frames
    for window in np.unique(windows):
      if window == len(self.window_diffs):
        self.window_diffs.append(0.0)
      self.window_diffs[window] = max(self.window_diffs[window], float(diff[windows == window].max()))
    if n:
      self.max_diff = max(self.max_diff, float(diff.max()))
      self.peak = max(self.peak, float(np.abs(self.offline[:n]).max()))
    self.compared += n
    self.engine, self.offline = self.engine[n:], self.offline[n:]


class _Source:
  """An ``AudioSource`` that also feeds the offline model and samples memory, timing both apart."""

  channels = 1

  def __init__(
    self, chunks: Iterator[np.ndarray], rate: float, offline: OfflineFrames, compare: Comparison, rss_every: int
  ):
    self.sample_rate = rate
    self._chunks, self._offline, self._compare = chunks, offline, compare
    self._rss_every, self._read = rss_every, 0
    self.rss: list[int] = []
    self.side_s = 0.0  # seconds spent outside the engine (signal, offline model, comparison)

  def __iter__(self) -> Iterator[np.ndarray]:
    while True:
      started = time.perf_counter()
      chunk = next(self._chunks, None)
      if chunk is None:
        self.side_s += time.perf_counter() - started
        return
      self._compare.add(offline=self._offline.push(chunk))
      if self._read // self._rss_every != (self._read + len(chunk)) // self._rss_every:
        self.rss.append(rss_bytes())
      self._read += len(chunk)
      self.side_s += time.perf_counter() - started
      yield chunk


def long_run(
  seconds: float, rate: float = MODEL_RATE, chunk_s: float = 0.1, rss_every_s: float = 60.0, seed: int = 0
) -> dict:
  """Streams ``seconds`` of audio at ``rate`` through the engine and the offline model; the figures."""
  params = carfac.CarfacDesignParameters(fs=MODEL_RATE)
  pool = StreamPool(params, capacity=1, block_size=BLOCK, hop=HOP)
  offline = OfflineFrames(params, rate)
  compare = Comparison(window_frames=round(rss_every_s * MODEL_RATE / HOP))
  source = _Source(synthetic_audio(seconds, rate, chunk_s, seed), rate, offline, compare, round(rss_every_s * rate))
  engine_frames = 0

  def on_result(result: BlockResult) -> None:
    nonlocal engine_frames
    started = time.perf_counter()
    engine_frames += len(result.frames)
    compare.add(engine=result.frames)
    source.side_s += time.perf_counter() - started

  runner = EngineRunner(pool, source, on_result)
  started = time.perf_counter()
  runner.run()
  engine_s = time.perf_counter() - started - source.side_s
  compare.add(offline=offline.finish())
  wall = time.perf_counter() - started
  source.rss.append(rss_bytes())
  return {
    "audio_seconds": seconds,
    "client_rate": rate,
    "model_rate": MODEL_RATE,
    "block": BLOCK,
    "hop": HOP,
    "frames": engine_frames,
    "offline_frames": offline.samples // HOP,
    "compared_frames": compare.compared,
    "nonfinite_frames": compare.nonfinite,
    "max_error": compare.max_diff / compare.peak,
    "error_by_window": [d / compare.peak for d in compare.window_diffs],
    "x_real_time": seconds / engine_s,
    "wall_s": wall,
    "rss_every_s": rss_every_s,
    "rss_mib": [round(r / 2**20, 1) for r in source.rss],
    "rss_growth_mib": round((source.rss[-1] - source.rss[0]) / 2**20, 1),
  }
