"""Streaming sample-rate conversion to the model's rate, with a short, steady delay.

One ``StreamResampler`` per audio stream: chunks of any length go in, and the
resampled samples come out with the filter's history carried between chunks,
so chunked output equals one-shot output, sample for sample. When the rates
are equal it is an exact pass-through (no filtering, no delay).

The filter is a linear-phase windowed sinc (Kaiser window), applied as a
polyphase filter bank: with ``out_rate / in_rate = L / M`` in lowest terms,
every block of ``M`` input samples gives ``L`` outputs, each one row of an
``(L, M + taps)`` matrix times the input around it (for ratios like 1/2,
a block of several such groups, so that one product makes 128 outputs or
more). Passband flat to 90% of
the lower of the two Nyquist frequencies (9.9 kHz from 48 kHz to the model's
22.05 kHz), stopband 100 dB down from that Nyquist frequency on: nothing
aliases and no image is left. Against soxr's very-high-quality one-shot
resampling of noise band-limited to 9.5 kHz, the difference is 93 dB below
the signal (tests/test_resample.py).

Why not libsoxr's streaming resampler: it releases its output in bursts (at
HQ, from 48 kHz in 20 ms chunks, it held 11 to 38 ms of audio back, 20 ms on
average), and that delay reached every frame the server sends. This filter
holds back only half its length, ``delay_s`` (2.9 ms from 48 kHz, 4.1 ms
from 16 kHz), after every chunk, for about 29 us of work per 20 ms chunk
from 48 kHz (float32; 44 us in float64). Rates that are no simple ratio of the model rate (more than
``MAX_PHASES`` outputs per block, e.g. 44056 Hz) would need an enormous
matrix; they still go through soxr (HQ).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

PASSBAND = 0.9  # of the lower Nyquist frequency: flat up to here
STOPBAND_DB = 100.0  # attenuation from the lower Nyquist frequency on
MAX_PHASES = 1024  # outputs per block of the polyphase matrix (L); above it, soxr
MIN_OUTPUTS_PER_BLOCK = 128  # a block of fewer outputs costs more in Python than in arithmetic


def _kaiser_sinc_matrix(phases: int, step: int, half: int, cutoff: float, beta: float) -> np.ndarray:
  """The polyphase matrix (``phases``, ``step + 2 * half``): row ``r`` makes output ``r`` of a block.

  Output ``r`` of the block whose first input is sample 0 lies at input time
  ``t = r * step / phases`` and is the sum of inputs ``k`` in
  ``(t - half, t + half]`` weighted by the windowed sinc at ``t - k``;
  column ``c`` is input ``c - half + 1``. Every other entry is exactly 0.
  ``cutoff``: in cycles per input sample.
  """
  width = step + 2 * half
  t = np.arange(phases) * step / phases
  k = np.arange(width) - half + 1
  tau = t[:, None] - k[None, :]
  inside = np.abs(tau) < half
  window = np.i0(beta * np.sqrt(np.clip(1 - (tau / half) ** 2, 0.0, None))) / np.i0(beta)
  return np.where(inside, 2 * cutoff * np.sinc(2 * cutoff * tau) * window, 0.0)


class _PolyphaseFilter:
  """The windowed-sinc resampler of the module docstring, on (n, channels) float32 chunks."""

  def __init__(self, in_rate: float, out_rate: float, channels: int, phases: int, step: int):
    self.phases, self.step, self.channels = phases, step, channels
    lower_nyquist = min(in_rate, out_rate) / 2
    f_pass, f_stop = PASSBAND * lower_nyquist, lower_nyquist
    transition = 2 * math.pi * (f_stop - f_pass) / in_rate  # radians per input sample
    self.half = math.ceil(((STOPBAND_DB - 8) / (2.285 * transition) + 1) / 2)  # Kaiser's length estimate
    beta = 0.1102 * (STOPBAND_DB - 8.7)
    # float32, like the audio: the products take half the time of float64's, and the rounding (about 1e-7 of
    # the signal) lies far below the stopband's 100 dB (the match with soxr is unchanged: 93, 115, 82 dB).
    self.matrix = _kaiser_sinc_matrix(phases, step, self.half, (f_pass + f_stop) / 2 / in_rate, beta).astype(np.float32)
    # Input held from absolute sample ``self.start`` on; zeros stand for the samples before the stream's start.
    self.held = np.zeros((self.half, channels), np.float32)
    self.start = -self.half
    self.received = 0  # input samples so far
    self.emitted = 0  # output samples so far

  def _ready(self, available: int) -> int:
    """Outputs whose every input is among the first ``available`` samples: ``j`` with ``j*M/L + half <= available``."""
    return max(0, ((available - self.half) * self.phases) // self.step + 1)

  def _emit(self, available: int) -> np.ndarray:
    """The outputs that ``available`` input samples complete, block by block of the matrix."""
    ready = self._ready(available)
    outputs = []
    while self.emitted < ready:
      block, first_row = divmod(self.emitted, self.phases)
      begin = block * self.step - self.half + 1 - self.start  # the block's first column in ``held``
      window = self.held[begin : begin + self.matrix.shape[1]]
      if len(window) < self.matrix.shape[1]:  # the block's later inputs are not here yet: their weights are 0
        window = np.concatenate([window, np.zeros((self.matrix.shape[1] - len(window), self.channels), np.float32)])
      last_row = min(self.phases, ready - block * self.phases)
      outputs.append((self.matrix @ window)[first_row:last_row])
      self.emitted = block * self.phases + last_row
    drop = (self.emitted // self.phases) * self.step - self.half + 1 - self.start  # inputs no block needs again
    if drop > 0:
      self.held, self.start = self.held[drop:], self.start + drop
    if not outputs:
      return np.zeros((0, self.channels), np.float32)
    return np.concatenate(outputs)

  def process(self, frames: np.ndarray) -> np.ndarray:
    self.held = np.concatenate([self.held, frames])
    self.received += len(frames)
    return self._emit(self.received)

  def flush(self) -> np.ndarray:
    """The outputs up to the input's end (``ceil(received * L / M)`` in all), the filter run out on zeros."""
    total = -(-self.received * self.phases // self.step)
    before, padding = self.emitted, 2 * self.half + self.step
    self.held = np.concatenate([self.held, np.zeros((padding, self.channels), np.float32)])
    return self._emit(self.received + padding)[: max(0, total - before)]


class StreamResampler:
  """Converts (n, channels) float32 chunks from ``in_rate`` to ``out_rate`` (see the module docstring)."""

  def __init__(self, in_rate: float, out_rate: float, channels: int = 1):
    if in_rate <= 0 or out_rate <= 0:
      raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
    if channels < 1:
      raise ValueError(f"channels must be >= 1, got {channels}")
    self.in_rate, self.out_rate, self.channels = float(in_rate), float(out_rate), channels
    self._filter: _PolyphaseFilter | None = None
    self._soxr = None
    self.delay_s = 0.0  # how far the output lags the input after a chunk, at most
    if self.in_rate == self.out_rate:
      return
    ratio = Fraction(self.out_rate) / Fraction(self.in_rate)
    if ratio.numerator <= MAX_PHASES:
      blocks = -(-MIN_OUTPUTS_PER_BLOCK // ratio.numerator)  # simple ratios (44.1 kHz: 1/2) take several at once
      phases, step = blocks * ratio.numerator, blocks * ratio.denominator
      self._filter = _PolyphaseFilter(self.in_rate, self.out_rate, channels, phases, step)
      self.delay_s = self._filter.half / self.in_rate
    else:
      import soxr  # only for rates that are no simple ratio of the model rate

      self._soxr = soxr.ResampleStream(self.in_rate, self.out_rate, channels, dtype="float32", quality="HQ")
      self.delay_s = math.inf  # soxr releases its output in bursts: no bound is promised

  @property
  def passthrough(self) -> bool:
    return self._filter is None and self._soxr is None

  def _as_frames(self, chunk) -> np.ndarray:
    array = np.asarray(chunk, np.float32)
    if array.ndim == 1 and self.channels == 1:
      array = array[:, None]
    if array.ndim != 2 or array.shape[1] != self.channels:
      raise ValueError(f"chunk must be (n, {self.channels}), got {array.shape}")
    return np.ascontiguousarray(array)

  def process(self, chunk) -> np.ndarray:
    """Resamples one chunk; returns (m, channels) float32 (m may be 0)."""
    frames = self._as_frames(chunk)
    if self._filter is not None:
      return self._filter.process(frames)
    if self._soxr is not None:
      return self._soxr.resample_chunk(frames, last=False).reshape(-1, self.channels)
    return frames.copy()

  def flush(self) -> np.ndarray:
    """Ends the stream: returns the samples still held in the filter."""
    if self._filter is not None:
      return self._filter.flush()
    if self._soxr is not None:
      empty = np.zeros((0, self.channels), np.float32)
      return self._soxr.resample_chunk(empty, last=True).reshape(-1, self.channels)
    return np.zeros((0, self.channels), np.float32)
