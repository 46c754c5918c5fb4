"""``carfac-live`` off-screen: a 1 kHz tone played into the PulseAudio virtual
microphone is drawn brightest on the row of the channel nearest 1 kHz, with
the engine run locally and with the frames from a server (``--url``); with
``--pitchogram``, a 220 Hz harmonic complex peaks on the 1/220 s cell."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from audio_harness import CAPTURE_RATE, TONE_HZ, playing_harmonic_complex, playing_tone
from pixels import brightest_channel
from server_harness import TOKEN

from client import cochleagram
from client.live import LiveView, parse_args, run

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _brightest_drawn_channel(view: LiveView) -> int:
  """The channel whose row of the rendered image is brightest over the last second."""
  view.figure.canvas.draw()
  pixels = np.asarray(view.figure.canvas.buffer_rgba())
  last_second = 1.0 / (len(view.history) * view.hop_s)
  return brightest_channel(pixels, view.image_axes.get_window_extent(), len(view.centre_frequencies), last_second)


@pytest.mark.parametrize("where", ["local", "server"])
def test_live_view_shows_the_tone_brightest(
  sounddevice: ModuleType, request: pytest.FixtureRequest, where: str
) -> None:
  ARTIFACTS.mkdir(exist_ok=True)
  snapshot = ARTIFACTS / f"live-{where}.png"
  argv = ["--device", "pulse", "--rate", str(CAPTURE_RATE), "--history", "3", "--seconds", "2"]
  argv += ["--snapshot", str(snapshot)]
  if where == "server":
    argv += ["--url", request.getfixturevalue("main_server").ws, "--token", TOKEN]
  with playing_tone(sounddevice):
    view = run(parse_args(argv))
  view.figure.savefig(snapshot)
  assert view.frames_seen >= 150, view.frames_seen
  nearest = int(np.abs(view.centre_frequencies - TONE_HZ).argmin())
  assert view.brightest_channel() == nearest
  drawn = _brightest_drawn_channel(view)
  print(f"{where}: {view.frames_seen} frames; brightest {view.brightest_channel()}, drawn {drawn}, nearest {nearest}")
  assert abs(drawn - nearest) <= 1, (drawn, nearest)  # one pixel row of slack at row edges
  assert -30 < view.level_db < 6


@pytest.mark.parametrize("where", ["local", "server"])
def test_live_pitchogram_shows_the_period_of_a_harmonic_complex(
  sounddevice: ModuleType, request: pytest.FixtureRequest, where: str
) -> None:
  """220 Hz, harmonics 1..20, played into the virtual microphone: the strongest
  pitchogram cell over the last second is the one of 1/220 s (within one cell)."""
  ARTIFACTS.mkdir(exist_ok=True)
  snapshot = ARTIFACTS / f"live-pitchogram-{where}.png"
  argv = ["--device", "pulse", "--rate", str(CAPTURE_RATE), "--history", "3", "--seconds", "2", "--pitchogram"]
  argv += ["--snapshot", str(snapshot)]
  if where == "server":
    argv += ["--url", request.getfixturevalue("main_server").ws, "--token", TOKEN]
  with playing_harmonic_complex(sounddevice, 220.0):
    view = run(parse_args(argv))
  view.figure.savefig(snapshot)
  cell = lambda lag_s: int(np.abs(view.lags_s - lag_s).argmin())
  print(f"{where}: brightest lag {1000 * view.brightest_lag_s():.2f} ms; 1/220 s = {1000 / 220:.2f} ms")
  assert abs(cell(view.brightest_lag_s()) - cell(1 / 220)) <= 1
  assert view.pitch_history[:, :-2].max() > 0.5


def test_cochleagram_png_axis_labels_are_frequencies(tmp_path: Path) -> None:
  cf = np.geomspace(10000, 50, 71)
  frames = np.zeros((100, 71, 1), np.float32)
  frames[:, 40] = 1.0
  path = cochleagram.save_png(tmp_path / "c.png", frames, cf, 0.01, title="test")
  assert path.stat().st_size > 10_000
  ticks, labels = cochleagram.frequency_ticks(cf)
  assert labels == ["50", "100", "200", "500", "1k", "2k", "5k", "10k"]
  assert all(abs(cf[t] - f) / f < 0.05 for t, f in zip(ticks, [50, 100, 200, 500, 1000, 2000, 5000, 10000]))
