"""The model on an accelerator (GPU) against the same model on the CPU, in one process.

Off the CPU the channel ripple is an associative scan and each AGC group's
samples are unrolled (``lax.platform_dependent``; README, "On a GPU"), so
the accelerator runs other programs than the CPU: in float64 they must agree
to rounding. Skipped, saying so, where JAX sees no accelerator (CI); run on
a GPU machine with ``bash bench/device_check.sh`` (``--noconftest``: this
module needs only JAX, numpy and pytest).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import carfac

jax.config.update("jax_enable_x64", True)  # also when run alone, with --noconftest

ACCELERATORS = [d for d in jax.devices() if d.platform != "cpu"]
pytestmark = pytest.mark.skipif(not ACCELERATORS, reason="JAX sees no accelerator here (only the CPU)")
ON = {"cpu": lambda: jax.devices("cpu")[0], "accelerator": lambda: ACCELERATORS[0]}


def _noise(n_streams: int, n_samp: int) -> np.ndarray:
  return np.random.default_rng(3).standard_normal((n_streams, n_samp)) * 0.05


def _relative(ours: np.ndarray, reference: np.ndarray) -> float:
  return float(np.abs(ours - reference).max() / np.abs(reference).max())


def test_batched_streams_match_the_cpu_in_float64() -> None:
  hypers, weights, state = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(), np.float64)
  x, states = _noise(3, 2048), carfac.repeat_streams(state, 3)
  run = jax.jit(lambda x, w, s: carfac.run_segment_batch(x, hypers, w, s, phases_at_zero=True)[0]["naps"])
  naps = {where: np.asarray(run(*jax.device_put((x, weights, states), on()))) for where, on in ON.items()}
  assert _relative(naps["accelerator"], naps["cpu"]) < 1e-12


def test_one_stream_matches_the_cpu_in_float64() -> None:
  params = carfac.CarfacDesignParameters()
  x = _noise(1, 2048)[0]
  naps = {}
  for where, on in ON.items():
    hypers, weights, state = carfac.design_and_init_carfac(params, np.float64)  # afresh: the call donates the state
    naps[where] = np.asarray(
      carfac.run_segment_jit(*jax.device_put((x,), on()), hypers, *jax.device_put((weights, state), on())).naps
    )
  assert _relative(naps["accelerator"], naps["cpu"]) < 1e-12
