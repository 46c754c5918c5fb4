"""Pitchogram pictures: the server's pitchogram rows as the reference's vowel-coloured image.

Shared by the CLI's PNG export and the live view. Each pitchogram row (one
block: the lag profile, then the F2 and F1 vowel coordinates) becomes one
column, coloured by ``carfac.column_rgb`` exactly as the reference's
pipeline draws it: lag cell 0 (the shortest lag) at the top, time running
left to right, bright where the signal repeats at that lag (its pitch period).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Lags labelled on the axis (ms), where the cells cover them.
TICK_LAGS_MS = (1, 2, 3, 5, 10, 20, 30, 50)


def image(rows: np.ndarray, light_theme: bool = False) -> np.ndarray:
  """Pitchogram rows (n, lags + 2[, 1]) as a uint8 RGB image (lags, n, 3)."""
  import carfac  # the colouring is the library's: one definition of the reference's tint

  rows = np.asarray(rows, np.float32).reshape(len(rows), -1)
  columns = [carfac.column_rgb(row[:-2], row[-2:], light_theme) for row in rows]
  lags = rows.shape[1] - 2
  return np.stack(columns, axis=1) if columns else np.zeros((lags, 0, 3), np.uint8)


def lag_ticks(lags_s: np.ndarray) -> tuple[list[int], list[str]]:
  """Cell indices nearest the round lags the cells span, and their labels (ms)."""
  lags_ms = 1000 * np.asarray(lags_s, float)
  ticks = [(int(np.abs(lags_ms - ms).argmin()), str(ms)) for ms in TICK_LAGS_MS if lags_ms.min() <= ms <= lags_ms.max()]
  return [t for t, _ in ticks], [label for _, label in ticks]


def draw(axes, rows: np.ndarray, lags_s: np.ndarray, block_s: float, light_theme: bool = False, t0: float = 0.0):
  """Draws pitchogram rows on ``axes`` (time in s, lag in ms); returns the AxesImage."""
  picture = image(rows, light_theme)
  artist = axes.imshow(
    picture,
    aspect="auto",
    origin="upper",
    interpolation="nearest",
    extent=(t0, t0 + picture.shape[1] * block_s, picture.shape[0] - 0.5, -0.5),
  )
  ticks, labels = lag_ticks(lags_s)
  axes.set_yticks(ticks, labels)
  axes.set_ylabel("lag (ms)")
  axes.set_xlabel("time (s)")
  return artist


def render(rows: np.ndarray, lags_s: np.ndarray, block_s: float, title: str = "", light_theme: bool = False):
  """A whole recording's pitchogram as a Figure (off-screen, Agg)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  figure = Figure(figsize=(10, 4.5), dpi=100, layout="constrained")
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  draw(axes, rows, lags_s, block_s, light_theme)
  if title:
    axes.set_title(title)
  return figure


def save_png(
  path: str | Path, rows: np.ndarray, lags_s: np.ndarray, block_s: float, title: str = "", light_theme: bool = False
) -> Path:
  """Renders a whole recording's pitchogram (``render``) into a PNG file."""
  path = Path(path)
  render(rows, lags_s, block_s, title, light_theme).savefig(path)
  return path
