"""The server's engine thread: every client's blocks through shared pools, batched.

One ``StreamPool`` per ear count (and, with ``--pitchogram``, one more for
mono streams that ask for the SAI or pitchogram: "1+pictures"), all owned by
one thread (a pool is not
thread-safe, and ``pool.step`` is blocking CPU work that must stay off the
event loop). Connections, on the loop, queue blocks on their ``EngineStream``;
each pool's ``engine.scheduler.Scheduler`` decides when it steps (the
batching and lag policy live there); results go back to each stream's
listener on the loop (``call_soon_threadsafe``, so they arrive in order).
This module is only the bridge: the thread, its lock, and the asyncio side.

Capacity: after compiling, each pool's step is timed at every compiled
batch size (``StepCosts``), and every step's actual duration keeps a running
slowdown against those times. With ``capacity="auto"`` a stream is admitted
only if the predicted step time of all pools together (they share this
thread), slowdown included, stays within ``realtime_margin`` of a block's
duration; with a
number, a pool admits that many streams (a warning is logged when that is
above what was measured). A refused stream gets ``PoolFullError``.

Joining and leaving a slot also run on this thread, between steps, so a
stream that leaves frees its slot within one step. A join that finds its
pool full while some of the pool's streams are finishing (their last block
is queued: they will leave) waits for one of those slots,
at most ``join_wait_s``; otherwise, or after that, it fails. A stream that
falls more than ``max_lag_s`` behind real time is ended with ``LagError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

import carfac
from engine.compile_cache import enable_compilation_cache
from engine.pool import BlockResult, PoolFullError, SlotState, StreamPool
from engine.scheduler import ScheduledStream, Scheduler, StepCosts
from server.metrics import Metrics
from server.settings import Settings

logger = logging.getLogger(__name__)


class NotReadyError(RuntimeError):
  """The pools are still being compiled (or failed to build)."""


class LagError(RuntimeError):
  """The engine fell too far behind a stream to serve it in real time."""


class StreamListener(Protocol):
  """What a stream reports to, on the event loop."""

  def on_result(self, result: BlockResult) -> None: ...

  def on_error(self, error: Exception) -> None: ...


class EngineStream(ScheduledStream):
  """One client's slot in a pool. Its methods are called on the event loop.

  ``sai_every``: in a pool with pictures, the stream's block ``k`` (counted
  from its start) returns its SAI frame when ``k + 1`` is a multiple of it
  (0: never).
  """

  def __init__(self, engine: Engine, lane: Lane, slot: int, listener: StreamListener, sai_every: int = 0):
    super().__init__()
    self._engine, self.lane, self.slot, self.listener = engine, lane, slot, listener
    self.sai_every, self.blocks_stepped = sai_every, 0  # blocks_stepped: engine thread only
    self.left = False  # the stream left its slot

  def wants_sai_frame(self) -> bool:
    """Whether the next block stepped should return the SAI frame (engine thread)."""
    return self.sai_every > 0 and (self.blocks_stepped + 1) % self.sai_every == 0

  def submit(self, blocks: list[np.ndarray], final: bool = False) -> None:
    """Queues model-rate blocks; ``final``: these are the stream's last."""
    self._engine.submit(self, blocks, final)

  def leave(self) -> None:
    """Drops queued blocks and gives the slot back (idempotent)."""
    self._engine.leave(self)


@dataclasses.dataclass
class _JoinRequest:
  """A stream asking for a slot; its future is settled on the engine thread."""

  hop: int
  listener: StreamListener
  deadline: float  # monotonic: the longest it waits for a finishing stream's slot
  resume: SlotState | None = None  # a handed-over stream's state to continue from
  sai_every: int = 0  # see EngineStream
  weights: carfac.CarfacWeights | None = None  # the stream's own (a hearing profile), or the pool's
  input_gain: float = 1.0  # the stream's calibrated level
  future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)


@dataclasses.dataclass
class Lane:
  """One pool, its scheduler, its measured costs, and the joins waiting for it."""

  pool: StreamPool
  label: str
  scheduler: Scheduler
  costs: StepCosts
  realtime_capacity: int  # streams it serves in real time on its own (measured)
  waiting: list[_JoinRequest] = dataclasses.field(default_factory=list)  # (engine thread)


def _leave_if_joined(future: concurrent.futures.Future) -> None:
  """For a join whose caller was cancelled: gives back the slot it got anyway."""
  if not future.cancelled() and future.exception() is None:
    future.result().leave()


PICTURES = "+pictures"


def lane_key(ears: int, pictures: bool = False) -> str:
  """The name of the pool serving ``ears``-channel streams, with or without pictures: "1", "2", "1+pictures"."""
  return f"{ears}{PICTURES if pictures else ''}"


def design(settings: Settings, ears: int) -> carfac.CarfacDesignParameters:
  """The model design of the pool serving ``ears``-channel clients."""
  return carfac.CarfacDesignParameters(fs=settings.model_rate, n_ears=ears, ihc_style=settings.ihc_style)


def served_weights(settings: Settings, ears: int) -> carfac.CarfacWeights | None:
  """The ``--weights`` file's weights for the ``ears`` pool (None without the setting).

  Raises ``carfac.WeightsFileError`` (saying what differs) when the file is
  not of that pool's design.
  """
  if settings.weights is None:
    return None
  hypers, designed, _ = carfac.design_and_init_carfac(design(settings, ears), np.float32)
  return carfac.load_weights(settings.weights, hypers, like=designed)


class Engine:
  """Builds and measures the pools on its thread, then steps them until ``shut_down``."""

  def __init__(self, settings: Settings, metrics: Metrics):
    self._settings, self._metrics = settings, metrics
    self._cond = threading.Condition()
    self._commands: list[Callable[[], None]] = []
    self._lanes: dict[str, Lane] = {}
    self._built = threading.Event()
    self._shutting_down = False
    self._thread: threading.Thread | None = None
    self._loop: asyncio.AbstractEventLoop | None = None
    self.error: BaseException | None = None  # why building failed, if it did

  @property
  def ready(self) -> bool:
    return self._built.is_set() and self.error is None

  def _require_ready(self) -> None:
    if not self.ready:
      raise NotReadyError("the engine is still compiling" if self.error is None else f"the engine failed: {self.error}")

  @property
  def lane_keys(self) -> list[str]:
    """Every pool's key (``lane_key``), in the order they were built."""
    self._require_ready()
    return list(self._lanes)

  def lane(self, key: str) -> Lane:
    """The pool named ``key`` (``lane_key``) and its figures (once ready)."""
    self._require_ready()
    return self._lanes[key]

  def pool(self, key: str) -> StreamPool:
    return self.lane(key).pool

  def admitted_capacity(self, key: str) -> int:
    """The most streams the ``key`` pool admits (alone, with the other pools idle)."""
    lane = self.lane(key)
    capacity = self._settings.capacity
    return min(lane.realtime_capacity, lane.pool.capacity) if capacity == "auto" else capacity

  def start(self, loop: asyncio.AbstractEventLoop) -> None:
    """Starts the thread; it compiles the pools first (``ready`` turns true after)."""
    self._loop = loop
    self._thread = threading.Thread(target=self._run, name="carfac-engine", daemon=True)
    self._thread.start()

  def shut_down(self, timeout: float = 5.0) -> None:
    """Ends the thread after its current step (queued work is dropped): the server's last step, after the drain."""
    with self._cond:
      self._shutting_down = True
      self._cond.notify()
    if self._thread is not None:
      self._thread.join(timeout)

  async def join(
    self,
    key: str,
    hop: int,
    listener: StreamListener,
    resume: SlotState | None = None,
    sai_every: int = 0,
    weights: carfac.CarfacWeights | None = None,
    input_gain: float = 1.0,
  ) -> EngineStream:
    """Takes a slot in the ``key`` pool; raises ``PoolFullError`` when it has no room (see above).

    ``resume``: start from a handed-over stream's exported state (``ValueError``
    if it does not fit the pool). ``sai_every``: see ``EngineStream``.
    ``weights``, ``input_gain``: the stream's own (``StreamPool.join``).
    """
    lane = self.lane(key)
    request = _JoinRequest(
      hop, listener, time.monotonic() + self._settings.join_wait_s, resume, sai_every, weights, input_gain
    )
    self._command(lambda: self._admit(lane, request) or lane.waiting.append(request))
    try:
      return await asyncio.wrap_future(request.future)
    except asyncio.CancelledError:
      request.future.add_done_callback(_leave_if_joined)
      raise

  def _room_for_one_more(self, lane: Lane) -> bool:
    """Admission control (engine thread): can ``lane`` take a stream and every stream stay real time?"""
    if self._settings.capacity != "auto":
      return lane.pool.active_streams < self._settings.capacity
    load = sum(other.costs.load(other.pool, extra=other is lane) for other in self._lanes.values())
    return load <= self._settings.realtime_margin

  def _admit(self, lane: Lane, request: _JoinRequest) -> bool:
    """On the engine thread: settles ``request``, or returns False if it should wait for a slot."""
    if request.future.cancelled():
      return True
    try:
      if not self._room_for_one_more(lane):
        if self._settings.capacity == "auto":
          raise PoolFullError(f"the {lane.label}-ear pool is at its real-time capacity")
        raise PoolFullError(f"the {lane.label}-ear pool has its --capacity of {self._settings.capacity} streams")
      slot = lane.pool.join(request.hop, request.resume, request.weights, request.input_gain)
    except PoolFullError as err:
      with self._cond:
        if lane.scheduler.finishing and time.monotonic() < request.deadline:
          return False
      _settle(request.future, exception=err)
      return True
    except Exception as err:
      _settle(request.future, exception=err)
      return True
    stream = EngineStream(self, lane, slot, request.listener, request.sai_every)
    with self._cond:
      lane.scheduler.add(stream)
    self._count_slots()
    if not _settle(request.future, result=stream):
      stream.leave()  # the caller gave up meanwhile
    return True

  def _admit_waiting(self) -> None:
    """Retries the waiting joins (slots may have been given back, deadlines passed)."""
    for lane in self._lanes.values():
      lane.waiting = [request for request in lane.waiting if not self._admit(lane, request)]

  def _count_slots(self) -> None:
    for lane in self._lanes.values():
      self._metrics.slots_in_use.labels(lane.label).set(lane.pool.active_streams)
    self._metrics.engine_load.set(sum(lane.costs.load(lane.pool) for lane in self._lanes.values()))

  def submit(self, stream: EngineStream, blocks: list[np.ndarray], final: bool) -> None:
    with self._cond:
      if stream.left:
        return
      if stream.lane.scheduler.push(stream, blocks, final):
        self._cond.notify()

  async def export(self, stream: EngineStream) -> SlotState:
    """``stream``'s pool state, copied on the engine thread between steps (its blocks must all be done)."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def export() -> None:
      try:
        _settle(future, result=stream.lane.pool.export_slot(stream.slot))
      except Exception as err:
        _settle(future, exception=err)

    self._command(export)
    return await asyncio.wrap_future(future)

  def leave(self, stream: EngineStream) -> None:
    with self._cond:
      if stream.left:
        return
      stream.left = True
      stream.lane.scheduler.remove(stream)
    self._command(lambda: self._leave_pool(stream))

  def _leave_pool(self, stream: EngineStream) -> None:
    stream.lane.pool.leave(stream.slot)
    self._count_slots()

  def _command(self, command: Callable[[], None]) -> None:
    with self._cond:
      self._commands.append(command)
      self._cond.notify()

  def _build(self) -> None:
    s = self._settings
    if s.compile_cache_dir is not None:
      enable_compilation_cache(s.compile_cache_dir)
    kinds = [(ears, False) for ears in sorted(set(s.ears))] + ([(1, True)] if s.pitchogram and 1 in s.ears else [])
    for ears, pictures in kinds:
      key = lane_key(ears, pictures)
      started = time.perf_counter()
      pool = StreamPool(
        design(s, ears),
        capacity=s.pool_slots,
        block_size=s.block_size,
        hop=s.model_samples(s.hop_ms),
        raw_outputs=s.raw_outputs,
        dtype=np.float32,
        min_hop=s.model_samples(s.min_hop_ms),
        shards=s.shards,
        pitchogram=carfac.PitchogramPipelineParams(num_samples_per_segment=s.block_size) if pictures else None,
        weights=served_weights(s, ears),
        per_stream_weights=s.hearing_profiles,
      )
      compiled = time.perf_counter()
      costs = StepCosts.measure(pool)
      measured = costs.realtime_streams(pool, s.realtime_margin)
      scheduler = Scheduler(costs.block_seconds, s.step_interval_s, s.max_lag_s)
      self._lanes[key] = Lane(pool, key, scheduler, costs, measured)
      self._metrics.realtime_capacity.labels(key).set(measured)
      logger.info(
          "engine: %s-ear pool (%d slots, batch sizes %s) compiled in %.1f s; step %s ms; real time for %d streams "
          "(a step within %.0f%% of a block)",
          key, pool.capacity, list(pool.buckets), compiled - started,
          {size: round(1000 * t, 2) for size, t in costs.seconds.items()}, measured, 100 * s.realtime_margin,
      )  # fmt: skip
      if s.capacity != "auto" and s.capacity > measured:
        logger.warning(
            "engine: --capacity %d is above the %d %s-ear streams this machine was measured to serve in real time",
            s.capacity, measured, key,
        )  # fmt: skip
    if s.capacity == "auto" and min(lane.realtime_capacity for lane in self._lanes.values()) == 0:
      logger.warning("engine: this machine cannot serve even one stream per shard in real time; streams are refused")
    self._count_slots()

  def _run(self) -> None:
    try:
      self._build()
    except Exception as err:
      logger.exception("engine: building the pools failed")
      self.error = err
    if self.error is None:
      _freeze_start_up_objects()
    self._built.set()
    if self.error is None:
      self._serve()

  def _serve(self) -> None:
    """Runs commands and due steps until ``shut_down``."""
    while (work := self._next_work()) is not None:
      commands, batches = work
      for command in commands:
        command()
      self._admit_waiting()
      for lane, batch in batches:
        self._step(lane, batch)

  def _next_work(self) -> tuple[list[Callable[[], None]], list[tuple[Lane, list]]] | None:
    """Waits for commands or a due batch (ending overdue streams); None once shutting down."""
    with self._cond:
      while not self._shutting_down:
        now = time.monotonic()
        commands, self._commands = self._commands, []
        batches, wake_at = [], math.inf
        for lane in self._lanes.values():
          batch = lane.scheduler.take(now)
          if batch.overdue:
            lag = LagError(f"more than {self._settings.max_lag_s:g} s behind real time")
            self._loop.call_soon_threadsafe(_deliver_error, batch.overdue, lag)
          if batch.blocks:
            batches.append((lane, batch.blocks))
          wake_at = min(wake_at, batch.wake_at, *(request.deadline for request in lane.waiting))
        if commands or batches or wake_at <= now:
          return commands, batches
        self._cond.wait(None if wake_at == math.inf else wake_at - now)
      return None

  def _step(self, lane: Lane, batch: list[tuple[EngineStream, np.ndarray]]) -> None:
    started = time.perf_counter()
    try:
      sai_frames = [stream.slot for stream, _ in batch if stream.wants_sai_frame()]
      results = lane.pool.step({stream.slot: block for stream, block in batch}, sai_frames)
    except Exception as err:
      logger.exception("engine: a step of the %s-ear pool failed", lane.label)
      self._loop.call_soon_threadsafe(_deliver_error, [stream for stream, _ in batch], err)
      return
    for stream, _ in batch:
      stream.blocks_stepped += 1
    seconds = time.perf_counter() - started
    lane.costs.observe(lane.pool, seconds)
    self._metrics.step_slowdown.labels(lane.label).set(lane.costs.slowdown)
    self._metrics.step_seconds.labels(lane.label).observe(seconds)
    self._metrics.step_load.labels(lane.label).observe(seconds / lane.costs.block_seconds)
    self._loop.call_soon_threadsafe(_deliver, [(stream, results[stream.slot]) for stream, _ in batch])


def _freeze_start_up_objects() -> None:
  """Moves every object alive after start-up (JAX's modules, the compiled pools) out of the garbage
  collector's sight (``gc.freeze``). A full collection otherwise walks them all while it holds the GIL, and
  so delays every step: 55 to 260 ms each in a server at its capacity (Python 3.11), 4 ms after the freeze."""
  gc.collect()
  gc.freeze()


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
    if not stream.left:
      stream.listener.on_result(result)


def _deliver_error(streams: list[EngineStream], error: Exception) -> None:
  for stream in streams:
    if not stream.left:
      stream.listener.on_error(error)
