"""``engine.scheduler.StepCosts``: measured step times -> predicted load and real-time streams."""

from __future__ import annotations

import math
from types import SimpleNamespace

from engine.pool import bucket_ladder
from engine.scheduler import StepCosts


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
  for _ in range(50):
    costs.observe(pool, 0.001)  # faster than measured: the slowdown never drops below 1
  assert costs.slowdown == 1.0
