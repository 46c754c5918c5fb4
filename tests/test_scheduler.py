"""``engine.scheduler``: when a pool steps (``Scheduler``), and measured step times -> predicted load and
real-time streams (``StepCosts``)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from engine.pool import bucket_ladder
from engine.scheduler import ScheduledStream, Scheduler, StepCosts


def _pool(shard_streams: list[int], shard_slots: int = 8) -> SimpleNamespace:
  """What StepCosts reads of a StreamPool: its shards' streams and batch sizes."""
  buckets = bucket_ladder(shard_slots)
  return SimpleNamespace(
    shard_streams=shard_streams,
    shards=len(shard_streams),
    shard_slots=shard_slots,
    bucket_for=lambda n: 0 if n == 0 else min(b for b in buckets if b >= n),
  )


def test_costs_never_fall_with_the_batch_size_and_admission_agrees_with_the_reported_capacity() -> None:
  block = 0.01
  costs = StepCosts({1: 0.002, 2: 0.006, 4: 0.004, 8: 0.009}, block)  # 4 measured faster than 2: noise
  assert costs.seconds == {1: 0.002, 2: 0.006, 4: 0.006, 8: 0.009}
  empty = _pool([0, 0])
  capacity = costs.realtime_streams(empty, margin=0.7)
  assert capacity == 2 * 4  # 4 per shard fits 7 ms, 8 does not
  streams = [0, 0]
  admitted = 0
  while costs.load(_pool(streams), extra=1) <= 0.7:  # admit while one more keeps the step within the margin
    streams[streams.index(min(streams))] += 1
    admitted += 1
  assert admitted == capacity
  assert costs.load(_pool([0, 0])) == 0.0 and costs.load(_pool([8, 8]), extra=1) == math.inf


def test_the_slowdown_follows_the_steps_actual_durations() -> None:
  costs = StepCosts({1: 0.001, 2: 0.002}, 0.01)
  pool = _pool([2, 1], shard_slots=2)
  for _ in range(50):
    costs.observe(pool, 0.006)  # three times the measured 2 ms
  assert 2.9 < costs.slowdown <= 3.0 and math.isclose(costs.load(pool), 0.6, rel_tol=0.05)
  # Admission now sees 3x slower steps: at margin 0.5, one stream per shard (3 ms) fits, two (6 ms) do not.
  assert costs.realtime_streams(pool, margin=0.5) == 2 * 2
  assert costs.realtime_streams(pool, margin=0.5, observed=True) == 2 * 1
  for _ in range(100):  # one second of steps as fast as measured: the slowdown falls over settle_s (10 s)
    costs.observe(pool, 0.002)
  expected = 1 + 2 * (1 - 0.01 / costs.settle_s) ** 100  # from 3 towards 1 with a weight of 1/1000 per step
  assert math.isclose(costs.slowdown, expected, rel_tol=0.02) and costs.slowdown > 2.7
  costs.observe(pool, 0.008)  # one slower step lifts it at once
  assert math.isclose(costs.slowdown, 0.8 * expected + 0.2 * 4, rel_tol=0.02)
  for _ in range(10_000):
    costs.observe(pool, 0.001)  # faster than measured: the slowdown never drops below 1
  assert costs.slowdown == 1.0


def test_a_scheduler_steps_when_every_sending_stream_has_a_block_or_an_interval_passed() -> None:
  scheduler = Scheduler(block_seconds=0.01, interval_s=0.01)
  a, b = ScheduledStream(), ScheduledStream()
  scheduler.add(a)
  scheduler.add(b)
  block = np.zeros((4, 1), np.float32)
  slots = lambda batch: [{id(a): 0, id(b): 1}[id(stream)] for stream, _ in batch.blocks]
  assert scheduler.push(a, [block], final=False, now=1.0)  # the first ready stream: the engine looks
  assert slots(scheduler.take(now=1.0)) == [0]  # no step for a long time: go
  assert scheduler.push(a, [block], final=False, now=1.002)
  assert scheduler.take(now=1.002).wake_at == 1.01  # b has nothing yet: wait for it ...
  assert scheduler.push(b, [block, block], final=False, now=1.003)  # ... until everyone has a block
  assert slots(scheduler.take(now=1.003)) == [0, 1]
  assert scheduler.take(now=1.004).wake_at == 1.013  # b's second block waits for a ...
  assert slots(scheduler.take(now=1.013)) == [1]  # ... one interval at most
  scheduler.push(a, [], final=True)  # a finished: nobody else to wait for
  assert scheduler.missing == 1 and scheduler.take(now=1.02).wake_at == math.inf
  assert scheduler.finishing == 1
  scheduler.remove(b)
  scheduler.remove(a)
  assert scheduler.missing == 0 and scheduler.finishing == 0 and not scheduler.ready


def _scheduler_with_an_idle_stream() -> tuple[Scheduler, ScheduledStream]:
  """A scheduler (10 ms blocks and interval) with one more stream that sends but has nothing queued, so that
  the pool would normally wait for the interval; and the stream under test."""
  scheduler = Scheduler(block_seconds=0.01, interval_s=0.01)
  stream = ScheduledStream()
  scheduler.add(stream)
  scheduler.add(ScheduledStream())
  return scheduler, stream


def test_a_backlog_is_stepped_at_the_engines_speed() -> None:
  """Five blocks at once (a client sending what it recorded while it waited for ready, a network stall): stepping
  them one per interval would keep the stream behind for good, so more than an interval and a block of queued
  audio (2 blocks here) steps at once."""
  scheduler, burst = _scheduler_with_an_idle_stream()
  assert scheduler.backlog_blocks == 2
  block = np.zeros((4, 1), np.float32)
  scheduler.push(burst, [block] * 5, final=False, now=0.0)
  assert len(scheduler.take(now=0.0).blocks) == 1  # the first step (no step for a long time)
  assert len(scheduler.take(now=0.001).blocks) == 1  # 4 queued: a backlog, at once
  assert len(scheduler.take(now=0.002).blocks) == 1  # 3 queued: still
  assert scheduler.take(now=0.003).wake_at == pytest.approx(0.012)  # 2 queued, and early: the interval again


def test_a_stream_more_than_a_block_late_steps_without_waiting_for_the_interval() -> None:
  scheduler, behind = _scheduler_with_an_idle_stream()
  block = np.zeros((4, 1), np.float32)
  scheduler.push(behind, [block, block], final=False, now=1.0)
  assert len(scheduler.take(now=1.0).blocks) == 1
  scheduler.push(behind, [block], final=False, now=1.025)  # its next block comes late; the queue never ran empty
  assert len(scheduler.take(now=1.025).blocks) == 1  # the interval has passed
  assert scheduler.take(now=1.029).wake_at == pytest.approx(1.035)  # 1.029 - 1.0 - 0.02 stepped: within a block
  assert len(scheduler.take(now=1.032).blocks) == 1  # before the interval, but 0.012 s behind: more than a block


def test_a_stream_is_late_only_while_its_queue_never_empties() -> None:
  """Lateness: wall time since the queue last ran empty minus the audio stepped since then."""
  scheduler = Scheduler(block_seconds=0.01, interval_s=0.01, max_lag_s=0.05)
  fast, paused = ScheduledStream(), ScheduledStream()
  scheduler.add(fast)
  block = np.zeros((4, 1), np.float32)
  scheduler.push(fast, [block] * 100, final=False, now=0.0)  # a file sent at once: early, not late
  for step in range(10):
    assert scheduler.take(now=step * 0.001).overdue == []
  assert scheduler.lateness(fast, now=0.01) < 0
  assert scheduler.take(now=0.2).overdue == [fast]  # 0.2 s after its start only 0.1 s stepped: 0.1 s late
  assert fast.overdue and not scheduler.push(fast, [block], final=False)  # no more blocks for it
  scheduler.remove(fast)
  scheduler.add(paused)
  scheduler.push(paused, [block], final=False, now=1.0)
  assert len(scheduler.take(now=1.0).blocks) == 1  # its queue ran empty ...
  scheduler.push(paused, [block], final=False, now=5.0)  # ... so a pause of 4 s is not lateness
  batch = scheduler.take(now=5.0)
  assert len(batch.blocks) == 1 and batch.overdue == []
  scheduler.remove(paused)
  assert scheduler.missing == 0 and not scheduler.ready
