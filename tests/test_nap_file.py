"""carfac-nap: a WAV file in, NAP frames out, equal to the offline model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import carfac
from engine.wav import read_wav, write_wav


def test_wav_round_trip_keeps_samples_to_16_bit_precision(tmp_path: Path) -> None:
  x = np.random.default_rng(0).uniform(-0.9, 0.9, (500, 2))
  write_wav(tmp_path / "a.wav", x, 16000)
  y, rate = read_wav(tmp_path / "a.wav")
  assert rate == 16000 and y.shape == (500, 2)
  np.testing.assert_allclose(y, x, atol=1 / 32767)


def test_cli_frames_equal_offline_run_segment_and_peak_at_the_tone(tmp_path: Path) -> None:
  rate, hop = 16000, 160
  t = np.arange(int(0.3 * rate) + 37) / rate  # not a whole number of hops
  tone = 0.1 * np.sin(2 * np.pi * 1000 * t)
  write_wav(tmp_path / "tone.wav", tone, rate)
  result = subprocess.run(
    [sys.executable, "-m", "engine.cli.nap", str(tmp_path / "tone.wav"), str(tmp_path / "nap.npz")],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  saved = np.load(tmp_path / "nap.npz")
  audio, _ = read_wav(tmp_path / "tone.wav")
  hypers, weights, state = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(fs=rate), np.float32)
  naps = np.asarray(carfac.run_segment(audio, hypers, weights, state).naps)
  n_frames = len(audio) // hop  # complete hops only
  expected = np.stack([naps[i * hop : (i + 1) * hop].mean(axis=0) for i in range(n_frames)])
  assert saved["nap"].shape == expected.shape == (n_frames, 65, 1)
  np.testing.assert_allclose(saved["nap"], expected, atol=1e-4 * np.abs(expected).max())
  assert int(saved["hop_samples"]) == hop and float(saved["sample_rate_hz"]) == rate
  freqs = saved["centre_frequencies_hz"]
  loudest = saved["nap"][n_frames // 2 :].mean(axis=0)[:, 0].argmax()
  assert abs(np.log2(freqs[loudest] / 1000)) < 0.25, freqs[loudest]


def test_cli_reports_an_unreadable_file(tmp_path: Path) -> None:
  (tmp_path / "bad.wav").write_bytes(b"not a wav")
  result = subprocess.run(
    [sys.executable, "-m", "engine.cli.nap", str(tmp_path / "bad.wav"), str(tmp_path / "o.npz")],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2 and "cannot read" in result.stderr
