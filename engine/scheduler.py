"""When to step a stream pool, and whether it can take one more stream in real time.

A front end (the server's engine thread, a file batcher) feeds many streams'
blocks into one ``StreamPool``. ``Scheduler`` holds each stream's queued
blocks and decides when the pool steps:

- as soon as every stream that is still sending has a block queued (so a
  lone client that sends faster than real time is served as fast as the
  engine can go), or as soon as a stream has fallen more than a block
  behind real time, or has a backlog: more than ``interval`` plus one
  block of audio queued (so a stream delayed by a hiccup, or one whose
  client sent what it had recorded while it waited for ``ready``, catches
  up at the engine's speed, rather than staying behind for good at one
  block per interval); otherwise no sooner than ``interval`` after the
  previous step began (by default one block's duration: real-time streams
  then share one step per block, and a queued block waits at most that
  long);
- each step takes at most one block per stream.

Lag policy: a stream's lateness is the wall time since its queue last ran
empty minus the audio stepped since then (a real-time stream's queue
empties every block; a client that pauses is not late; a client that sends
faster than real time is early). A stream more than ``max_lag_s`` late when
the pool steps is taken out (``Batch.overdue``): the machine cannot serve it
in real time, and its backlog must not grow without bound.

Admission: ``StepCosts`` are a pool's measured step times per compiled batch
size (``StreamPool.measure_step_seconds``, the pool alone); ``load`` predicts
the fraction of a block's duration that one step of the pool takes with its
streams (plus ``extra`` more), which a front end sums over the pools that
share a thread and compares with its margin. In a busy process a step takes
longer than it did alone (the event loop wants the GIL and the cores too:
2 to 3x, measured in the server with 8 to 16 clients), so ``observe`` keeps
a running ratio of the steps' actual durations to the measured ones
(``slowdown``, at least 1; quick to rise, ``settle_s`` to fall) that
``load`` includes.

Nothing here is thread-safe: the caller holds its own lock.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Mapping

import numpy as np

from engine.pool import StreamPool


class ScheduledStream:
  """One stream's queue in a ``Scheduler`` (front ends subclass it with what they need)."""

  def __init__(self):
    self.pending: collections.deque[np.ndarray] = collections.deque()
    self.finished = False  # its last block is queued
    self.overdue = False  # taken out for being too late: no more blocks are scheduled
    self.anchor = 0.0  # monotonic time at which its stepped audio would be exactly on time
    self.stepped_s = 0.0  # audio stepped since the anchor, seconds


@dataclasses.dataclass
class Batch:
  """What ``Scheduler.take`` hands out: one block per stream to step, and the streams too late to serve."""

  blocks: list[tuple[ScheduledStream, np.ndarray]]
  overdue: list[ScheduledStream]
  wake_at: float  # when to look again if nothing is due now (math.inf: when a block arrives)


class Scheduler:
  """The queued blocks of one pool's streams, and the policy of when to step it (see the module doc)."""

  def __init__(self, block_seconds: float, interval_s: float | None = None, max_lag_s: float = math.inf):
    self.block_seconds = block_seconds
    self.interval_s = block_seconds if interval_s is None else interval_s
    # More blocks queued than this is a backlog (a step is due at once): more than an interval's worth plus one.
    self.backlog_blocks = math.floor(self.interval_s / block_seconds + 1e-9) + 1
    self.max_lag_s = max_lag_s
    self.ready: dict[ScheduledStream, None] = {}  # streams with a queued block, in order
    self.missing = 0  # unfinished streams with no queued block
    self.finishing = 0  # streams whose last block is queued: they will give their slots back
    self.last_step = -math.inf  # when the previous step began

  def add(self, stream: ScheduledStream) -> None:
    """A stream joined: unfinished, nothing queued yet."""
    self.missing += 1

  def remove(self, stream: ScheduledStream) -> None:
    """A stream left: forget it and its queued blocks."""
    if stream in self.ready:
      del self.ready[stream]
    elif not stream.finished and not stream.overdue:
      self.missing -= 1
    self.finishing -= stream.finished
    stream.pending.clear()

  def push(self, stream: ScheduledStream, blocks: list[np.ndarray], final: bool, now: float | None = None) -> bool:
    """Queues blocks; True when the caller should look at this scheduler again (a step may be due)."""
    if stream.overdue:
      return False
    if not stream.pending and blocks:  # the queue was empty: the stream is on time from here
      stream.anchor, stream.stepped_s = time.monotonic() if now is None else now, 0.0
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

  def lateness(self, stream: ScheduledStream, now: float) -> float:
    """Seconds by which ``stream``'s next block is late (negative: early)."""
    return now - stream.anchor - stream.stepped_s

  def take(self, now: float) -> Batch:
    """One block of every ready stream if a step is due (and the overdue streams), else when to look again."""
    if not self.ready:
      return Batch([], [], math.inf)
    due = self.last_step + self.interval_s
    lateness = {stream: self.lateness(stream, now) for stream in self.ready}
    catching_up = max(lateness.values()) > self.block_seconds or any(
      len(stream.pending) > self.backlog_blocks for stream in self.ready
    )
    if self.missing and now < due and not catching_up:
      return Batch([], [], due)
    self.last_step = now
    blocks, overdue = [], []
    for stream, late in lateness.items():
      if late > self.max_lag_s:
        del self.ready[stream]
        stream.pending.clear()
        stream.overdue = True
        overdue.append(stream)
        continue
      blocks.append((stream, stream.pending.popleft()))
      stream.stepped_s += self.block_seconds
      if not stream.pending:
        del self.ready[stream]
        self.missing += not stream.finished
    return Batch(blocks, overdue, math.inf)


@dataclasses.dataclass
class StepCosts:
  """A pool's measured step time per compiled batch size, and what follows for its load."""

  seconds: Mapping[int, float]  # batch size -> one step (every shard at once), the pool alone
  block_seconds: float
  slowdown: float = 1.0  # actual step durations over the measured ones, running (>= 1)
  settle_s: float = 10.0  # the time over which the slowdown falls back once steps are faster again

  def __post_init__(self):
    # A bigger batch never costs less: taking the running maximum over the sizes keeps measurement
    # noise from admitting more streams at a size than at a smaller one.
    costs, highest = {}, 0.0
    for size in sorted(self.seconds):
      highest = costs[size] = max(highest, self.seconds[size])
    self.seconds = costs

  @classmethod
  def measure(cls, pool: StreamPool) -> StepCosts:
    return cls(pool.measure_step_seconds(), pool.block_size / pool.hypers.fs)

  def load(self, pool: StreamPool, extra: int = 0) -> float:
    """One step's duration over one block's, with the pool's streams and ``extra`` more joining the
    least loaded shards (the shards run in parallel: the fullest one sets the time)."""
    streams = sorted(pool.shard_streams)
    for _ in range(extra):
      streams[0] += 1
      streams.sort()
    if streams[-1] == 0:
      return 0.0
    if streams[-1] > pool.shard_slots:
      return math.inf
    return self.slowdown * self.seconds[pool.bucket_for(streams[-1])] / self.block_seconds

  def observe(self, pool: StreamPool, step_seconds: float, rise_weight: float = 0.2) -> None:
    """A step of ``pool`` as it is now took ``step_seconds``: updates the running slowdown.

    It rises within a few slower steps but falls back over ``settle_s`` (a weight of one block's share of
    it per step), so admission keeps to the slowest steps of the last seconds: after a burst of work
    (clients connecting) a few fast steps do not let in streams that the next burst could not serve.
    """
    busiest = max(pool.shard_streams)
    if busiest:
      ratio = step_seconds / self.seconds[pool.bucket_for(busiest)]
      weight = rise_weight if ratio > self.slowdown else min(1.0, self.block_seconds / self.settle_s)
      self.slowdown = max(1.0, (1 - weight) * self.slowdown + weight * ratio)

  def realtime_streams(self, pool: StreamPool, margin: float, observed: bool = False) -> int:
    """Streams the pool serves in real time on its own: shards x the largest batch size whose step
    takes at most ``margin`` of a block (0 if not even one stream per shard fits). ``observed``: with
    the steps as slow as they have been lately (``slowdown``), as admission sees them now."""
    scale = self.slowdown if observed else 1.0
    fits = [size for size, seconds in self.seconds.items() if scale * seconds <= margin * self.block_seconds]
    return pool.shards * max(fits, default=0)
