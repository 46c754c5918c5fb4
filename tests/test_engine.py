"""The stream pool: equal to run_segment, joins and leaves, no compiles, bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax_events import churn_compiles_nothing

import carfac
from engine import StreamPool, max_frames, reduce_to_frames
from engine.pool import PoolFullError, default_shards


def offline_frames(audio: np.ndarray, hop: int, dtype=np.float64, n_ears: int = 1) -> np.ndarray:
  """Mean NAP per complete hop from one offline run_segment call."""
  params = carfac.CarfacDesignParameters(n_ears=n_ears)
  hypers, weights, state = carfac.design_and_init_carfac(params, dtype)
  naps = np.asarray(carfac.run_segment(audio, hypers, weights, state).naps)
  n = len(naps) // hop
  return naps[: n * hop].reshape(n, hop, *naps.shape[1:]).mean(axis=1)


@pytest.mark.parametrize("block, hop", [(256, 100), (64, 64), (50, 220), (7, 3)])
def test_reduce_to_frames_matches_hop_means_across_blocks(block: int, hop: int) -> None:
  x = np.random.default_rng(0).standard_normal((block * 9, 4))
  carry_sum, carry_count, frames = np.zeros(4), np.int32(0), []
  for b in range(9):
    out, n, carry_sum, carry_count = reduce_to_frames(x[b * block : (b + 1) * block], carry_sum, carry_count, hop)
    assert out.shape[0] == max_frames(block, hop)
    frames.append(np.asarray(out)[: int(n)])
  got = np.concatenate(frames)
  n = len(x) // hop
  np.testing.assert_allclose(got, x[: n * hop].reshape(n, hop, 4).mean(axis=1), rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(carry_sum, x[n * hop :].sum(axis=0), atol=1e-12)
  assert int(carry_count) == len(x) - n * hop


@pytest.mark.parametrize("shards", [1, 2])
def test_pool_streams_joining_and_leaving_equal_separate_offline_runs(shards: int) -> None:
  """Four slots, five streams: late joins, pauses (no block in a step: state
  untouched), and a freed slot reused by a new stream that starts afresh."""
  block, hop = 128, 100
  pool = StreamPool(
    carfac.CarfacDesignParameters(), capacity=4, block_size=block, hop=hop, dtype=np.float64, shards=shards
  )
  assert pool.frame_granule == 4  # NAP summed in groups of 4 samples inside the time loop
  rng = np.random.default_rng(5)
  plan = {"a": (0, 10), "b": (0, 4), "c": (2, 6), "d": (3, 7), "e": (5, 5)}  # join step, blocks
  audio = {k: rng.standard_normal(n * block) * 10 ** rng.uniform(-3, -1) for k, (_, n) in plan.items()}
  slots, sent, frames = {}, dict.fromkeys(plan, 0), {k: [] for k in plan}
  for t in range(20):
    for name, (start, _) in plan.items():
      if t == start:
        slots[name] = pool.join()
    blocks = {
      slots[name]: audio[name][sent[name] * block : (sent[name] + 1) * block]
      for name in slots
      if (t + ord(name)) % 4 != 0  # every stream skips some steps
    }
    results = pool.step(blocks)
    for name, slot in list(slots.items()):
      if slot in results:
        assert results[slot].first_frame == sum(len(f) for f in frames[name])
        frames[name].append(results[slot].frames)
        sent[name] += 1
      if sent[name] == plan[name][1]:
        pool.leave(slots.pop(name))
  assert slots == {} and pool.active_streams == 0
  for name in plan:
    got = np.concatenate(frames[name])
    expected = offline_frames(audio[name], hop)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * np.abs(expected).max(), err_msg=name)


def test_pool_compiles_nothing_after_start_up() -> None:
  pool = churn_compiles_nothing(
    lambda: StreamPool(carfac.CarfacDesignParameters(), capacity=3, block_size=64, hop=50, raw_outputs=("bm",)),
    steps=40,
    join_every=7,
    leave_every=11,
    step=lambda pool, active, rng: pool.step({s: rng.standard_normal(64).astype(np.float32) * 0.01 for s in active}),
    check=lambda result: result.raw["bm"].shape == (64, 71, 1),
  )
  assert pool.buckets == (1, 2, 3)


def _slot_state(pool: StreamPool, slot: int) -> list[np.ndarray]:
  shard, position = pool._where[slot]
  return [np.array(leaf[position]) for leaf in jax.tree.leaves(pool._states[shard])]


def test_a_leaving_stream_is_replaced_by_the_last_bit_for_bit_and_the_batch_shrinks() -> None:
  """Compaction: leave in the middle (the last stream moves, state bit for bit), at the end (no move),
  all leave, rejoin; every stream's frames equal its own offline run."""
  block, hop = 64, 64
  pool = StreamPool(carfac.CarfacDesignParameters(), capacity=8, block_size=block, hop=hop, dtype=np.float64)
  assert pool.buckets == (1, 2, 4, 8)
  rng = np.random.default_rng(3)
  audio, frames = {}, {}

  def step(slots: list[int], times: int) -> None:
    for _ in range(times):
      blocks = {}
      for slot in slots:
        chunk = rng.standard_normal(block) * 0.02
        audio[slot].append(chunk)
        blocks[slot] = chunk
      for slot, result in pool.step(blocks).items():
        frames[slot].append(result.frames)

  def join() -> int:
    slot = pool.join()
    audio[slot], frames[slot] = [], []
    return slot

  def check_and_forget(slot: int) -> None:
    got, expected = np.concatenate(frames.pop(slot)), offline_frames(np.concatenate(audio.pop(slot)), hop)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * np.abs(expected).max())

  slots = [join() for _ in range(5)]
  step(slots, 3)
  assert pool.bucket_for(pool.shard_streams[0]) == 8
  moved, before = slots[4], _slot_state(pool, slots[4])
  pool.leave(slots[1])  # in the middle: the last stream takes its place
  check_and_forget(slots[1])
  assert pool._where[moved] == (0, 1)
  for a, b in zip(before, _slot_state(pool, moved)):
    np.testing.assert_array_equal(a, b)
  assert pool.bucket_for(pool.shard_streams[0]) == 4
  slots = [slots[0], moved, slots[2], slots[3]]
  pool.leave(slots[3])  # at the end: nothing moves
  check_and_forget(slots.pop())
  step(slots, 2)
  assert pool.bucket_for(pool.shard_streams[0]) == 4
  pool.leave(slots[0])
  check_and_forget(slots.pop(0))
  assert pool.bucket_for(pool.shard_streams[0]) == 2
  step(slots, 2)
  slots.append(join())  # rejoin: a fresh stream behind the packed ones
  step(slots, 2)
  for slot in list(slots):
    pool.leave(slot)
    check_and_forget(slot)
  assert pool.active_streams == 0 and pool.shard_streams == [0]
  slot = join()  # an empty pool again: the first position, the designed initial state
  assert pool._where[slot] == (0, 0)
  step([slot], 2)
  check_and_forget(slot)


def test_streams_join_the_least_loaded_shard() -> None:
  pool = StreamPool(carfac.CarfacDesignParameters(), capacity=8, block_size=64, hop=64, shards=2)
  slots = [pool.join() for _ in range(3)]
  assert pool.shard_streams == [2, 1]
  pool.leave(slots[0])
  pool.leave(slots[2])  # both from the first shard
  assert pool.shard_streams == [0, 1]
  pool.join()
  assert pool.shard_streams == [1, 1]


@pytest.mark.parametrize(
  "bad, message",
  [
    (np.where(np.arange(32) == 5, np.nan, 0.01).astype(np.float32), "slot 0: block has NaN or Inf samples; rejected"),
    (np.zeros(31, np.float32), r"slot 0: block shape must be \(32, 1\), got \(31,\)"),
    (np.zeros(32, np.int16), "slot 0: block dtype must be float32 or float64, got int16"),
    (np.where(np.arange(32) == 7, 1e39, 0.01), "slot 0: block has NaN or Inf samples; rejected"),
  ],
  ids=["NaN", "wrong size", "int16", "float64 beyond float32"],
)
def test_pool_rejects_bad_blocks_without_touching_state(bad: np.ndarray, message: str) -> None:
  pool = StreamPool(carfac.CarfacDesignParameters(), capacity=2, block_size=32, hop=32)
  slot = pool.join()
  good = np.full(32, 0.01, np.float32)
  before = jax.tree.map(np.array, pool._states)
  with pytest.raises(ValueError, match=message):
    pool.step({slot: bad})
  after = jax.tree.map(np.array, pool._states)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)
  assert len(pool.step({slot: good})[slot].frames) == 1


def test_a_bad_block_among_many_names_its_slot_and_no_stream_advances() -> None:
  """Finiteness is checked per shard batch: the error must still name the first bad slot, in the caller's order."""
  pool = StreamPool(carfac.CarfacDesignParameters(), capacity=6, block_size=32, hop=32, shards=2)
  slots = [pool.join() for _ in range(6)]
  blocks = {slot: np.full(32, 0.01, np.float32) for slot in slots}
  blocks[slots[3]] = np.where(np.arange(32) == 2, np.inf, 0.01).astype(np.float32)
  blocks[slots[5]] = np.where(np.arange(32) == 9, np.nan, 0.01).astype(np.float32)
  before = jax.tree.map(np.array, pool._states)
  with pytest.raises(ValueError, match=f"slot {slots[3]}: block has NaN or Inf"):
    pool.step(blocks)
  with pytest.raises(ValueError, match=f"slot {slots[5]}: block has NaN or Inf"):
    pool.step(dict(reversed(blocks.items())))
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.tree.map(np.array, pool._states))):
    np.testing.assert_array_equal(a, b)


def test_pool_full_and_slot_misuse_are_clear_errors() -> None:
  pool = StreamPool(carfac.CarfacDesignParameters(), capacity=1, block_size=16, hop=16)
  slot = pool.join()
  with pytest.raises(PoolFullError, match="all 1 stream slots are in use"):
    pool.join()
  pool.leave(slot)
  with pytest.raises(ValueError, match="not in use"):
    pool.leave(slot)
  with pytest.raises(ValueError, match="not in use"):
    pool.step({0: np.zeros(16, np.float32)})


def test_pool_streams_with_own_hops_and_unaligned_agc_phases_equal_offline() -> None:
  """A block of 100 samples (not a multiple of the AGC decimation) and staggered
  joins put the streams' AGC phases out of step, so in some samples only some
  streams are due; each stream also asks for its own hop."""
  block, n_blocks = 100, 8
  pool = StreamPool(
    carfac.CarfacDesignParameters(),
    capacity=3,
    block_size=block,
    hop=80,
    min_hop=30,
    dtype=np.float64,
    frame_granule=1,  # any hop; the default (10 here) would refuse 57
  )
  rng = np.random.default_rng(9)
  hops, joins = [80, 30, 57], [0, 1, 3]
  audio = [rng.standard_normal(n_blocks * block) * 0.03 for _ in hops]
  slots, frames = [None] * 3, [[] for _ in hops]
  for t in range(n_blocks + max(joins)):
    for i, start in enumerate(joins):
      if t == start:
        slots[i] = pool.join(hop=hops[i])
    live = [i for i in range(3) if joins[i] <= t < joins[i] + n_blocks]
    k = {i: t - joins[i] for i in live}
    results = pool.step({slots[i]: audio[i][k[i] * block : (k[i] + 1) * block] for i in live})
    for i in live:
      frames[i].append(results[slots[i]].frames)
  for i, hop in enumerate(hops):
    expected = offline_frames(audio[i], hop)
    got = np.concatenate(frames[i])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * np.abs(expected).max(), err_msg=f"hop {hop}")
  with pytest.raises(ValueError, match="must be >= 30"):
    pool.join(hop=29)
  coarse = StreamPool(carfac.CarfacDesignParameters(), capacity=1, block_size=100, hop=80, min_hop=30)
  with pytest.raises(ValueError, match="multiple of 10"):
    coarse.join(hop=57)


def test_an_exported_stream_continues_bit_for_bit_in_another_pool_and_a_foreign_state_is_refused() -> None:
  """A stream's state moves between pools of one design (as a drained server's resume token carries it)."""
  block, hop = 128, 100
  params = carfac.CarfacDesignParameters()
  here = StreamPool(params, capacity=4, block_size=block, hop=hop, shards=2)
  there = StreamPool(params, capacity=2, block_size=block, hop=hop)
  audio = np.random.default_rng(8).standard_normal(8 * block).astype(np.float32) * 0.1
  blocks = [audio[b * block : (b + 1) * block] for b in range(8)]
  whole, other = here.join(), here.join()
  uninterrupted = [here.step({whole: x, other: 0.5 * x})[whole] for x in blocks]
  moving = here.join()
  first_half = [here.step({moving: x})[moving] for x in blocks[:4]]
  moved = there.join(resume=here.export_slot(moving))
  there.join()  # a neighbour in the batch
  second_half = [there.step({moved: x})[moved] for x in blocks[4:]]
  frames = lambda results: np.concatenate([r.frames for r in results])
  np.testing.assert_array_equal(frames(first_half + second_half), frames(uninterrupted))
  assert [r.first_frame for r in second_half] == [r.first_frame for r in uninterrupted[4:]]
  binaural = StreamPool(carfac.CarfacDesignParameters(n_ears=2), capacity=1, block_size=block, hop=hop)
  with pytest.raises(ValueError, match="this pool"):
    binaural.join(resume=here.export_slot(other))
  assert binaural.active_streams == 0


def test_nearest_hop_rounds_to_the_granule_and_stops_at_the_minimum() -> None:
  pool = StreamPool(carfac.CarfacDesignParameters(), capacity=1, block_size=256, hop=220, min_hop=44)
  assert pool.frame_granule == 4  # gcd(256, 220, 44)
  assert [pool.nearest_hop(h) for h in (220, 221, 223, 1, 45)] == [220, 220, 224, 44, 44]
  slot = pool.join(hop=pool.nearest_hop(223))  # a rounded hop is one the pool takes
  assert pool.step({slot: np.zeros(256, np.float32)})[slot].frames.shape[0] == 1


def test_default_shards_are_one_per_usable_core_on_cpu_and_one_on_an_accelerator(
  monkeypatch: pytest.MonkeyPatch,
) -> None:
  monkeypatch.setattr("engine.pool.available_cores", lambda: 4)
  assert [default_shards(capacity) for capacity in (1, 2, 3, 6, 8, 64)] == [1, 2, 3, 3, 4, 4]
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert [default_shards(capacity) for capacity in (1, 6, 64)] == [1, 1, 1]
