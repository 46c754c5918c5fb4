"""run_segment_batch: many streams in one call, its two AGC loops, and the AGC firing schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import carfac
from carfac import agc
from carfac.batch import run_segment_batch

OUTPUTS = ("naps", "naps_fibers", "bm", "seg_ohc", "seg_agc")


def design(n_ears: int, ihc_style: str = "two_cap_with_syn"):
  params = carfac.CarfacDesignParameters(n_ears=n_ears)
  for ear in params.ears:
    ear.ihc.ihc_style = ihc_style
  return carfac.design_and_init_carfac(params, np.float64)


def stacked(states: list) -> carfac.CarfacState:
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def loud_noise(n_streams: int, n_samp: int, n_ears: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.standard_normal((n_streams, n_samp, n_ears)) * 10 ** rng.uniform(-2, 0, (n_streams, 1, 1))


def test_the_firing_schedule_follows_the_phase_arithmetic() -> None:
  """Independent count: run the phases sample by sample, note which stages wrap."""
  for decimation in [(8, 2, 2, 2), (4, 3, 1, 2), (8,)]:
    params = agc.AgcDesignParameters(
      n_stages=len(decimation),
      time_constants=0.002 * 4 ** np.arange(len(decimation)),
      decimation=decimation,
      agc1_scales=np.ones(len(decimation)),
      agc2_scales=np.ones(len(decimation)),
    )
    hypers = agc.design_and_init_agc(params, 22050.0, 10, np.float64)[0]
    phases, expected = [0] * len(decimation), []
    for _ in range(int(np.prod(decimation))):
      phases[0] = (phases[0] + 1) % decimation[0]
      if phases[0]:
        continue
      firing = 1
      while firing < len(decimation):
        phases[firing] = (phases[firing] + 1) % decimation[firing]
        if phases[firing]:
          break
        firing += 1
      expected.append(firing)
    assert agc.firing_schedule(hypers) == tuple(expected)
    assert all(p == 0 for p in phases)  # one schedule is one whole period


@pytest.mark.parametrize("n_ears", [1, 2])
def test_the_scheduled_loop_equals_the_checked_loop_bit_for_bit_and_both_equal_separate_runs(n_ears: int) -> None:
  """Three streams of loud noise (every AGC stage updates), 2 AGC periods each."""
  hypers, weights, state = design(n_ears)
  period = carfac.agc_period(hypers)
  x = loud_noise(3, 2 * period, n_ears, seed=n_ears)
  batch = lambda phases_at_zero: run_segment_batch(
    x, hypers, weights, stacked([state] * 3), outputs=OUTPUTS, phases_at_zero=phases_at_zero
  )
  checked_seg, checked_states = batch(False)
  for phases_at_zero in (True, None):
    seg, states = batch(phases_at_zero)
    for name in OUTPUTS:
      np.testing.assert_array_equal(seg[name], checked_seg[name], err_msg=f"{name} {phases_at_zero}")
    for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(checked_states)):
      np.testing.assert_array_equal(a, b)
  run = jax.jit(lambda x, s: carfac.run_segment_outputs(x, hypers, weights, s, outputs=OUTPUTS))
  for i in range(3):
    one_seg, one_state = run(x[i], state)
    # Batched, XLA may contract or vectorise differently: float64 rounding only.
    for batched, one in [(checked_seg[name][i], one_seg[name]) for name in OUTPUTS] + [
      (a[i], b) for a, b in zip(jax.tree.leaves(checked_states), jax.tree.leaves(one_state))
    ]:
      peak = float(np.max(np.abs(one))) or 1.0
      np.testing.assert_allclose(batched, one, rtol=0, atol=1e-12 * peak)


@pytest.mark.parametrize("sum_every", [4, 12, 128])
def test_outputs_summed_in_the_loop_equal_sums_of_the_per_sample_outputs(sum_every: int) -> None:
  """Sums over groups smaller than, equal to, larger than and across AGC update groups."""
  hypers, weights, state = design(1, "two_cap")
  x = loud_noise(2, 384, 1, seed=4)
  per_sample, _ = run_segment_batch(x, hypers, weights, stacked([state] * 2), outputs=("naps", "bm"))
  for phases_at_zero in (False, True):
    summed, _ = run_segment_batch(
      x,
      hypers,
      weights,
      stacked([state] * 2),
      outputs=("naps", "bm"),
      sum_every=sum_every,
      phases_at_zero=phases_at_zero,
    )
    for name in ("naps", "bm"):
      expected = per_sample[name].reshape((2, 384 // sum_every, sum_every) + per_sample[name].shape[2:]).sum(axis=2)
      peak = float(jnp.max(jnp.abs(expected)))
      np.testing.assert_allclose(summed[name], expected, rtol=0, atol=1e-13 * peak)


def test_streams_at_other_phases_are_run_by_the_checked_loop() -> None:
  """After 5 and 13 samples the phases are not at 0: the run-time check must see it."""
  hypers, weights, state = design(1, "two_cap")
  warm = [carfac.run_segment_outputs(loud_noise(1, n, 1, seed=n)[0], hypers, weights, state)[1] for n in (5, 13)]
  x = loud_noise(2, carfac.agc_period(hypers), 1, seed=9)
  expected, expected_states = run_segment_batch(x, hypers, weights, stacked(warm), phases_at_zero=False)
  checked, checked_states = jax.jit(lambda x, s: run_segment_batch(x, hypers, weights, s))(x, stacked(warm))
  np.testing.assert_array_equal(checked["naps"], expected["naps"])
  for a, b in zip(jax.tree.leaves(checked_states), jax.tree.leaves(expected_states)):
    np.testing.assert_array_equal(a, b)
  # The promise broken on purpose: the schedule assumes phases at 0, so it must differ.
  wrong, _ = run_segment_batch(x, hypers, weights, stacked(warm), phases_at_zero=True)
  assert not np.array_equal(wrong["naps"], expected["naps"])


def test_a_segment_that_is_not_a_whole_agc_period_still_runs_exactly() -> None:
  hypers, weights, state = design(1, "two_cap")
  x = loud_noise(2, 100, 1, seed=2)
  seg, _ = run_segment_batch(x, hypers, weights, stacked([state] * 2), phases_at_zero=True)
  one = carfac.run_segment_outputs(x[1], hypers, weights, state)[0]
  np.testing.assert_allclose(seg["naps"][1], one["naps"], rtol=0, atol=1e-12 * float(np.max(one["naps"])))


def test_repeat_streams_gives_every_leaf_a_stream_axis_of_copies() -> None:
  hypers, weights, state = design(2, "two_cap")
  repeated = carfac.repeat_streams(state, 5)
  for leaf, expected in zip(jax.tree.leaves(repeated), jax.tree.leaves(stacked([state] * 5))):
    assert leaf.shape == expected.shape and leaf.dtype == expected.dtype
    np.testing.assert_array_equal(leaf, expected)


def _while_loops(run, *args) -> int:
  return jax.jit(run).lower(*args).as_text().count("stablehlo.while")


def test_the_accelerator_branches_match_the_cpu_ones(monkeypatch: pytest.MonkeyPatch) -> None:
  """Off the CPU the ripple is an associative scan and each AGC group's samples are unrolled.

  ``platform_dependent`` picks those branches when lowering for a GPU; forced
  here, on the CPU, they must give the CPU branches' results to float64
  rounding, and the loops they replace must be gone from the program.
  """
  hypers, weights, state = design(2, "two_cap")
  x = loud_noise(2, 2 * carfac.agc_period(hypers), 2, seed=6)
  states = carfac.repeat_streams(state, 2)

  def run(x, states):
    summed, _ = run_segment_batch(x, hypers, weights, states, sum_every=4, phases_at_zero=True)
    per_sample, new_states = run_segment_batch(x, hypers, weights, states, outputs=OUTPUTS, phases_at_zero=True)
    return summed["naps"], per_sample, new_states

  cpu = jax.jit(run)(x, states)
  cpu_loops = _while_loops(run, x, states)
  with monkeypatch.context() as patch:
    patch.setattr(jax.lax, "platform_dependent", lambda *args, default, **per_platform: default(*args))
    accelerator = jax.jit(lambda x, s: run(x, s))(x, states)
    accelerator_loops = _while_loops(lambda x, s: run(x, s), x, states)
  assert accelerator_loops < cpu_loops  # the ripples' scans and the groups' sample loops are gone
  for ours, theirs in zip(jax.tree.leaves(accelerator), jax.tree.leaves(cpu)):
    peak = float(np.max(np.abs(theirs))) or 1.0
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12 * peak)
