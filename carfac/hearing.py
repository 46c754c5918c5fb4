"""Hearing profiles and calibrated input levels.

Two things a hearing researcher sets per listener and per recording:

- **Outer-hair-cell health** (``weights.ears[e].car.ohc_health``, one value
  per channel in [0, 1]; 1 is healthy): it multiplies the cascade's
  undamping, so lowering it takes away the active gain near each channel's
  characteristic frequency. ``with_ohc_health`` puts a profile into a set of
  weights; ``ohc_health_from_audiogram`` maps an audiogram (hearing loss in
  dB at audiometric frequencies) to a profile by the rule below.
- **Input level**: the model is not scale-invariant (its compression depends
  on the level), so the sound pressure a sample value stands for matters.
  CARFAC's convention, as google/carfac PR #34 states it, is that an input
  of RMS 1 is a sound of 107 dB SPL (so input in pascals, whose RMS 1 is
  94 dB SPL, is scaled by 10^(-13/20)). ``input_gain_for_level`` gives the
  factor that makes a full-scale sine (amplitude 1, RMS 1/sqrt 2) stand for
  a chosen level; unscaled, a full-scale sine is about 104 dB SPL.

The audiogram rule. A loss of L dB at frequency f is modelled as the health
h whose *threshold shift* at f is L: the number of dB by which a soft tone
at f (30 dB SPL) must be raised so that the NAP of the channel tuned to f is
what it was with healthy hair cells (``threshold_shifts_db`` measures it).
The shift grows with 1 - h and is largest at h = 0 (in the default design
31 dB at 250 Hz, 42 to 47 dB from 1 to 4 kHz, 20 dB at 8 kHz near the top
of the cascade, where few stages amplify): the most that outer-hair-cell
loss can explain in this model (in people, too, outer-hair-cell loss accounts for up to about 50 dB
of a sensorineural loss; the rest is inner-hair-cell and neural, which
``ohc_health`` does not model, so larger losses are capped at h = 0).
``THRESHOLD_SHIFT_DB`` is that shift measured for the default design
(22050 Hz, default CAR, IHC and AGC), with the health lowered in every
channel at once, by ``scripts/measure_threshold_shift.py``. Each channel's
health is read off the table at the channel's pole frequency (interpolated
linearly in log frequency and in dB; held at the ends). For other designs
the table is an approximation; re-measure it with the script. With the
health varying across channels the table is only a first guess (the
cascade carries the basal channels' loss to the apical places):
``fit_ohc_health_to_audiogram`` refines it against the model's own shifts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from carfac.batch import run_segment_batch
from carfac.carfac import CarfacHypers, CarfacState, CarfacWeights
from carfac.sample_step import repeat_streams, state_dtype

RMS_ONE_DB_SPL = 107.0  # the level of an input of RMS 1 (google/carfac PR #34)
FULL_SCALE_SINE_DB_SPL = RMS_ONE_DB_SPL - 20 * math.log10(math.sqrt(2))  # ~104.0: unscaled input
PROBE_LEVEL_DB_SPL = 30.0  # the soft tone's level at which threshold shifts are measured

AUDIOMETRIC_FREQUENCIES_HZ = (250.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0)

# THRESHOLD_SHIFT_DB[i][j]: the measured shift (dB) at SHIFT_FREQUENCIES_HZ[i] with every channel's
# health SHIFT_HEALTH[j]. Regenerate with scripts/measure_threshold_shift.py.
SHIFT_FREQUENCIES_HZ = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)
SHIFT_HEALTH = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)
THRESHOLD_SHIFT_DB = (
  (0.0, 3.95, 7.86, 11.57, 15.03, 18.22, 21.16, 23.86, 26.36, 28.7, 30.9),
  (0.0, 4.84, 9.4, 13.69, 17.72, 21.51, 25.07, 28.43, 31.59, 34.56, 37.35),
  (0.0, 5.38, 10.51, 15.39, 20.0, 24.36, 28.45, 32.3, 35.91, 39.3, 42.48),
  (0.0, 5.93, 11.6, 16.98, 22.07, 26.87, 31.38, 35.6, 39.55, 43.22, 46.62),
  (0.0, 5.89, 11.46, 16.68, 21.58, 26.17, 30.43, 34.4, 38.06, 41.42, 44.48),
  (0.0, 4.05, 7.5, 10.42, 12.86, 14.87, 16.49, 17.77, 18.75, 19.45, 19.92),
)

# Example audiograms (dB HL at AUDIOMETRIC_FREQUENCIES_HZ), for trying profiles: illustrative shapes,
# not clinical data. "normal": none; "mild-high-frequency": the gentle slope of early age-related loss;
# "moderate-sloping": a moderate loss steepening above 1 kHz; "noise-notch": the dip at 4 kHz that
# noise exposure leaves, recovering at 8 kHz.
EXAMPLE_AUDIOGRAMS: dict[str, tuple[float, ...]] = {
  "normal": (0, 0, 0, 0, 0, 0, 0, 0),
  "mild-high-frequency": (5, 5, 10, 15, 20, 25, 30, 35),
  "moderate-sloping": (15, 20, 25, 35, 40, 45, 50, 55),
  "noise-notch": (5, 5, 5, 10, 25, 40, 30, 15),
}


def input_gain_for_level(full_scale_sine_db_spl: float) -> float:
  """The factor on input samples that makes a full-scale sine stand for ``full_scale_sine_db_spl``."""
  if not math.isfinite(full_scale_sine_db_spl):
    raise ValueError(f"the level must be finite, got {full_scale_sine_db_spl}")
  return 10 ** ((full_scale_sine_db_spl - FULL_SCALE_SINE_DB_SPL) / 20)


def with_ohc_health(weights: CarfacWeights, ohc_health) -> CarfacWeights:
  """``weights`` with ``car.ohc_health`` replaced: ``ohc_health`` (n_ch,) for every ear or (n_ears, n_ch)."""
  n_ears, n_ch = len(weights.ears), weights.ears[0].car.ohc_health.shape[0]
  health = jnp.asarray(ohc_health)
  if health.shape == (n_ch,):
    health = jnp.broadcast_to(health, (n_ears, n_ch))
  if health.shape != (n_ears, n_ch):
    raise ValueError(f"ohc_health must have shape ({n_ch},) or ({n_ears}, {n_ch}), got {tuple(health.shape)}")
  return CarfacWeights(
    ears=[
      dataclasses.replace(ear, car=dataclasses.replace(ear.car, ohc_health=h.astype(ear.car.ohc_health.dtype)))
      for ear, h in zip(weights.ears, health)
    ]
  )


def _checked_audiogram(frequencies_hz: Sequence[float], loss_db: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  frequencies, losses = np.asarray(frequencies_hz, float), np.asarray(loss_db, float)
  if frequencies.ndim != 1 or frequencies.shape != losses.shape or len(frequencies) < 1:
    raise ValueError("an audiogram needs as many losses as frequencies (at least one)")
  if not (np.isfinite(frequencies).all() and np.isfinite(losses).all()):
    raise ValueError("audiogram frequencies and losses must be finite")
  if (frequencies <= 0).any() or (np.diff(frequencies) <= 0).any():
    raise ValueError("audiogram frequencies must be positive and increasing")
  return frequencies, losses


def _shift_curves(frequencies_hz: np.ndarray) -> np.ndarray:
  """The measured shift versus health at each frequency: (n, len(SHIFT_HEALTH)), log-f interpolated."""
  table = np.asarray(THRESHOLD_SHIFT_DB, float)
  log_f = np.log(np.clip(frequencies_hz, SHIFT_FREQUENCIES_HZ[0], SHIFT_FREQUENCIES_HZ[-1]))
  log_table_f = np.log(SHIFT_FREQUENCIES_HZ)
  return np.stack([np.interp(log_f, log_table_f, table[:, j]) for j in range(table.shape[1])], axis=1)


def ohc_health_from_audiogram(
  frequencies_hz: Sequence[float], loss_db: Sequence[float], pole_frequencies_hz: Sequence[float]
) -> np.ndarray:
  """Per-channel outer-hair-cell health for an audiogram (dB HL), by the rule of the module doc.

  The loss at each pole frequency is interpolated linearly in log frequency
  between the audiogram's points and held beyond its ends; losses at or
  below 0 dB give health 1, losses beyond what h = 0 explains give 0.
  """
  frequencies, losses = _checked_audiogram(frequencies_hz, loss_db)
  poles = np.asarray(pole_frequencies_hz, float)
  loss = np.interp(np.log(poles), np.log(frequencies), losses)
  curves = _shift_curves(poles)  # rising as the health falls (SHIFT_HEALTH runs 1 -> 0)
  health = [np.interp(shift, curve, SHIFT_HEALTH) for shift, curve in zip(loss, curves)]
  return np.clip(np.asarray(health), 0.0, 1.0)


def profile_ohc_health(profile: str, pole_frequencies_hz: Sequence[float]) -> np.ndarray:
  """Per-channel health for one of ``EXAMPLE_AUDIOGRAMS`` (``KeyError`` for another name)."""
  return ohc_health_from_audiogram(AUDIOMETRIC_FREQUENCIES_HZ, EXAMPLE_AUDIOGRAMS[profile], pole_frequencies_hz)


def _nearest_channels(poles: np.ndarray, frequencies_hz: np.ndarray) -> np.ndarray:
  """For each frequency, the channel whose pole frequency is nearest."""
  return np.abs(np.asarray(poles)[None, :] - np.asarray(frequencies_hz, float)[:, None]).argmin(axis=1)


def _tones(frequencies_hz: np.ndarray, levels_db_spl: np.ndarray, fs: float, seconds: float) -> np.ndarray:
  """One sine per row: (n, samples), at each frequency and level (dB SPL, the model's convention)."""
  t = np.arange(round(seconds * fs)) / fs
  amplitudes = math.sqrt(2) * 10 ** ((levels_db_spl - RMS_ONE_DB_SPL) / 20)
  return amplitudes[:, None] * np.sin(2 * np.pi * frequencies_hz[:, None] * t)


@functools.lru_cache(maxsize=8)
def _channel_responses(hypers: CarfacHypers):
  """A compiled (tones, weights, states, channels) -> each tone's mean NAP in its channel, second half, ear 0."""

  def responses(tones, weights, states, channels):
    waves = jnp.repeat(tones[..., None], hypers.n_ears, axis=-1) if hypers.n_ears > 1 else tones
    seg, _ = run_segment_batch(waves, hypers, weights, states, outputs=("naps",))
    means = seg["naps"][:, tones.shape[1] // 2 :, :, 0].mean(axis=1)
    return jnp.take_along_axis(means, channels[:, None], axis=1)[:, 0]

  return jax.jit(responses)


def threshold_shifts_db(
  hypers: CarfacHypers,
  healthy: CarfacWeights,
  impaired: CarfacWeights,
  state: CarfacState,
  frequencies_hz: Sequence[float],
  level_db_spl: float = PROBE_LEVEL_DB_SPL,
  seconds: float = 0.3,
  tolerance_db: float = 0.02,
) -> np.ndarray:
  """How many dB louder a tone at each frequency must be for ``impaired`` to respond as ``healthy`` does.

  The response: the mean NAP, over the tone's second half, of ear 0's
  channel whose pole frequency is nearest the tone; found by bisection in
  [0, 80] dB, every frequency at once (one batched run per step).
  """
  frequencies = np.asarray(frequencies_hz, float)
  poles = np.asarray(hypers.ears[0].pole_freqs)
  channels = jnp.asarray(_nearest_channels(poles, frequencies), jnp.int32)
  dtype = state_dtype(state)
  states = repeat_streams(state, len(frequencies))
  run = _channel_responses(hypers)

  def responses(weights, levels):
    tones = jnp.asarray(_tones(frequencies, levels, hypers.fs, seconds), dtype)
    return np.asarray(run(tones, weights, states, channels))

  target = responses(healthy, np.full(len(frequencies), level_db_spl))
  low, high = np.zeros(len(frequencies)), np.full(len(frequencies), 80.0)
  while (high - low).max() > tolerance_db:
    middle = (low + high) / 2
    quieter = responses(impaired, level_db_spl + middle) < target
    low, high = np.where(quieter, middle, low), np.where(quieter, high, middle)
  return (low + high) / 2


def fit_ohc_health_to_audiogram(
  hypers: CarfacHypers,
  weights: CarfacWeights,
  state: CarfacState,
  frequencies_hz: Sequence[float],
  loss_db: Sequence[float],
  iterations: int = 4,
  tolerance_db: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel health whose measured threshold shifts match an audiogram, for research offline.

  ``ohc_health_from_audiogram`` reads a table measured with one health in
  every channel; in a sloping loss the cascade carries the basal channels'
  loss to the apical ones, so the shift there overshoots (measured: 9.7 dB
  too much at 2 kHz for the noise-notch example). This corrects it with the
  model itself: it measures the shifts at the audiogram's frequencies
  (within the design's channels), lowers or raises the loss fed to the rule
  by the error, and repeats, ``iterations`` times at most or until every
  error is within ``tolerance_db``. A loss beyond what h = 0 explains stays
  at h = 0. Returns (health (n_ch,), the measured shifts at the audiogram's
  frequencies). About 1 s per iteration on a 2-core machine.
  """
  frequencies, losses = _checked_audiogram(frequencies_hz, loss_db)
  poles = np.asarray(hypers.ears[0].pole_freqs)
  inside = (frequencies >= poles.min()) & (frequencies <= poles.max())
  fed = np.clip(losses, 0.0, None)
  health = ohc_health_from_audiogram(frequencies, fed, poles)
  shifts = np.zeros_like(losses)
  for _ in range(iterations):
    shifts[inside] = threshold_shifts_db(hypers, weights, with_ohc_health(weights, health), state, frequencies[inside])
    # Where even h = 0 does not reach the loss, the error is what remains; the fed loss stops at the table's top.
    error = np.where(inside, shifts - np.clip(losses, 0.0, None), 0.0)
    achievable = ~((health[_nearest_channels(poles, frequencies)] <= 0.0) & (error < 0))
    if np.all(np.abs(error[achievable]) <= tolerance_db):
      break
    fed = np.clip(fed - np.where(achievable, error, 0.0), 0.0, float(np.max(THRESHOLD_SHIFT_DB)))
    health = ohc_health_from_audiogram(frequencies, fed, poles)
  return health, shifts
