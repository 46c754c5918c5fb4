"""A stream pool with pictures: every stream's SAI and pitchogram, batched, equal to the offline pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from jax_events import churn_compiles_nothing

import carfac
from engine.pool import StreamPool

BLOCK, HOP = 256, 220


def pool_with_pictures(capacity: int, dtype=np.float64, shards: int = 1) -> StreamPool:
  return StreamPool(
    carfac.CarfacDesignParameters(),
    capacity=capacity,
    block_size=BLOCK,
    hop=HOP,
    dtype=dtype,
    shards=shards,
    pitchogram=carfac.PitchogramPipelineParams(),
  )


def offline_pictures(audio: np.ndarray) -> list[carfac.PipelineFrame]:
  """The library's pipeline, with the pool's design, on one stream's audio, block by block."""
  pipeline = carfac.PitchogramPipeline(
    22050, carfac.PitchogramPipelineParams(), carfac_params=carfac.CarfacDesignParameters(), dtype=np.float64
  )
  return [pipeline.process_samples(audio[k * BLOCK : (k + 1) * BLOCK]) for k in range(len(audio) // BLOCK)]


def harmonic_complex(f0: float, blocks: int, level: float) -> np.ndarray:
  t = np.arange(blocks * BLOCK) / 22050
  return level * sum(np.sin(2 * np.pi * k * f0 * t + k) for k in range(1, 16))


def close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * np.abs(expected).max(), err_msg=what)


def test_pictures_of_streams_joining_pausing_and_leaving_equal_the_offline_pipeline() -> None:
  """Three slots, four streams: late joins, pauses (no block in a step: the
  SAI state is untouched), a leave in the middle (the last stream moves into
  its slot), and the freed slot reused by a stream that starts afresh."""
  pool = pool_with_pictures(capacity=3, shards=1)
  plan = {"a": (0, 9, 150.0), "b": (0, 3, 220.0), "c": (1, 6, 110.0), "d": (4, 4, 300.0)}
  audio = {name: harmonic_complex(f0, n, 10 ** (-2 - 0.3 * i)) for i, (name, (_, n, f0)) in enumerate(plan.items())}
  slots, sent = {}, dict.fromkeys(plan, 0)
  results = {name: [] for name in plan}
  for t in range(16):
    for name, (start, _, _) in plan.items():
      if t == start:
        slots[name] = pool.join()
    blocks = {
      slots[name]: audio[name][sent[name] * BLOCK : (sent[name] + 1) * BLOCK]
      for name in slots
      if (t + ord(name)) % 3 != 0
    }
    stepped = pool.step(blocks, sai_frames=[slots["a"]] if "a" in slots else ())
    for name, slot in list(slots.items()):
      if slot in stepped:
        results[name].append(stepped[slot])
        sent[name] += 1
      if sent[name] == plan[name][1]:
        pool.leave(slots.pop(name))
  assert slots == {} and pool.active_streams == 0
  for name in plan:
    expected = offline_pictures(audio[name])
    assert len(results[name]) == len(expected) == plan[name][1]
    for k, (got, want) in enumerate(zip(results[name], expected)):
      close(got.pictures.lag_profile, want.lag_profile, f"{name} block {k} lag profile")
      close(got.pictures.vowel_coords, want.vowel_coords, f"{name} block {k} vowel")
      if name == "a":
        close(got.pictures.sai_frame, want.sai_frame, f"{name} block {k} SAI frame")
      else:
        assert got.pictures.sai_frame is None  # only the slots asked for
    nap = np.concatenate([f.nap for f in expected])
    n = len(nap) // HOP
    close(np.concatenate([r.frames for r in results[name]])[..., 0], nap[: n * HOP].reshape(n, HOP, -1).mean(1), name)


def test_a_pool_with_pictures_compiles_nothing_after_start_up() -> None:
  pool = churn_compiles_nothing(
    lambda: pool_with_pictures(capacity=3, dtype=np.float32),
    steps=30,
    join_every=5,
    leave_every=9,
    step=lambda pool, active, rng: pool.step(
      {s: rng.standard_normal(BLOCK).astype(np.float32) * 0.01 for s in active}, sai_frames=active[:1]
    ),
    check=lambda result: result.pictures.lag_profile.shape == (148,),
  )
  assert pool.buckets == (1, 2, 3)


def test_pictures_need_one_ear_and_the_pool_s_block() -> None:
  with pytest.raises(ValueError, match="the pitchogram is mono: a pool with pitchogram needs 1 ear, got 2"):
    StreamPool(
      carfac.CarfacDesignParameters(n_ears=2),
      capacity=1,
      block_size=BLOCK,
      hop=HOP,
      pitchogram=carfac.PitchogramPipelineParams(),
    )
  with pytest.raises(ValueError, match=r"the pitchogram's segment \(256 samples\) must be the pool's block \(128\)"):
    StreamPool(
      carfac.CarfacDesignParameters(),
      capacity=1,
      block_size=128,
      hop=HOP,
      pitchogram=carfac.PitchogramPipelineParams(),
    )
