"""Cochleagram pictures: NAP frames as an image, frequency axis in Hz.

Shared by the live view (a scrolling window) and the CLI's PNG export, so
both draw the same thing: channels on the vertical axis with the highest
centre frequency at the top (channel 0, as CARFAC orders them), time on
the horizontal axis in seconds, brightness the mean NAP of each frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Frequencies labelled on the axis (Hz), where the channels cover them.
TICK_FREQUENCIES = (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def frequency_ticks(centre_frequencies: np.ndarray) -> tuple[list[int], list[str]]:
  """Channel indices nearest the round frequencies the channels span, and labels."""
  cf = np.asarray(centre_frequencies, float)
  indices, labels = [], []
  for hz in TICK_FREQUENCIES:
    if cf.min() <= hz <= cf.max():
      indices.append(int(np.abs(cf - hz).argmin()))
      labels.append(f"{hz // 1000}k" if hz >= 1000 else str(hz))
  return indices, labels


def mono_frames(frames: np.ndarray) -> np.ndarray:
  """(n, n_ch) or (n, n_ch, ears) frames as (n, n_ch), the ears averaged."""
  frames = np.asarray(frames, np.float32)
  return frames.mean(axis=2) if frames.ndim == 3 else frames


def colour_limit(frames: np.ndarray) -> float:
  """The top of the colour scale: the 99.5th percentile, so that an onset spike does not dim the rest."""
  frames = np.asarray(frames)
  return max(float(np.percentile(frames, 99.5)), 1e-3) if frames.size else 1.0


def draw(axes, frames: np.ndarray, centre_frequencies: np.ndarray, hop_s: float, t0: float = 0.0, vmax=None):
  """Draws (n, n_ch[, ears]) frames on ``axes``; returns the AxesImage.

  Row r of the image is channel r (top: highest frequency); the image spans
  [t0, t0 + n * hop_s] seconds; the colour scale runs from 0 to ``vmax``
  (default: ``colour_limit``).
  """
  image = mono_frames(frames).T
  n = image.shape[1]
  artist = axes.imshow(
    image,
    aspect="auto",
    origin="upper",
    interpolation="nearest",
    cmap="magma",
    vmin=0.0,
    vmax=vmax if vmax is not None else colour_limit(image),
    extent=(t0, t0 + n * hop_s, image.shape[0] - 0.5, -0.5),
  )
  ticks, labels = frequency_ticks(centre_frequencies)
  axes.set_yticks(ticks, labels)
  axes.set_ylabel("centre frequency (Hz)")
  axes.set_xlabel("time (s)")
  return artist


def render(frames: np.ndarray, centre_frequencies: np.ndarray, hop_s: float, title: str = ""):
  """A whole recording as a cochleagram Figure with a colour bar (off-screen, Agg)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  figure = Figure(figsize=(10, 4.5), dpi=100, layout="constrained")
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  artist = draw(axes, frames, centre_frequencies, hop_s)
  figure.colorbar(artist, ax=axes, label="mean NAP")
  if title:
    axes.set_title(title)
  return figure


def save_png(
  path: str | Path, frames: np.ndarray, centre_frequencies: np.ndarray, hop_s: float, title: str = ""
) -> Path:
  """Renders a whole recording (``render``) into a PNG file."""
  path = Path(path)
  render(frames, centre_frequencies, hop_s, title).savefig(path)
  return path
