"""Trained weights served: the pool, carfac-server --weights and carfac-nap --weights.

A "fitted" file here is the default design with the outer hair cells of
the upper half of the channels (the high frequencies) at 30% health: what a
hearing-loss fit might give. Every path must give the frames an offline
``run_segment`` gives with those weights, and those must differ from the
healthy ones where the loss is.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import jax
import numpy as np
import pytest
from server_harness import TOLERANCE, InProcessServer, max_error, stream

import carfac
from engine.cli.nap import main as nap_main
from engine.pool import StreamPool
from engine.wav import read_wav, write_wav
from server.cli import main as server_main
from server.settings import Settings

RATE, HOP, BLOCK = 22050.0, 220, 256
IMPAIRED_CHANNELS = slice(0, 35)  # channel 0 has the highest CF


def impaired(weights: carfac.CarfacWeights) -> carfac.CarfacWeights:
  health = np.asarray(weights.ears[0].car.ohc_health).copy()
  health[IMPAIRED_CHANNELS] *= 0.3
  return jax.tree_util.tree_map_with_path(
    lambda path, leaf: health.astype(leaf.dtype) if "ohc_health" in jax.tree_util.keystr(path) else leaf, weights
  )


def fitted_file(path: Path, params: carfac.CarfacDesignParameters) -> carfac.CarfacWeights:
  hypers, weights, _ = carfac.design_and_init_carfac(params, np.float32)
  fitted = impaired(weights)
  carfac.save_weights(path, fitted, hypers)
  return fitted


def offline_frames(audio: np.ndarray, weights, dtype=np.float32) -> np.ndarray:
  hypers, _, state = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(fs=RATE), dtype)
  naps = np.asarray(carfac.run_segment(audio, hypers, weights, state).naps)
  n = len(naps) // HOP
  return naps[: n * HOP].astype(np.float64).reshape(n, HOP, *naps.shape[1:]).mean(axis=1)


def tones(seconds: float) -> np.ndarray:
  t = np.arange(round(seconds * RATE)) / RATE
  return (0.05 * (np.sin(2 * np.pi * 500 * t) + np.sin(2 * np.pi * 4000 * t)))[:, None].astype(np.float32)


def test_a_pool_with_trained_weights_equals_the_offline_run_with_them() -> None:
  params = carfac.CarfacDesignParameters(fs=RATE)
  _, designed, _ = carfac.design_and_init_carfac(params, np.float64)
  fitted = impaired(designed)
  audio = tones(0.5).astype(np.float64)
  pool = StreamPool(params, capacity=2, block_size=BLOCK, hop=HOP, dtype=np.float64, weights=fitted)
  slot = pool.join()
  blocks = len(audio) // BLOCK
  got = np.concatenate([pool.step({slot: audio[k * BLOCK : (k + 1) * BLOCK]})[slot].frames for k in range(blocks)])
  expected = offline_frames(audio[: blocks * BLOCK], fitted, np.float64)
  np.testing.assert_allclose(got, expected[: len(got)], rtol=0, atol=1e-10 * np.abs(expected).max())
  healthy = offline_frames(audio[: blocks * BLOCK], designed, np.float64)
  loss = got[20:, IMPAIRED_CHANNELS].mean() / healthy[20 : len(got), IMPAIRED_CHANNELS].mean()
  low = got[20:, 50:].mean() / healthy[20 : len(got), 50:].mean()
  assert loss < 0.8 and 0.9 < low < 1.1, (loss, low)  # the loss shows where it was put


def test_a_pool_refuses_weights_of_another_design() -> None:
  _, other, _ = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(fs=44100.0), np.float32)
  with pytest.raises(ValueError, match=r"weights leaf .*ohc_health: shape \(83,\), the design's \(71,\)"):
    StreamPool(carfac.CarfacDesignParameters(fs=RATE), capacity=1, block_size=BLOCK, hop=HOP, weights=other)


def test_the_server_serves_the_weights_file(tmp_path: Path) -> None:
  path = tmp_path / "fitted.npz"
  fitted = fitted_file(path, carfac.CarfacDesignParameters(fs=RATE))
  settings = Settings(port=0, log_level="warning", ears=[1], capacity=2, shards=1, pitchogram=False, weights=path)
  server = InProcessServer(settings).start()
  try:
    audio = tones(0.5)
    session = asyncio.run(stream(server.ws, audio, RATE, headers={}))
  finally:
    server.stop()
  session.check()
  frames = session.rows("frames")
  expected = offline_frames(audio, fitted)
  assert max_error(frames, expected) <= TOLERANCE
  _, designed, _ = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(fs=RATE), np.float32)
  assert max_error(frames, offline_frames(audio, designed)) > 100 * TOLERANCE  # not the healthy model


def test_carfac_server_refuses_a_weights_file_of_another_design(tmp_path: Path, capsys) -> None:
  path = tmp_path / "mono.npz"
  fitted_file(path, carfac.CarfacDesignParameters(fs=RATE))
  assert server_main(["--weights", str(path), "--ears", "1,2"]) == 2  # the 2-ear pool's design differs
  assert "another design" in capsys.readouterr().err


def _write_wav(path: Path, audio: np.ndarray, rate: int) -> np.ndarray:
  """Writes 16-bit PCM; returns the samples as ``carfac-nap`` reads them back."""
  write_wav(path, audio, rate)
  return read_wav(path)[0]


def test_carfac_nap_uses_the_weights_file(tmp_path: Path) -> None:
  weights_path, wav, out = tmp_path / "fitted.npz", tmp_path / "tones.wav", tmp_path / "nap.npz"
  fitted = fitted_file(weights_path, carfac.CarfacDesignParameters(fs=RATE))
  audio = _write_wav(wav, tones(0.4), int(RATE))
  assert nap_main([str(wav), str(out), "--hop-ms", "10", "--weights", str(weights_path)]) == 0
  saved = np.load(out)["nap"]
  expected = offline_frames(audio, fitted)
  assert max_error(saved, expected[: len(saved)]) <= TOLERANCE and len(saved) == len(expected)
  wav_44k = tmp_path / "tones44k.wav"
  _write_wav(wav_44k, tones(0.1), 44100)
  assert nap_main([str(wav_44k), str(out), "--weights", str(weights_path)]) == 2  # another rate: another design
