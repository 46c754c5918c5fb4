"""``carfac-client stream`` against a real server: files (fast and real time), the microphone, a refusal.

The frames written to ``.npz`` equal the offline model's (the harness's
``reference``), and the PNG, read back pixel by pixel, is brightest on the
band of rows of the channel nearest the tone.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import matplotlib.image
import numpy as np
import pytest
import soundfile
from audio_harness import CAPTURE_RATE, TONE_HZ, playing_tone
from pixels import brightest_channel
from server_harness import TIMEOUT_S, TOKEN, TOLERANCE, as_received, max_error, reference, reference_pictures

import carfac
from client import cochleagram, pitchogram_picture
from client.cli import main
from client.progress import Progress

CLIENT = Path(sys.executable).with_name("carfac-client")


def _tone(path: Path, hz: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
  """Writes a 16-bit WAV of a 0.3-amplitude sine; returns its samples as read back (n, channels)."""
  t = np.arange(round(seconds * rate)) / rate
  soundfile.write(path, np.repeat(0.3 * np.sin(2 * np.pi * hz * t)[:, None], channels, axis=1), rate, subtype="PCM_16")
  return soundfile.read(path, dtype="float32", always_2d=True)[0]


def _nearest_channel(centre_frequencies: np.ndarray, hz: float) -> int:
  return int(np.abs(np.asarray(centre_frequencies) - hz).argmin())


def test_a_file_gives_the_offline_frames_and_a_cochleagram_png(main_server, tmp_path: Path) -> None:
  rate, wav, npz, png = 48000, tmp_path / "tone.wav", tmp_path / "nap.npz", tmp_path / "nap.png"
  audio = _tone(wav, TONE_HZ, 1.0, rate)
  command = [CLIENT, "stream", wav, "--url", main_server.ws, "--token", TOKEN, "--out", npz, "--png", png]
  done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert done.returncode == 0, done.stderr
  assert "100 frames x 71 channels x 1 ear(s)" in done.stdout

  saved = np.load(npz)
  hop = int(saved["hop_samples"])
  assert hop == main_server.settings.model_samples(main_server.settings.hop_ms)
  assert float(saved["sample_rate_hz"]) == main_server.settings.model_rate
  assert str(saved["source"]) == str(wav) and int(saved["dropped_rows"]) == 0
  expected = reference(audio, rate, main_server.settings, hop)["frames"]
  error = max_error(saved["nap"], expected)
  assert error <= TOLERANCE, error
  print(f"npz vs offline: {error:.2e} of the peak")

  # The PNG, read back: the same figure rendered here tells where its image axes are.
  hop_s = hop / float(saved["sample_rate_hz"])
  figure = cochleagram.render(saved["nap"], saved["centre_frequencies_hz"], hop_s, wav.name)
  figure.canvas.draw()
  pixels = np.round(matplotlib.image.imread(png) * 255).astype(np.uint8)
  assert np.array_equal(pixels, np.asarray(figure.canvas.buffer_rgba())), "the PNG is not the cochleagram figure"
  channels = len(saved["centre_frequencies_hz"])
  drawn = brightest_channel(pixels, figure.axes[0].get_window_extent(), channels)
  nearest = _nearest_channel(saved["centre_frequencies_hz"], TONE_HZ)
  assert abs(drawn - nearest) <= 1, (drawn, nearest)  # one pixel row of slack at row edges
  print(f"PNG: brightest rows show channel {drawn}; nearest {TONE_HZ:g} Hz: channel {nearest}")


def test_real_time_binaural_s16le_with_a_custom_hop(main_server, tmp_path: Path) -> None:
  rate, wav, npz = 16000, tmp_path / "stereo.wav", tmp_path / "nap.npz"
  audio = _tone(wav, 500.0, 0.5, rate, channels=2)
  argv = ["stream", str(wav), "--url", main_server.ws, "--token", TOKEN, "--out", str(npz)]
  start = time.monotonic()
  assert main(argv + ["--realtime", "--format", "s16le", "--hop-ms", "5"]) == 0
  assert time.monotonic() - start >= 0.45  # paced: 0.5 s of audio
  saved = np.load(npz)
  hop = int(saved["hop_samples"])
  assert hop == main_server.settings.model_samples(5.0) and saved["nap"].shape[1:] == (71, 2)
  expected = reference(as_received(audio, "s16le"), rate, main_server.settings, hop)["frames"]
  assert max_error(saved["nap"], expected) <= TOLERANCE


def test_a_refused_stream_exits_1_saying_why(main_server, tmp_path: Path, capsys) -> None:
  wav = tmp_path / "tone.wav"
  _tone(wav, TONE_HZ, 0.1, 22050)
  assert main(["stream", str(wav), "--url", main_server.ws, "--token", "wrong", "--out", str(tmp_path / "x.npz")]) == 1
  assert "unauthorized" in capsys.readouterr().err
  assert not (tmp_path / "x.npz").exists()


def test_the_microphone_streams_until_the_time_limit(sounddevice: ModuleType, main_server, tmp_path: Path) -> None:
  npz = tmp_path / "mic.npz"
  argv = ["stream", "--mic", "--device", "pulse", "--rate", str(CAPTURE_RATE), "--seconds", "1.5"]
  with playing_tone(sounddevice):
    assert main(argv + ["--url", main_server.ws, "--token", TOKEN, "--out", str(npz)]) == 0
  saved = np.load(npz)
  assert str(saved["source"]) == "microphone" and len(saved["nap"]) >= 120, saved["nap"].shape
  loudest = int(saved["nap"][-100:, :, 0].mean(axis=0).argmax())
  assert loudest == _nearest_channel(saved["centre_frequencies_hz"], TONE_HZ)


def test_the_progress_bar_counts_seconds_sent_and_frames_received() -> None:
  out = io.StringIO()
  progress = Progress(total_s=2.0, out=out, width=10)

  async def two_chunks() -> AsyncIterator[np.ndarray]:
    for _ in range(2):
      yield np.zeros((4000, 1), np.float32)

  async def send() -> int:
    return len([chunk async for chunk in progress.track(two_chunks(), sample_rate=8000.0)])

  assert asyncio.run(send()) == 2
  progress.on_frames({}, np.zeros((7, 71, 1)))
  progress.close()
  assert out.getvalue().endswith("\r[#####.....]  50%  1.0/2.0 s sent, 7 frames\n")


def test_outputs_pitchogram_gives_the_offline_pitchogram_and_its_png(main_server, tmp_path: Path) -> None:
  """A 220 Hz harmonic complex at the model's rate: the .npz pitchogram equals the library's
  offline pipeline, and the PNG is brightest on the lag cell of 1/220 s."""
  rate, wav, npz, png = 22050, tmp_path / "voice.wav", tmp_path / "pitch.npz", tmp_path / "pitch.png"
  t = np.arange(rate) / rate
  soundfile.write(wav, 0.01 * sum(np.sin(2 * np.pi * k * 220 * t) for k in range(1, 21)), rate, subtype="FLOAT")
  audio = soundfile.read(wav, dtype="float32", always_2d=True)[0]
  argv = ["stream", str(wav), "--url", main_server.ws, "--token", TOKEN, "--outputs", "pitchogram"]
  assert main(argv + ["--out", str(npz), "--png", str(png)]) == 0

  saved = np.load(npz)
  expected = reference_pictures(audio, main_server.settings)
  assert saved["pitchogram"].shape == (len(expected), 148) and saved["nap"].shape[0] == 0
  assert max_error(saved["pitchogram"], np.stack([f.lag_profile for f in expected])) <= 3e-4
  assert max_error(saved["vowel_coords"], np.stack([f.vowel_coords for f in expected])) <= 3e-4

  block_s = int(saved["block_samples"]) / float(saved["sample_rate_hz"])
  rows = np.concatenate([saved["pitchogram"], saved["vowel_coords"]], axis=1)
  figure = pitchogram_picture.render(rows, saved["pitchogram_lags_s"], block_s, wav.name)
  figure.canvas.draw()
  pixels = np.round(matplotlib.image.imread(png) * 255).astype(np.uint8)
  assert np.array_equal(pixels, np.asarray(figure.canvas.buffer_rgba())), "the PNG is not the pitchogram figure"
  drawn = brightest_channel(pixels, figure.axes[0].get_window_extent(), 148, last=0.5)
  period = int(np.abs(saved["pitchogram_lags_s"] - 1 / 220).argmin())
  assert abs(drawn - period) <= 1, (drawn, period)


def test_a_hearing_profile_and_level_give_the_offline_frames_of_that_listener(main_server, tmp_path: Path) -> None:
  rate, wav, npz = 22050, tmp_path / "tone.wav", tmp_path / "impaired.npz"
  audio = _tone(wav, 3000.0, 0.5, rate)
  args = ["stream", str(wav), "--url", main_server.ws, "--token", TOKEN, "--out", str(npz)]
  assert main(args + ["--audiogram", "500:0,2000:30,4000:40", "--level-db-spl", "60"]) == 0
  saved = np.load(npz)
  health, gain = saved["ohc_health"], float(saved["input_gain"])
  assert health.shape == (1, 71) and gain == carfac.input_gain_for_level(60.0)
  poles = np.asarray(saved["centre_frequencies_hz"])
  mapped = carfac.ohc_health_from_audiogram([500, 2000, 4000], [0, 30, 40], poles)
  np.testing.assert_allclose(health[0], mapped, atol=1e-6)
  expected = reference(audio, rate, main_server.settings, int(saved["hop_samples"]), health, gain)["frames"]
  assert max_error(saved["nap"], expected) <= TOLERANCE


def test_a_malformed_audiogram_argument_is_a_usage_error(capsys) -> None:
  with pytest.raises(SystemExit, match="^2$") as exited:  # argparse's usage-error exit status
    main(["stream", "x.wav", "--out", "x.npz", "--audiogram", "500-10"])
  assert exited.value.code == 2 and "FREQUENCY_HZ:LOSS_DB pairs" in capsys.readouterr().err


def test_the_streaming_client_imports_neither_jax_nor_the_model() -> None:
  """A client that only streams to a server starts without loading JAX (engine/__init__.py's promise)."""
  probe = "import sys, client.cli; print(sorted(m for m in ('jax', 'carfac', 'engine.pool') if m in sys.modules))"
  done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=TIMEOUT_S)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == "[]"
