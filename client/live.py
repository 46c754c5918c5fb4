"""``carfac-live``: a live cochleagram of the microphone, on the desktop.

The frames come from the engine run locally (no server needed: microphone
-> ring buffer -> engine thread -> frames) or, with ``--url``, from a CARFAC
server (the microphone streamed over protocol v1, frames drawn as they
arrive); either way they pass through a queue to this window, which scrolls
the last few seconds of NAP frames (frequency axis in Hz) beside a level
meter (the loudest channel of the newest frame, in dB). ``--pitchogram``
adds the vowel-coloured pitchogram below (lag in ms), from the local engine
or the server.

    carfac-live                          # default input device, local engine
    carfac-live --device pulse --rate 48000
    carfac-live --url ws://HOST:8000/v1/stream --token SECRET
    carfac-live --seconds 3 --snapshot live.png   # off-screen, then save
    carfac-live --pitchogram

``--snapshot`` renders without a display (matplotlib's Agg backend), so the
same path runs in tests and on headless machines.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np

from client import cochleagram, pitchogram_picture
from client.feeds import LocalFeed, RemoteFeed
from engine.microphone import MicrophoneSource, device_argument

LEVEL_RANGE_DB = (-60.0, 6.0)


class LiveView:
  """The last ``history_s`` seconds of frames, drawn as a scrolling image.

  With ``lags_s`` (the pitchogram's cells) and ``block_s``, the pitchogram
  rows of the same seconds are drawn below.
  """

  def __init__(
    self,
    centre_frequencies: np.ndarray,
    hop_s: float,
    history_s: float = 5.0,
    figure=None,
    lags_s: np.ndarray | None = None,
    block_s: float | None = None,
  ):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    self.centre_frequencies = np.asarray(centre_frequencies)
    self.hop_s = hop_s
    self.history = np.zeros((max(1, round(history_s / hop_s)), len(self.centre_frequencies)), np.float32)
    self.frames_seen = 0
    self.lags_s, self.block_s = lags_s, block_s
    pictures = lags_s is not None
    if figure is None:  # off-screen: an Agg canvas to render into
      figure = Figure(figsize=(10, 8.5 if pictures else 4.5), dpi=100)
      FigureCanvasAgg(figure)
    self.figure = figure
    grid = self.figure.add_gridspec(2 if pictures else 1, 2, width_ratios=(30, 1), wspace=0.05, hspace=0.3)
    self.image_axes = self.figure.add_subplot(grid[0, 0])
    self.meter_axes = self.figure.add_subplot(grid[0, 1])
    self.image = cochleagram.draw(
      self.image_axes, self.history, self.centre_frequencies, hop_s, t0=-len(self.history) * hop_s, vmax=1.0
    )
    self.image_axes.set_title("CARFAC live cochleagram")
    self.meter = self.meter_axes.bar([0], [0.0], bottom=LEVEL_RANGE_DB[0], color="tab:green")[0]
    self.meter_axes.set_ylim(*LEVEL_RANGE_DB)
    self.meter_axes.set_xticks([])
    self.meter_axes.yaxis.tick_right()
    self.meter_axes.set_title("dB", fontsize="small")
    self.pitch_history = None
    if pictures:
      self.pitch_history = np.zeros((max(1, round(history_s / block_s)), len(lags_s) + 2), np.float32)
      self.pitch_axes = self.figure.add_subplot(grid[1, 0])
      self.pitch_image = pitchogram_picture.draw(
        self.pitch_axes, self.pitch_history, lags_s, block_s, t0=-len(self.pitch_history) * block_s
      )
      self.pitch_axes.set_title("pitchogram")

  def push_pitchogram(self, rows: np.ndarray) -> None:
    """Appends (n, lags + 2) pitchogram rows, dropping the oldest."""
    rows = np.asarray(rows, np.float32)[-len(self.pitch_history) :]
    self.pitch_history = np.concatenate([self.pitch_history[len(rows) :], rows])

  def brightest_lag_s(self, last_s: float = 1.0) -> float:
    """The lag of the pitchogram cell with the highest mean value over the last ``last_s`` seconds."""
    recent = self.pitch_history[-max(1, round(last_s / self.block_s)) :, :-2]
    return float(self.lags_s[int(recent.mean(axis=0).argmax())])

  def push(self, frames: np.ndarray) -> None:
    """Appends (n, n_ch[, ears]) frames, dropping the oldest."""
    rows = cochleagram.mono_frames(frames)[-len(self.history) :]
    if len(rows):
      self.history = np.concatenate([self.history[len(rows) :], rows])
      self.frames_seen += len(rows)

  @property
  def level_db(self) -> float:
    """The loudest channel of the newest frame, in dB (NAP 1.0 = 0 dB)."""
    return float(20 * np.log10(max(float(self.history[-1].max()), 1e-6)))

  def refresh(self) -> None:
    """Moves the newest frames and the level onto the artists."""
    self.image.set_data(self.history.T)
    self.image.set_clim(0.0, cochleagram.colour_limit(self.history))
    low, high = LEVEL_RANGE_DB
    self.meter.set_height(min(max(self.level_db, low), high) - low)
    if self.pitch_history is not None:
      self.pitch_image.set_data(pitchogram_picture.image(self.pitch_history))

  def brightest_channel(self, last_s: float = 1.0) -> int:
    """The channel with the highest mean NAP over the last ``last_s`` seconds."""
    recent = self.history[-max(1, round(last_s / self.hop_s)) :]
    return int(recent.mean(axis=0).argmax())


def _drain(rows: queue.Queue, view: LiveView) -> None:
  """Hands the queued (kind, rows) to the view."""
  while True:
    try:
      kind, values = rows.get_nowait()
    except queue.Empty:
      return
    if kind == "frames":
      view.push(values)
    else:
      view.push_pitchogram(values)


def run(args: argparse.Namespace) -> LiveView:
  """Runs the microphone through the feed (local engine, or ``args.url``) into a LiveView.

  Off-screen (``args.snapshot``) for ``args.seconds``; otherwise in a
  desktop window until it is closed (or ``args.seconds`` pass).
  """
  if args.url:
    feed = RemoteFeed(args.url, args.token, args.hop_ms, args.pitchogram)
  else:
    feed = LocalFeed(args.model_rate, args.hop_ms, args.block, args.pitchogram)
  rows: queue.Queue[tuple[str, np.ndarray]] = queue.Queue()
  with (
    MicrophoneSource(args.device, args.rate, channels=1) as mic,
    feed.streaming(
      mic, lambda frames: rows.put(("frames", frames)), lambda pitchogram: rows.put(("pitchogram", pitchogram))
    ),
  ):
    window = None
    if not args.snapshot:
      import matplotlib.pyplot as plt

      window = plt.figure(figsize=(10, 8.5 if args.pitchogram else 4.5))
    view = LiveView(feed.centre_frequencies, feed.hop_s, args.history, window, feed.lags_s, feed.block_s)
    if window is None:
      time.sleep(args.seconds)
    else:
      _show(view, rows, args.seconds)
  _drain(rows, view)
  view.refresh()
  if mic.overflowed:
    print(f"warning: {mic.overflowed} samples dropped (input buffer full)", file=sys.stderr)
  return view


def _show(view: LiveView, rows: queue.Queue, seconds: float | None) -> None:
  """The desktop window: redraws 30 times a second until closed (or timed out)."""
  import matplotlib.pyplot as plt
  from matplotlib.animation import FuncAnimation

  def update(_):
    _drain(rows, view)
    view.refresh()
    return view.image, view.meter

  animation = FuncAnimation(view.figure, update, interval=33, cache_frame_data=False)
  if seconds:
    timer = view.figure.canvas.new_timer(interval=int(seconds * 1000))
    timer.add_callback(plt.close, view.figure)
    timer.start()
  plt.show()
  del animation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="carfac-live", description=__doc__.split("\n\n")[0])
  parser.add_argument("--device", type=device_argument, help="input device name or index (default: the system's)")
  parser.add_argument("--rate", type=float, default=None, help="capture rate, Hz (default: the device's)")
  parser.add_argument("--url", help="a CARFAC server's endpoint, ws://HOST:PORT/v1/stream (default: run locally)")
  parser.add_argument(
    "--token", default=os.environ.get("CARFAC_TOKEN"), help="the server's bearer token (default: $CARFAC_TOKEN)"
  )
  parser.add_argument("--model-rate", type=float, default=22050.0, help="the model's sample rate, Hz (local engine)")
  parser.add_argument("--hop-ms", type=float, default=10.0, help="frame hop, ms")
  parser.add_argument("--block", type=int, default=256, help="model samples per engine step (local engine)")
  parser.add_argument("--history", type=float, default=5.0, help="seconds shown")
  parser.add_argument(
    "--pitchogram", action="store_true", help="draw the pitchogram too (with --url: a server with --pitchogram)"
  )
  parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: when closed)")
  parser.add_argument("--snapshot", type=Path, help="run off-screen for --seconds (default 3), then save a PNG")
  args = parser.parse_args(argv)
  if args.snapshot and args.seconds is None:
    args.seconds = 3.0
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  view = run(args)
  if args.snapshot:
    view.figure.savefig(args.snapshot)
    channel = view.brightest_channel()
    pitch = "" if view.pitch_history is None else f"; brightest lag {1000 * view.brightest_lag_s():.2f} ms"
    print(f"saved {args.snapshot}; brightest channel {channel} ({view.centre_frequencies[channel]:.0f} Hz){pitch}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
