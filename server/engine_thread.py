"""The server's engine thread: every client's blocks through shared pools, batched.

One ``StreamPool`` per ear count, all owned by one thread (a pool is not
thread-safe, and ``pool.step`` is blocking CPU work that must stay off the
event loop). Connections, on the loop, queue blocks on their ``EngineStream``;
the thread steps each pool with at most one pending block per stream, and
hands each result back to its stream's listener on the loop
(``call_soon_threadsafe``, so results arrive in order).

Batching policy: a step costs about the same however many of its slots it
advances, so a pool is stepped as soon as every stream that is still sending
has a block queued, and otherwise no sooner than ``step_interval`` after its
previous step began (by default one block's duration: real-time streams then
share one step per block, and a queued block waits at most that long).

Joining and leaving a slot also run on this thread, between steps, so a
stream that leaves frees its slot within one step. A join that finds its
pool full while some of the pool's streams are finishing (their last block
is queued: they are giving their slots back) waits for one of those slots,
at most ``join_wait_s``; otherwise, or after that, it fails with
``PoolFullError``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import math
import threading
import time
from typing import Callable, Protocol

import numpy as np

import carfac
from engine.compile_cache import enable_compilation_cache
from engine.pool import BlockResult, PoolFullError, StreamPool
from server.metrics import Metrics
from server.settings import Settings

logger = logging.getLogger(__name__)


class NotReadyError(RuntimeError):
  """The pools are still being compiled (or failed to build)."""


class StreamListener(Protocol):
  """What a stream reports to, on the event loop."""

  def on_result(self, result: BlockResult) -> None: ...

  def on_error(self, error: Exception) -> None: ...


class EngineStream:
  """One client's slot in a pool. Its methods are called on the event loop."""

  def __init__(self, engine: Engine, lane: _Lane, slot: int, listener: StreamListener):
    self._engine, self.lane, self.slot, self.listener = engine, lane, slot, listener
    self.pending: collections.deque[np.ndarray] = collections.deque()
    self.finished = False  # its last block is queued
    self.closed = False

  def submit(self, blocks: list[np.ndarray], final: bool = False) -> None:
    """Queues model-rate blocks; ``final``: these are the stream's last."""
    self._engine.submit(self, blocks, final)

  def close(self) -> None:
    """Drops queued blocks and gives the slot back (idempotent)."""
    self._engine.close(self)


class _Lane:
  """A pool and the bookkeeping that decides when to step it (under the engine's lock)."""

  def __init__(self, pool: StreamPool, label: str):
    self.pool, self.label = pool, label
    self.ready: dict[EngineStream, None] = {}  # streams with a queued block, in order
    self.missing = 0  # unfinished streams with no queued block
    self.finishing = 0  # streams whose last block is queued: they will give their slots back
    self.waiting: list[_JoinRequest] = []  # joins waiting for a finishing stream's slot (engine thread)
    self.last_step = -math.inf  # when the previous step began

  def add(self) -> None:
    """A stream joined: unfinished, nothing queued yet."""
    self.missing += 1

  def remove(self, stream: EngineStream) -> None:
    """A stream left: forget it and its queued blocks."""
    if stream in self.ready:
      del self.ready[stream]
    elif not stream.finished:
      self.missing -= 1
    self.finishing -= stream.finished
    stream.pending.clear()

  def push(self, stream: EngineStream, blocks: list[np.ndarray], final: bool) -> bool:
    """Queues blocks; True when the engine should look at this lane again."""
    was_missing = not stream.finished and not stream.pending
    stream.pending.extend(blocks)
    self.finishing += final and not stream.finished
    stream.finished = stream.finished or final
    if was_missing and (stream.pending or stream.finished):
      self.missing -= 1
    newly_ready = bool(stream.pending) and stream not in self.ready
    if newly_ready:
      self.ready[stream] = None
    return bool(self.ready) and (self.missing == 0 or (newly_ready and len(self.ready) == 1))

  def take(self, now: float, interval: float) -> tuple[list[tuple[EngineStream, np.ndarray]], float]:
    """One block of every ready stream if the lane is due, else ([], when it will be)."""
    if not self.ready:
      return [], math.inf
    due = self.last_step + interval
    if self.missing and now < due:
      return [], due
    self.last_step = now
    batch = []
    for stream in list(self.ready):
      batch.append((stream, stream.pending.popleft()))
      if not stream.pending:
        del self.ready[stream]
        self.missing += not stream.finished
    return batch, math.inf


@dataclasses.dataclass
class _JoinRequest:
  """A stream asking for a slot; its future is settled on the engine thread."""

  hop: int
  listener: StreamListener
  deadline: float  # monotonic: the longest it waits for a finishing stream's slot
  future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)


def _close_if_joined(future: concurrent.futures.Future) -> None:
  """For a join whose caller was cancelled: gives back the slot it got anyway."""
  if not future.cancelled() and future.exception() is None:
    future.result().close()


def design(settings: Settings, ears: int) -> carfac.CarfacDesignParameters:
  """The model design of the pool serving ``ears``-channel clients."""
  params = carfac.CarfacDesignParameters(fs=settings.model_rate, n_ears=ears)
  for ear in params.ears:
    ear.ihc.ihc_style = settings.ihc_style
  return params


class Engine:
  """Builds the pools on its thread, then steps them until ``stop``."""

  def __init__(self, settings: Settings, metrics: Metrics):
    self._settings, self._metrics = settings, metrics
    self._interval_s = settings.step_interval_s
    self._join_wait_s = settings.join_wait_s
    self._cond = threading.Condition()
    self._commands: list[Callable[[], None]] = []
    self._lanes: dict[int, _Lane] = {}
    self._built = threading.Event()
    self._stopping = False
    self._thread: threading.Thread | None = None
    self._loop: asyncio.AbstractEventLoop | None = None
    self.error: BaseException | None = None  # why building failed, if it did

  @property
  def ready(self) -> bool:
    return self._built.is_set() and self.error is None

  def _require_ready(self) -> None:
    if not self.ready:
      raise NotReadyError("the engine is still compiling" if self.error is None else f"the engine failed: {self.error}")

  def pool(self, ears: int) -> StreamPool:
    """The pool serving ``ears``-channel streams (once ready)."""
    self._require_ready()
    return self._lanes[ears].pool

  def start(self, loop: asyncio.AbstractEventLoop) -> None:
    """Starts the thread; it compiles the pools first (``ready`` turns true after)."""
    self._loop = loop
    self._thread = threading.Thread(target=self._run, name="carfac-engine", daemon=True)
    self._thread.start()

  def stop(self, timeout: float = 5.0) -> None:
    """Ends the thread after its current step (queued work is dropped)."""
    with self._cond:
      self._stopping = True
      self._cond.notify()
    if self._thread is not None:
      self._thread.join(timeout)

  async def join(self, ears: int, hop: int, listener: StreamListener) -> EngineStream:
    """Takes a slot in the ``ears`` pool; raises ``PoolFullError`` when none is free (see above)."""
    self._require_ready()
    lane = self._lanes[ears]
    request = _JoinRequest(hop, listener, time.monotonic() + self._join_wait_s)
    self._command(lambda: self._admit(lane, request) or lane.waiting.append(request))
    try:
      return await asyncio.wrap_future(request.future)
    except asyncio.CancelledError:
      request.future.add_done_callback(_close_if_joined)
      raise

  def _admit(self, lane: _Lane, request: _JoinRequest) -> bool:
    """On the engine thread: settles ``request``, or returns False if it should wait for a slot."""
    if request.future.cancelled():
      return True
    try:
      slot = lane.pool.join(request.hop)
    except PoolFullError as err:
      with self._cond:
        if lane.finishing and time.monotonic() < request.deadline:
          return False
      _settle(request.future, exception=err)
      return True
    except Exception as err:
      _settle(request.future, exception=err)
      return True
    stream = EngineStream(self, lane, slot, request.listener)
    with self._cond:
      lane.add()
    self._count_slots(lane)
    if not _settle(request.future, result=stream):
      stream.close()  # the caller gave up meanwhile
    return True

  def _admit_waiting(self) -> None:
    """Retries the waiting joins (slots may have been given back, deadlines passed)."""
    for lane in self._lanes.values():
      lane.waiting = [request for request in lane.waiting if not self._admit(lane, request)]

  def _count_slots(self, lane: _Lane) -> None:
    self._metrics.slots_in_use.labels(lane.label).set(lane.pool.active_streams)

  def submit(self, stream: EngineStream, blocks: list[np.ndarray], final: bool) -> None:
    with self._cond:
      if stream.closed:
        return
      if stream.lane.push(stream, blocks, final):
        self._cond.notify()

  def close(self, stream: EngineStream) -> None:
    with self._cond:
      if stream.closed:
        return
      stream.closed = True
      stream.lane.remove(stream)
    self._command(lambda: self._leave(stream))

  def _leave(self, stream: EngineStream) -> None:
    stream.lane.pool.leave(stream.slot)
    self._count_slots(stream.lane)

  def _command(self, command: Callable[[], None]) -> None:
    with self._cond:
      self._commands.append(command)
      self._cond.notify()

  def _build(self) -> None:
    if self._settings.compile_cache_dir is not None:
      enable_compilation_cache(self._settings.compile_cache_dir)
    s = self._settings
    for ears in sorted(set(s.ears)):
      started = time.perf_counter()
      pool = StreamPool(
          design(s, ears),
          capacity=s.capacity,
          block_size=s.block_size,
          hop=s.model_samples(s.hop_ms),
          raw_outputs=s.raw_outputs,
          dtype=np.float32,
          min_hop=s.model_samples(s.min_hop_ms),
          shards=s.shards,
      )
      self._lanes[ears] = lane = _Lane(pool, str(ears))
      self._count_slots(lane)
      logger.info("engine: %d-ear pool of %d streams compiled in %.1f s", ears, s.capacity, time.perf_counter() - started)

  def _run(self) -> None:
    try:
      self._build()
    except Exception as err:
      logger.exception("engine: building the pools failed")
      self.error = err
    self._built.set()
    if self.error is None:
      self._serve()

  def _serve(self) -> None:
    """Runs commands and due steps until ``stop``."""
    while (work := self._next_work()) is not None:
      commands, batches = work
      for command in commands:
        command()
      self._admit_waiting()
      for lane, batch in batches:
        self._step(lane, batch)

  def _next_work(self) -> tuple[list[Callable[[], None]], list[tuple[_Lane, list]]] | None:
    """Waits for commands or a due batch; None once stopping."""
    with self._cond:
      while not self._stopping:
        now = time.monotonic()
        commands, self._commands = self._commands, []
        batches, wake_at = [], math.inf
        for lane in self._lanes.values():
          batch, due = lane.take(now, self._interval_s)
          if batch:
            batches.append((lane, batch))
          wake_at = min(wake_at, due, *(request.deadline for request in lane.waiting))
        if commands or batches or wake_at <= now:
          return commands, batches
        self._cond.wait(None if wake_at == math.inf else wake_at - now)
      return None

  def _step(self, lane: _Lane, batch: list[tuple[EngineStream, np.ndarray]]) -> None:
    started = time.perf_counter()
    try:
      results = lane.pool.step({stream.slot: block for stream, block in batch})
    except Exception as err:
      logger.exception("engine: a step of the %s-ear pool failed", lane.label)
      self._loop.call_soon_threadsafe(_deliver_error, [stream for stream, _ in batch], err)
      return
    self._metrics.step_seconds.labels(lane.label).observe(time.perf_counter() - started)
    self._loop.call_soon_threadsafe(_deliver, [(stream, results[stream.slot]) for stream, _ in batch])


def _settle(future: concurrent.futures.Future, result=None, exception: Exception | None = None) -> bool:
  """Sets a future's outcome unless it was cancelled; whether it was set."""
  try:
    if exception is not None:
      future.set_exception(exception)
    else:
      future.set_result(result)
  except concurrent.futures.InvalidStateError:
    return False
  return True


def _deliver(results: list[tuple[EngineStream, BlockResult]]) -> None:
  """On the loop: hands each result to its stream's listener (unless it left)."""
  for stream, result in results:
    if not stream.closed:
      stream.listener.on_result(result)


def _deliver_error(streams: list[EngineStream], error: Exception) -> None:
  for stream in streams:
    if not stream.closed:
      stream.listener.on_error(error)
