"""The engine's thread: one audio source through one slot of a ``StreamPool``.

    source chunks -> BlockFeed (non-finite policy, resampling to the model
    rate, re-blocking) -> pool.step -> on_result(BlockResult)

The same loop serves the microphone (its callback only fills a ring buffer;
this thread drains it) and files. ``run()`` runs the loop on the calling
thread (e.g. for a file); ``start()``/``stop()`` run it on a thread of its
own, and an exception raised there is re-raised by ``stop()``/``join()``.
When the source ends or ``stop()`` is called, the feed is flushed, so the
tail of the audio is processed too. Frames whose hop reaches into the zero
padding of the last block are dropped: every frame delivered is the mean NAP
over ``hop`` real samples, as in ``engine.offline``.

The pool is not thread-safe: while a runner runs, no other thread may step it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from engine.block_feed import BlockFeed
from engine.pool import BlockResult, StreamPool


class AudioSource(Protocol):
  """What the runner reads: float32 (n, channels) chunks at ``sample_rate``."""

  sample_rate: float
  channels: int

  def __iter__(self) -> Iterator[np.ndarray]: ...


class EngineRunner:
  """Feeds ``source`` through a slot of ``pool`` and hands each result on."""

  def __init__(self, pool: StreamPool, source: AudioSource, on_result: Callable[[BlockResult], None]):
    if source.channels != pool.n_ears:
      raise ValueError(f"the source has {source.channels} channel(s), the model {pool.n_ears} ear(s)")
    self.pool, self.source, self.on_result = pool, source, on_result
    self.feed = BlockFeed(source.sample_rate, pool.hypers.fs, source.channels, pool.block_size)
    self.chunks = 0  # chunks read from the source
    self.blocks = 0  # blocks stepped through the pool
    self.frames = 0  # frames handed on
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self._error: BaseException | None = None

  def run(self) -> None:
    """Runs until the source ends or ``stop()`` is called, then flushes."""
    slot = self.pool.join()
    try:
      for chunk in self.source:
        self.chunks += 1
        self._step(slot, self.feed.push(chunk))
        if self._stop.is_set():
          break
      self._step(slot, self.feed.finish())
    finally:
      self.pool.leave(slot)

  def _step(self, slot: int, blocks: list[np.ndarray]) -> None:
    for block in blocks:
      result = self.pool.step({slot: block})[slot]
      frames = self.feed.over_real_samples(result.frames, result.first_frame, self.pool.hop)
      if len(frames) < len(result.frames):
        result = dataclasses.replace(result, frames=frames)
      self.blocks += 1
      self.frames += len(result.frames)
      self.on_result(result)

  def start(self) -> None:
    """Runs the loop on the engine's own (daemon) thread."""
    if self._thread is not None:
      raise RuntimeError("this runner has already been started")
    self._thread = threading.Thread(target=self._run_catching, name="carfac-engine", daemon=True)
    self._thread.start()

  def _run_catching(self) -> None:
    try:
      self.run()
    except BaseException as err:  # re-raised on the caller's thread by join()
      self._error = err

  def join(self, timeout: float | None = None) -> None:
    """Waits for the thread to end; re-raises what ended it, if anything did."""
    if self._thread is None:
      raise RuntimeError("this runner was not started")
    self._thread.join(timeout)
    if self._thread.is_alive():
      raise TimeoutError(f"the engine thread did not end within {timeout} s")
    if self._error is not None:
      raise self._error

  def stop(self, timeout: float | None = 10.0) -> None:
    """Asks the loop to stop after the current chunk, flush, and end."""
    self._stop.set()
    self.join(timeout)
