"""Gradients for training: the rematerialised time loop and the mean over examples."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import carfac
from carfac.time_loop import checkpointed_scan
from carfac.training import mean_value_and_grad


def design(agc_stages: int = 4):
  """The spec example's design (nonlinear CAR), float64, with the first ``agc_stages`` AGC stages."""
  params = carfac.CarfacDesignParameters()
  params.ears[0].car.linear_car = False
  agc = params.ears[0].agc
  agc.n_stages = agc_stages
  for name in ("time_constants", "agc1_scales", "agc2_scales", "decimation"):
    setattr(agc, name, getattr(agc, name)[:agc_stages])
  return carfac.design_and_init_carfac(params, np.float64)


def noise(n_samp: int, seed: int, scale: float = 1.0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(n_samp) * scale


def naps_loss(weights, x, hypers, state, checkpoint_every=None):
  """The spec's example loss: mean squared distance of the NAP to 1."""
  naps = carfac.run_segment(x, hypers, weights, state, checkpoint_every=checkpoint_every).naps
  return jnp.mean((naps - 1.0) ** 2)


#: One compiled loss-and-gradient for the tests below (compiling one costs ~10 s).
naps_value_and_grad = jax.jit(jax.value_and_grad(naps_loss), static_argnames=("hypers", "checkpoint_every"))


def assert_trees_close(actual, expected, rtol: float) -> None:
  for path_and_a, b in zip(jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)):
    path, a = path_and_a
    peak = float(np.max(np.abs(b))) or 1.0
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * peak, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("length, every", [(10, 3), (10, 5), (4, 9), (7, 1)])
def test_checkpointed_scan_equals_a_plain_scan_with_or_without_a_remainder(length, every) -> None:
  """Whole chunks, a remainder, no whole chunk at all, and chunks of one step."""
  step = lambda carry, x: (carry * 0.5 + x, {"out": carry + 2 * x})
  xs = jnp.arange(length, dtype=jnp.float64)
  expected = jax.lax.scan(step, jnp.float64(1.0), xs)
  actual = checkpointed_scan(step, jnp.float64(1.0), xs, every)
  assert_trees_close(actual, expected, rtol=0)
  grad_of = lambda every: jax.grad(lambda c: jnp.sum(checkpointed_scan(step, c, xs, every)[1]["out"]))
  assert float(grad_of(every)(1.0)) == pytest.approx(float(grad_of(None)(1.0)), rel=1e-15)


def test_checkpoint_every_must_be_positive() -> None:
  with pytest.raises(ValueError, match="checkpoint_every"):
    checkpointed_scan(lambda c, x: (c, x), 0.0, jnp.zeros(4), 0)


def test_a_checkpointed_segment_gives_the_same_naps_and_gradients() -> None:
  """float64, 200 loud samples (every AGC stage updates), chunks of 64 and a remainder of 8.

  The forward values are bit-identical (rematerialisation changes only what
  the backward pass stores); the gradients agree to float64 rounding, since
  XLA may fuse the recomputed chunk differently.
  """
  hypers, weights, state = design()
  x = noise(200, seed=5)
  plain = carfac.run_segment(x, hypers, weights, state)
  chunked = carfac.run_segment(x, hypers, weights, state, checkpoint_every=64)
  for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(plain)):
    np.testing.assert_array_equal(a, b)
  # Called as the mean-over-examples test calls it, so both share one compilation.
  loss, grads = naps_value_and_grad(weights, x, hypers=hypers, state=state)
  loss_chunked, grads_chunked = naps_value_and_grad(weights, x, hypers=hypers, state=state, checkpoint_every=64)
  assert float(loss_chunked) == float(loss)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 0
  assert_trees_close(grads_chunked, grads, rtol=1e-12)


def test_a_checkpointed_batch_gives_the_same_gradients() -> None:
  """``run_segment_batch`` with the branch-free loop, 2 streams, chunks of two AGC periods.

  Two AGC stages (two branches in the loop) keep the compilation short.
  """
  hypers, weights, state = design(agc_stages=2)
  period = carfac.agc_period(hypers)
  xs = np.stack([noise(4 * period, seed=s, scale=0.5) for s in (1, 2)])
  states = carfac.repeat_streams(state, 2)

  def loss(weights, checkpoint_every):
    seg, _ = carfac.run_segment_batch(
      xs, hypers, weights, states, phases_at_zero=True, checkpoint_every=checkpoint_every
    )
    return jnp.mean((seg["naps"] - 1.0) ** 2)

  grads = jax.jit(jax.grad(loss), static_argnums=1)(weights, None)
  grads_chunked = jax.jit(jax.grad(loss), static_argnums=1)(weights, 2 * period)
  assert_trees_close(grads_chunked, grads, rtol=1e-12)


def test_the_mean_over_examples_equals_the_mean_of_each_examples_gradient() -> None:
  """Three examples, summed in their order whatever the number of workers."""
  hypers, weights, state = design()
  examples = [noise(200, seed=1, scale=0.3), noise(200, seed=2), noise(200, seed=3, scale=2.0)]
  value_and_grad = functools.partial(naps_value_and_grad, hypers=hypers, state=state)
  each = [value_and_grad(weights, x) for x in examples]
  expected_loss = (each[0][0] + each[1][0] + each[2][0]) / 3
  expected_grads = jax.tree.map(lambda a, b, c: (a + b + c) / 3, *(g for _, g in each))
  for n_workers in (1, 2):
    loss, grads = mean_value_and_grad(value_and_grad, weights, examples, n_workers=n_workers)
    assert float(loss) == float(expected_loss)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
      np.testing.assert_array_equal(a, b)


def test_no_examples_or_no_workers_is_an_error() -> None:
  with pytest.raises(ValueError, match="at least one example"):
    mean_value_and_grad(lambda w, x: (0.0, w), {}, [])
  with pytest.raises(ValueError, match="n_workers must be >= 1"):
    mean_value_and_grad(lambda w, x: (0.0, w), {}, [1.0], n_workers=0)
