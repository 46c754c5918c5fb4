"""The public API: the seed example, input checks, hashing, donation, compiles."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from oracle_data import REPO_ROOT

import carfac

SEED_README = REPO_ROOT.parent / "shared" / "seed" / "carfac-jax-README.md"


def _seed_example() -> str:
  """The first python code block of the seed README, unchanged."""
  text = SEED_README.read_text()
  match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
  assert match, "no python example in the seed README"
  return match.group(1)


@pytest.mark.skipif(
  not SEED_README.is_file(),
  reason=f"seed README not found at {SEED_README} (needs ../shared)",
)
def test_seed_example_runs_verbatim_and_gives_finite_nonzero_gradients(tmp_path: Path) -> None:
  """Runs the example as a user would: fresh process, default float32."""
  script = tmp_path / "seed_example.py"
  script.write_text(
    "import functools\nimport jax\nimport jax.numpy as jnp\nimport numpy as np\n"
    + _seed_example()
    + textwrap.dedent(
      """
          leaves = jax.tree.leaves(grad_jax)
          assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
          total = sum(float(jnp.sum(jnp.abs(g))) for g in leaves)
          health = float(jnp.sum(jnp.abs(grad_jax.ears[0].car.ohc_health)))
          changed = any(bool(jnp.any(a != b)) for a, b in zip(
              jax.tree.leaves(new_weights), jax.tree.leaves(weights_jax)))
          print("OK", total, health, changed, leaves[0].dtype)
          """
    )
  )
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  _, total, health, changed, dtype = result.stdout.split()[-5:]
  assert float(total) > 0 and float(health) > 0
  assert changed == "True" and dtype == "float32"


@pytest.fixture(scope="module")
def default_model():
  return carfac.design_and_init_carfac(carfac.CarfacDesignParameters(), np.float64)


def test_default_design_has_the_reference_channel_counts() -> None:
  """n_ch per sample rate, as measured on the reference (write-up 3.1)."""
  expected = {8000: 53, 16000: 65, 22050: 71, 24000: 72, 32000: 77, 44100: 83, 48000: 84, 96000: 97}
  for fs, n_ch in expected.items():
    hypers, _, _ = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(fs=fs))
    assert hypers.ears[0].n_ch == n_ch, fs


@pytest.mark.parametrize(
  "bad_input, message",
  [
    (np.zeros(100, np.int16), "float"),
    (np.zeros((100, 2)), "designed for 1"),
    (np.zeros((10, 1, 1)), r"shape \(n_samp,\) or \(n_samp, n_ears\)"),
  ],
  ids=["integer", "two-ears-for-mono", "rank-3"],
)
def test_bad_input_gets_a_clear_value_error(default_model, bad_input, message) -> None:
  hypers, weights, state = default_model
  with pytest.raises(ValueError, match=message):
    carfac.run_segment(bad_input, hypers, weights, state)


def test_mono_input_may_be_one_dimensional(default_model) -> None:
  hypers, weights, state = default_model
  x = np.random.default_rng(0).standard_normal(50) * 0.01
  a = carfac.run_segment(x, hypers, weights, state)
  b = carfac.run_segment(x[:, None], hypers, weights, state)
  np.testing.assert_array_equal(a.naps, b.naps)
  assert a.naps.shape == (50, 71, 1)


def test_unknown_ihc_style_is_rejected() -> None:
  params = carfac.CarfacDesignParameters()
  params.ears[0].ihc.ihc_style = "three_cap"
  with pytest.raises(ValueError, match="unknown ihc_style"):
    carfac.design_and_init_carfac(params)


def test_hypers_hash_and_compare_by_value() -> None:
  h1, _, _ = carfac.design_and_init_carfac(carfac.CarfacDesignParameters())
  h2, _, _ = carfac.design_and_init_carfac(carfac.CarfacDesignParameters())
  assert h1 is not h2 and h1 == h2 and hash(h1) == hash(h2)
  for edit in (
    lambda p: setattr(p.ears[0].car, "linear_car", True),
    lambda p: setattr(p.ears[0].ihc, "ihc_style", "one_cap"),
    lambda p: setattr(p.ears[0].agc, "decimation", (8, 2, 2, 4)),
    lambda p: setattr(p.ears[0].car, "max_zeta", 0.3),
  ):
    params = carfac.CarfacDesignParameters()
    edit(params)
    other, _, _ = carfac.design_and_init_carfac(params)
    assert other != h1 and hash(other) != hash(h1)


def test_hypers_arrays_are_read_only(default_model) -> None:
  hypers, _, _ = default_model
  with pytest.raises(ValueError, match="assignment destination is read-only"):
    hypers.ears[0].car.r1_coeffs[0] = 0.0
  with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'n_ch'"):
    hypers.ears[0].car.n_ch = 3


def test_jit_donates_state_and_equal_designs_share_one_compilation() -> None:
  x = np.random.default_rng(1).standard_normal(37) * 0.01  # a length no other test uses
  h1, w1, s1 = carfac.design_and_init_carfac(carfac.CarfacDesignParameters())
  h2, w2, s2 = carfac.design_and_init_carfac(carfac.CarfacDesignParameters())
  before = carfac.run_segment_jit._cache_size()
  out1 = carfac.run_segment_jit(x, h1, w1, s1)
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(s1))
  out2 = carfac.run_segment_jit(x, h2, w2, s2)
  assert carfac.run_segment_jit._cache_size() == before + 1
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(s2))
  np.testing.assert_array_equal(out1.naps, out2.naps)
  # The returned state is live and continues the stream.
  out3 = carfac.run_segment_jit(x, h1, w1, out1.state)
  assert np.all(np.isfinite(out3.naps))


def test_full_output_unpacks_in_the_reference_order() -> None:
  params = carfac.CarfacDesignParameters()
  params.ears[0].ihc.ihc_style = "two_cap_with_syn"
  hypers, weights, state = carfac.design_and_init_carfac(params, np.float64)
  x = np.random.default_rng(2).standard_normal(80) * 0.05
  naps, fibers, new_state, bm, ohc, agc = carfac.run_segment_full(x, hypers, weights, state)
  assert fibers.shape == (80, 71, 3, 1)
  plain = carfac.run_segment(x, hypers, weights, state)
  np.testing.assert_array_equal(naps, plain.naps)
  np.testing.assert_array_equal(bm, plain.bm)
  # The NAP is the class-weighted fibre sum minus the spontaneous level.
  syn_w = weights.ears[0].syn
  expected = np.asarray(fibers[..., 0]) @ np.asarray(syn_w.agc_weights) - float(syn_w.spont_sub)
  np.testing.assert_allclose(naps[..., 0], expected, rtol=1e-10, atol=1e-12)


def test_ihc_style_sets_every_ear_and_names_the_styles_on_error() -> None:
  params = carfac.CarfacDesignParameters(n_ears=2, ihc_style="one_cap")
  assert [ear.ihc.ihc_style for ear in params.ears] == ["one_cap", "one_cap"]
  assert carfac.CarfacDesignParameters().ears[0].ihc.ihc_style == "two_cap"  # the default stays
  assert carfac.IHC_STYLE_NAMES == ("just_hwr", "one_cap", "two_cap", "two_cap_with_syn")
  with pytest.raises(ValueError, match=r"unknown ihc_style 'three_cap'; expected one of \['just_hwr'"):
    carfac.CarfacDesignParameters(ihc_style="three_cap")
