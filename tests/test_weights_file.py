"""Trained weights saved and loaded: a round trip, and every mismatch refused."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import carfac
from carfac.weights_file import design_sha256


def design(fs: float = 22050.0, n_ears: int = 1, ihc_style: str = "two_cap", dtype=np.float32):
  params = carfac.CarfacDesignParameters(fs=fs, n_ears=n_ears)
  for ear in params.ears:
    ear.ihc.ihc_style = ihc_style
  return carfac.design_and_init_carfac(params, dtype)


def fitted(weights, seed: int = 0):
  """Weights moved off the design, as training would leave them (every leaf changed)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda leaf: leaf * (1 + 0.01 * rng.standard_normal(leaf.shape)).astype(leaf.dtype), weights)


@pytest.mark.parametrize("n_ears", [1, 2])
def test_saved_weights_load_back_bit_for_bit_and_run_like_the_originals(tmp_path, n_ears) -> None:
  hypers, weights, state = design(n_ears=n_ears)
  trained = fitted(weights)
  path = tmp_path / "trained.npz"
  carfac.save_weights(path, trained, hypers)
  loaded = carfac.load_weights(path, hypers, like=weights)
  assert jax.tree.structure(loaded) == jax.tree.structure(trained)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(trained)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  x = np.random.default_rng(1).standard_normal((128, n_ears)).astype(np.float32) * 0.1
  naps = lambda w: carfac.run_segment_jit(x, hypers, w, design(n_ears=n_ears)[2]).naps  # one compilation
  np.testing.assert_array_equal(naps(loaded), naps(trained))
  assert not np.array_equal(naps(loaded), naps(weights))


def test_the_file_is_a_plain_npz_with_leaf_paths_and_a_readable_record(tmp_path) -> None:
  hypers, weights, _ = design()
  path = tmp_path / "w.npz"
  carfac.save_weights(path, weights, hypers)
  with np.load(path, allow_pickle=False) as data:
    meta = json.loads(str(data["__meta__"]))
    assert "ears[0].car.ohc_health" in data.files
    np.testing.assert_array_equal(data["ears[0].car.ohc_health"], weights.ears[0].car.ohc_health)
  assert meta["format"] == "carfac-weights" and meta["version"] == 1
  assert (meta["fs"], meta["n_ears"], meta["n_ch"]) == (22050.0, 1, 71)
  assert meta["design_sha256"] == design_sha256(hypers)
  assert len(meta["leaves"]) == len(jax.tree.leaves(weights))


def test_float64_weights_load_into_a_float32_design(tmp_path) -> None:
  hypers64, weights64, _ = design(dtype=np.float64)
  hypers32, weights32, _ = design(dtype=np.float32)
  path = tmp_path / "w64.npz"
  carfac.save_weights(path, weights64, hypers64)
  loaded = carfac.load_weights(path, hypers32, like=weights32)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(weights64)):
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, np.asarray(b).astype(np.float32))


@pytest.mark.parametrize(
  "other",
  [dict(fs=16000.0), dict(ihc_style="one_cap"), dict(n_ears=2)],
  ids=["another sample rate", "another IHC", "another ear count"],
)
def test_weights_of_another_design_are_refused(tmp_path, other) -> None:
  hypers, weights, _ = design()
  path = tmp_path / "w.npz"
  carfac.save_weights(path, weights, hypers)
  other_hypers, other_weights, _ = design(**other)
  with pytest.raises(carfac.WeightsFileError, match="another design"):
    carfac.load_weights(path, other_hypers, like=other_weights)


def test_a_design_differing_in_one_coefficient_is_another_design() -> None:
  """``zero_ratio`` moved by 1e-6 changes only the designed zeros' coefficients (Hypers)."""
  params = carfac.CarfacDesignParameters()
  hypers = carfac.design_and_init_carfac(params)[0]
  params.ears[0].car.zero_ratio *= 1 + 1e-6
  assert design_sha256(carfac.design_and_init_carfac(params)[0]) != design_sha256(hypers)


def test_files_that_are_not_weights_are_refused_clearly(tmp_path) -> None:
  hypers, weights, _ = design()
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not a zip at all")
  with pytest.raises(carfac.WeightsFileError, match="not a readable npz"):
    carfac.load_weights(garbage, hypers, like=weights)
  plain = tmp_path / "plain.npz"
  np.savez(plain, x=np.zeros(3))
  with pytest.raises(carfac.WeightsFileError, match="not written by carfac.save_weights"):
    carfac.load_weights(plain, hypers, like=weights)
  renamed = tmp_path / "renamed.npz"
  carfac.save_weights(renamed, weights, hypers)
  with np.load(renamed) as data:
    arrays = dict(data)
  arrays["ears[0].car.extra"] = arrays.pop("ears[0].car.ohc_health")
  np.savez(renamed, **arrays)
  with pytest.raises(carfac.WeightsFileError, match="leaves differ"):
    carfac.load_weights(renamed, hypers, like=weights)
