"""JAX transformations: gradients, vmap over streams, chained segments."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import carfac


def design(ihc_style: str, n_ears: int = 1, dtype=np.float64):
  params = carfac.CarfacDesignParameters(n_ears=n_ears)
  for ear in params.ears:
    ear.ihc.ihc_style = ihc_style
  return carfac.design_and_init_carfac(params, dtype)


def noise(n_samp: int, n_ears: int, seed: int, scale: float = 1.0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal((n_samp, n_ears)) * scale


@functools.partial(jax.jit, static_argnames=("hypers",))
def naps_loss(weights, x, hypers, state):
  """The reference float64 test's loss: mean squared distance of the NAP to 1."""
  naps = carfac.run_segment(x, hypers, weights, state).naps
  return jnp.mean((naps - 1.0) ** 2)


@pytest.mark.parametrize(
  "ihc_style, n_ears",
  [("one_cap", 1), ("two_cap", 1), ("two_cap_with_syn", 1), ("two_cap_with_syn", 2)],
)
def test_gradient_of_every_weights_leaf_matches_central_differences(ihc_style, n_ears) -> None:
  """For each leaf, grad . v equals (L(w + eps v) - L(w - eps v)) / 2 eps.

  v is a random direction within the leaf, scaled to the leaf's magnitude.
  Loud N(0, 1) input for 200 samples, so every AGC stage updates. Every IHC
  style with one ear; two ears (the AGC cross-coupling) with the style that
  has every leaf: a compile of the 2-ear gradient costs 13-18 s on a fast
  2-core machine, so the other styles' 2-ear variants, which add no code
  path, are left out.
  """
  hypers, weights, state = design(ihc_style, n_ears)
  x = noise(200, n_ears, seed=7)
  grads = jax.grad(naps_loss)(weights, x, hypers, state)
  leaves, treedef = jax.tree.flatten(weights)
  grad_leaves = jax.tree.leaves(grads)
  rng = np.random.default_rng(3)
  eps = 1e-5
  # Central differences of a float64 loss near 1 carry ~1e-15 / eps of noise.
  atol = 1e-8
  checked = 0
  for i, (leaf, grad) in enumerate(zip(leaves, grad_leaves)):
    scale = max(float(jnp.max(jnp.abs(leaf))), 1e-3)
    direction = rng.standard_normal(leaf.shape) * scale
    shifted = lambda sign, i=i, direction=direction: treedef.unflatten(
      [other + sign * eps * direction if j == i else other for j, other in enumerate(leaves)]
    )
    numeric = (naps_loss(shifted(+1), x, hypers, state) - naps_loss(shifted(-1), x, hypers, state)) / (2 * eps)
    analytic = float(jnp.sum(grad * direction))
    assert np.isfinite(analytic)
    assert abs(analytic - float(numeric)) <= 1e-5 * max(abs(analytic), abs(float(numeric))) + atol, (
      f"leaf {i} ({jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(weights)[0][i][0])}): "
      f"autodiff {analytic:.9g} vs central difference {float(numeric):.9g}"
    )
    checked += abs(analytic) > 100 * atol
  assert checked >= 10, "too few weights influence the loss; the check is vacuous"


def test_vmap_over_three_streams_equals_three_separate_runs() -> None:
  hypers, weights, state = design("two_cap")
  xs = np.stack([noise(300, 1, seed=s, scale=0.1 * (s + 1)) for s in range(3)])
  run = jax.jit(functools.partial(carfac.run_segment, hypers=hypers))
  states = jax.tree.map(lambda leaf: jnp.stack([leaf] * 3), state)
  batched = jax.jit(jax.vmap(lambda x, s: carfac.run_segment(x, hypers, weights, s)))(xs, states)
  for i in range(3):
    single = run(xs[i], weights=weights, state=state)
    # XLA may sum a batched cumulative sum in another order: float64 rounding
    # (~1e-16), amplified by the cascade, is all that may differ.
    for b, s in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
      peak = float(np.max(np.abs(s))) or 1.0
      np.testing.assert_allclose(b[i], s, rtol=0, atol=1e-10 * peak)


@pytest.mark.parametrize(
  "ihc_style, n_ears, dtype",
  [("two_cap", 1, np.float32), ("two_cap_with_syn", 2, np.float64)],
)
def test_any_split_into_segments_equals_one_call_bit_for_bit(ihc_style, n_ears, dtype) -> None:
  """Lengths 1, 5, 13, 64, 200, 317 (not multiples of the decimation 8)."""
  hypers, weights, _ = design(ihc_style, n_ears, dtype)
  x = noise(600, n_ears, seed=11, scale=0.05)
  fresh = lambda: design(ihc_style, n_ears, dtype)[2]
  whole = carfac.run_segment_full_jit(x, hypers, weights, fresh())
  pieces, state, start = [], fresh(), 0
  for length in (1, 5, 13, 64, 200, 317):
    out = carfac.run_segment_full_jit(x[start : start + length], hypers, weights, state)
    pieces.append(out)
    state = out.state
    start += length
  for name in ("naps", "naps_fibers", "bm", "seg_ohc", "seg_agc"):
    joined = np.concatenate([np.asarray(getattr(p, name)) for p in pieces])
    np.testing.assert_array_equal(joined, getattr(whole, name), err_msg=name)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(whole.state)):
    np.testing.assert_array_equal(a, b)
