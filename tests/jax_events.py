"""Counting XLA compilations, for the tests that nothing compiles on a hot path."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from engine.pool import BlockResult, StreamPool


def compilations() -> list[str]:
  """A list that from now on gets one entry per backend compilation in this process."""
  seen: list[str] = []
  jax.monitoring.register_event_duration_secs_listener(
    lambda event, _secs, **_: seen.append(event) if "backend_compile" in event else None
  )
  return seen


def churn_compiles_nothing(
  make_pool: Callable[[], StreamPool],
  steps: int,
  join_every: int,
  leave_every: int,
  step: Callable[[StreamPool, list[int], np.random.Generator], dict[int, BlockResult]],
  check: Callable[[BlockResult], bool],
) -> StreamPool:
  """Streams join (every ``join_every`` steps, up to the pool's capacity) and leave (the first in use, so the
  last moves into its place, every ``leave_every``) while ``step`` steps the pool; every result passes
  ``check``, every batch size runs, and nothing compiles after the pool is built. Returns the pool."""
  compiles = compilations()
  pool = make_pool()
  before = len(compiles)
  assert before >= 2, "the listener saw no start-up compilation; the check would be vacuous"
  rng, buckets_run = np.random.default_rng(1), set()
  for t in range(steps):
    if t % join_every == 0 and pool.active_streams < pool.capacity:
      pool.join()
    active = pool.slots_in_use
    buckets_run.add(pool.bucket_for(pool.shard_streams[0]))
    assert all(check(result) for result in step(pool, active, rng).values())
    if t % leave_every == leave_every - 1:
      pool.leave(active[0])
  assert buckets_run == set(pool.buckets)  # joins, leaves (moves) and every batch size
  assert len(compiles) == before, compiles[before:]
  return pool
