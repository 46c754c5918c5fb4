"""``carfac-live`` off-screen: a 1 kHz tone played into the PulseAudio virtual
microphone is drawn brightest on the row of the channel nearest 1 kHz."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from types import ModuleType

import numpy as np

from audio_harness import CAPTURE_RATE, TONE_HZ, sounddevice, tone_player  # noqa: F401 (fixture)
from client import cochleagram
from client.live import LiveView, main, run


def _brightest_drawn_row(view: LiveView) -> int:
  """The channel whose row of the rendered image (last second) is brightest."""
  canvas = view.figure.canvas
  canvas.draw()
  pixels = np.asarray(canvas.buffer_rgba())[:, :, :3].astype(float)
  box = view.image_axes.get_window_extent()
  height = pixels.shape[0]
  top, bottom = int(height - box.y1) + 1, int(height - box.y0) - 1
  right = int(box.x1) - 1
  left = right - int(box.width / len(view.history) * round(1.0 / view.hop_s))  # the last second
  luminance = pixels[top:bottom, left:right].mean(axis=(1, 2))
  row = int(luminance.argmax())
  return int(row * len(view.centre_frequencies) / (bottom - top))


def test_live_view_shows_the_tone_brightest(sounddevice: ModuleType, tmp_path: Path) -> None:
  snapshot = tmp_path / "live.png"
  args = argparse.Namespace(
      device="pulse", rate=CAPTURE_RATE, model_rate=22050.0, hop_ms=10.0, block=256,
      history=3.0, seconds=2.0, snapshot=snapshot,
  )
  with sounddevice.OutputStream(device="pulse", samplerate=CAPTURE_RATE, channels=1, blocksize=480, callback=tone_player()):
    view = run(args)
  assert view.frames_seen >= 150, view.frames_seen
  nearest = int(np.abs(view.centre_frequencies - TONE_HZ).argmin())
  assert view.brightest_channel() == nearest
  drawn = _brightest_drawn_row(view)
  assert abs(drawn - nearest) <= 1, (drawn, nearest)  # one pixel row of slack at row edges
  assert -30 < view.level_db < 6


def test_cochleagram_png_axis_labels_are_frequencies(tmp_path: Path) -> None:
  cf = np.geomspace(10000, 50, 71)
  frames = np.zeros((100, 71, 1), np.float32)
  frames[:, 40] = 1.0
  path = cochleagram.save_png(tmp_path / "c.png", frames, cf, 0.01, title="test")
  assert path.stat().st_size > 10_000
  ticks, labels = cochleagram.frequency_ticks(cf)
  assert labels == ["50", "100", "200", "500", "1k", "2k", "5k", "10k"]
  assert all(abs(cf[t] - f) / f < 0.05 for t, f in zip(ticks, [50, 100, 200, 500, 1000, 2000, 5000, 10000]))
