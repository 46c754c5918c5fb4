"""Physics checks against the golden numbers of the reference numpy test suite.

Each test drives a stage (or the whole model) with the signal the reference
suite (google/carfac, python/src/carfac/np/carfac_test.py) uses, measures the
response the same way, and compares with the numbers printed there (most of
them come from the Matlab implementation): the CAR's frequency response, the
AGC's steady-state spatial response, the IHC's response to tone blips, the
effect of damaged outer hair cells, and binaural coupling. Runs in float64
(``conftest.py`` enables x64).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import carfac
from carfac import agc, car, ihc, syn

FS = 22050.0


# --- Measuring peaks ---------------------------------------------------------


def _value_at(values: np.ndarray, position: float) -> float:
  """``values`` linearly interpolated at a fractional index, clamped to the ends."""
  if position <= 0:
    return float(values[0])
  if position >= len(values) - 1:
    return float(values[-1])
  below = int(position)
  weight = position - below
  return float((1 - weight) * values[below] + weight * values[below + 1])


def _parabola_vertex(left: float, mid: float, right: float) -> tuple[float, float]:
  """Vertex (offset from the middle sample, height) of the parabola through 3 samples."""
  offset = 0.5 * (left - right) / (left - 2 * mid + right)
  return offset, mid - 0.25 * (left - right) * offset


def _sign_changes(x: np.ndarray, y: np.ndarray) -> list[float]:
  """Abscissas where ``y`` strictly changes sign, by linear interpolation."""
  crossings = []
  for i in np.flatnonzero(y[:-1] * y[1:] < 0):
    weight = y[i] / (y[i] - y[i + 1])
    crossings.append(float(x[i] + weight * (x[i + 1] - x[i])))
  return crossings


def _peak(x: np.ndarray, y: np.ndarray, drop: float) -> tuple[float, float, float]:
  """(position, height, width) of the largest peak of ``y`` sampled at ``x``.

  The peak is refined by parabolic interpolation; the width is the distance
  between the first two places where ``y`` is ``drop`` below the peak height
  (0 when there are fewer than two).
  """
  top = int(np.argmax(y))
  offset, height = _parabola_vertex(y[top - 1], y[top], y[top + 1])
  edges = _sign_changes(x, y - height + drop)
  width = edges[1] - edges[0] if len(edges) >= 2 else 0.0
  return _value_at(x, top + offset), height, width


# --- Running single stages -------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("hypers", "n_samp"))
def _car_impulse_response(
  hypers: car.CarHypers, weights: car.CarWeights, state: car.CarState, n_samp: int
) -> jax.Array:
  """CAR output (AC-coupled, as the reference's car_step) for a unit impulse."""
  impulse = jnp.zeros(n_samp, state.z1_memory.dtype).at[0].set(1.0)

  def step(s, x):
    out, s = car.car_step(x, hypers, weights, s)
    return s, out

  return jax.lax.scan(step, state, impulse)[1]


@functools.partial(jax.jit, static_argnames=("hypers", "n_samp"))
def _agc_constant_drive(
  detects: jax.Array,
  hypers: tuple[agc.AgcHypers, ...],
  weights: list[agc.AgcWeights],
  states: list[agc.AgcState],
  n_samp: int,
) -> tuple[jax.Array, list[agc.AgcState]]:
  """Feeds the same AGC input for ``n_samp`` samples; returns (update count, states)."""

  def step(s, _):
    updated, s = agc.agc_step(detects, hypers, weights, s)
    return s, updated

  states, updated = jax.lax.scan(step, states, None, length=n_samp)
  return jnp.sum(updated), states


@functools.partial(jax.jit, static_argnames=("hypers",))
def _ihc_drive(
  x: jax.Array,
  hypers: ihc.IhcHypers,
  weights: ihc.IhcWeights,
  state: ihc.IhcState,
  syn_weights: syn.SynWeights | None,
  syn_state: syn.SynState | None,
) -> jax.Array:
  """Channel 0's neural output when every channel's IHC gets the samples ``x``.

  That is the IHC output, or the synapse output when synapse weights are given.
  """

  def step(carry, x_t):
    ihc_s, syn_s = carry
    out, v_recep, ihc_s = ihc.ihc_step(jnp.full(hypers.n_ch, x_t), hypers, weights, ihc_s)
    if syn_weights is not None:
      out, _, syn_s = syn.syn_step(v_recep, syn_weights, syn_s)
    return (ihc_s, syn_s), out[0]

  return jax.lax.scan(step, (state, syn_state), x)[1]


def _design(
  n_ears: int = 1,
  ihc_style: str = "two_cap",
  fs: float = FS,
  linear_car: bool = False,
) -> tuple[carfac.CarfacHypers, carfac.CarfacWeights, carfac.CarfacState]:
  """Default design (hypers, weights, state) with the given IHC style on every ear."""
  params = carfac.CarfacDesignParameters(fs=fs, n_ears=n_ears)
  for ear in params.ears:
    ear.ihc.ihc_style = ihc_style
    ear.car.linear_car = linear_car
  return carfac.design_and_init_carfac(params)


def _rms_bm(x: np.ndarray, n_ears: int, ihc_style: str, n_keep: int | None = None) -> np.ndarray:
  """Per-channel rms of ear 0's BM output over the first ``n_keep`` samples."""
  hypers, weights, state = _design(n_ears, ihc_style)
  bm = np.asarray(carfac.run_segment_jit(x, hypers, weights, state).bm)
  return np.sqrt(np.mean(bm[:n_keep, :, 0] ** 2, axis=0))


def _noise(amplitude: float, n_samp: int = int(FS)) -> np.ndarray:
  """Gaussian noise from numpy's legacy generator seeded with 1, as the reference."""
  return amplitude * np.random.RandomState(1).randn(n_samp)


# --- CAR ---------------------------------------------------------------------------


# Channel, CF (Hz), peak gain (dB), 3-dB bandwidth (Hz), Q; Lyon's Fig. 16.6.
CAR_RESPONSE = [
  (10, 5604, 39.34, 705.6, 7.9),
  (20, 3245, 55.61, 429.8, 7.6),
  (30, 1809, 60.46, 248.1, 7.3),
  (40, 965, 59.18, 138.7, 7.0),
  (50, 477, 52.81, 74.8, 6.4),
  (60, 195, 38.98, 37.5, 5.2),
  (70, 32, 7.95, 14.6, 2.2),
]


def test_car_freq_response():
  """The linear cascade's impulse response has the reference's peaks and widths."""
  hypers, weights, state = _design(linear_car=True)
  ear = hypers.ears[0]
  assert ear.n_ch == 71
  n_samp = 2**14
  fft_len = 2 * n_samp
  response = _car_impulse_response(ear.car, weights.ears[0].car, state.ears[0].car, n_samp)
  spectrum = np.fft.rfft(np.asarray(response), n=fft_len, axis=0)
  db = 20 * np.log10(np.abs(spectrum) + 1e-50)
  freqs = np.arange(n_samp + 1) * FS / fft_len
  for channel, cf_hz, gain_db, bw_hz, q in CAR_RESPONSE:
    cf, gain, bw = _peak(freqs, db[:, channel], drop=3.0)
    assert round(cf) == cf_hz, channel
    assert gain == pytest.approx(gain_db, abs=0.01), channel
    assert bw == pytest.approx(bw_hz, abs=0.1), channel
    assert round(cf / bw, 1) == pytest.approx(q, abs=1e-9), channel


@pytest.mark.parametrize("undamping", np.arange(0, 1.01, 0.1))
def test_stage_g_calculation(undamping: float):
  """The run-time quadratic stage gain is within 0.1% of the exact DC-unity gain."""
  hypers, weights, _ = _design()
  exact = car.design_stage_g(hypers.ears[0].car, undamping)
  approx = np.asarray(car.stage_g(weights.ears[0].car, jnp.asarray(undamping)))
  np.testing.assert_array_less(np.abs(approx - exact) / exact, 1e-3)


# --- AGC ---------------------------------------------------------------------------


# Per stage: peak channel, peak value, full width at half maximum (channels).
AGC_STEADY_STATE = [
  (39.033166, 8.359763, 9.598703),
  (39.201534, 4.083376, 9.019020),
  (39.374404, 1.878256, 8.219043),
  (39.565957, 0.712351, 6.994498),
]


def test_agc_steady_state():
  """A spatial impulse of 100 on channel 40 settles to the reference's profiles."""
  hypers, weights, state = _design()
  ear = hypers.ears[0]
  n_samp = 2**14
  detects = jnp.zeros(ear.n_ch).at[40].set(100.0)
  n_updates, states = _agc_constant_drive(detects, ear.agc, weights.ears[0].agc, state.ears[0].agc, n_samp)
  assert int(n_updates) == n_samp // ear.agc[0].decimation
  channels = np.arange(ear.n_ch, dtype=np.float64)
  for stage, (where, height, width) in enumerate(AGC_STEADY_STATE):
    memory = np.asarray(states[stage].agc_memory)
    # Half maximum: first of the sampled peak, then of the interpolated one.
    _, peak, _ = _peak(channels, memory, drop=memory.max() / 2)
    got = _peak(channels, memory, drop=peak / 2)
    np.testing.assert_allclose(got, (where, height, width), rtol=0, atol=5e-6)


# Input 1e0, 1e3, ..., 1e15 smoothed by the FIR [0.1, 0.3, 0.6]; the 5-tap
# values include the reference's edge rules (two samples replicated).
SPATIAL_SMOOTH = {
  (3, 1): [600.4e0, 600.3001e3, 600.3001e6, 600.3001e9, 600.3001e12, 0.9001e15],
  (3, 2): [
    360420.22e0,
    360360.21007e3,
    360360.21006001e6,
    360360.21006001e9,
    720.21006001e12,
    0.87012001e15,
  ],
  (3, 3): [
    216360294.130e0,
    216324270.141049e3,
    216324270.13504501e6,
    540270.135045009001e9,
    774.171045009001e12,
    0.855129015001e15,
  ],
  (5, 1): [
    600600.5e0,
    600600.4001e3,
    600600.3001001e6,
    600600.3001001e9,
    1200.3001001e12,
    0.9007001e15,
  ],
  (5, 2): [
    360720840600.37e0,
    360720780540.34015e3,
    1080720480.33019009e6,
    1440840.33018008002e9,
    1501.05024007002001e12,
    1.71090019008001e15,
  ],
}


@pytest.mark.parametrize("taps, iterations", list(SPATIAL_SMOOTH))
def test_spatial_smooth(taps: int, iterations: int):
  """The spatial FIR matches the reference to within one ulp per iteration."""
  agc_hypers = agc.AgcHypers(
    n_ch=6,
    n_agc_stages=1,
    decimation=1,
    agc_spatial_iterations=iterations,
    agc_spatial_n_taps=taps,
  )
  _, weights, _ = _design()
  agc_weights = dataclasses.replace(weights.ears[0].agc[0], agc_spatial_fir=jnp.array([0.1, 0.3, 0.6]))
  memory = jnp.asarray(1e3 ** np.arange(6))
  smoothed = np.asarray(agc.spatial_smooth(agc_hypers, agc_weights, memory))
  np.testing.assert_array_max_ulp(smoothed, np.array(SPATIAL_SMOOTH[taps, iterations]), maxulp=iterations)


# --- IHC ---------------------------------------------------------------------------


# Per style and tone frequency, for blips 1..6: (maximum, carrier amplitude).
IHC_BLIPS = {
  ("two_cap_with_syn", 300): [
    (1.055837, 184.180863),
    (3.409906, 483.204136),
    (6.167359, 837.629296),
    (7.096430, 956.279101),
    (7.103324, 927.060415),
    (7.123434, 895.574871),
  ],
  ("two_cap_with_syn", 3000): [
    (0.167683, 24.929044),
    (0.620939, 74.045598),
    (1.894064, 175.367201),
    (3.541070, 269.322147),
    (4.899921, 303.684269),
    (5.572545, 278.428744),
  ],
  ("two_cap", 300): [
    (2.026682, 544.901381),
    (3.533259, 756.736631),
    (5.108579, 923.142282),
    (6.423783, 1017.472318),
    (7.454677, 1059.407644),
    (8.231247, 1071.902335),
  ],
  ("two_cap", 3000): [
    (0.698303, 93.388172),
    (1.520033, 131.832247),
    (2.660770, 163.287206),
    (3.872406, 182.022912),
    (4.909175, 191.225206),
    (5.666469, 194.912279),
  ],
  ("one_cap", 300): [
    (2.752913, 721.001685),
    (4.815015, 969.505412),
    (7.062418, 1147.285676),
    (9.138118, 1239.521055),
    (10.969522, 1277.061337),
    (12.516468, 1285.880084),
  ],
  ("one_cap", 3000): [
    (1.417657, 234.098558),
    (2.804747, 316.717957),
    (4.802444, 376.787575),
    (7.030791, 408.011707),
    (9.063014, 420.602740),
    (10.634581, 423.674628),
  ],
}


def _tone_blips(freq: float, fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """The reference's IHC stimulus: 20-ms tone blips every 40 ms, 6 dB louder each.

  Returns (signal, blip index per sample (0 in the gaps), gated sine, gated
  cosine); the first blip (index 1) starts at 0.04 s with amplitude 0.18.
  """
  t = np.arange(0, 0.28, 1 / fs)
  gate = (1 - np.sign(np.sin(2 * np.pi * 25 * t + np.pi / 2 + 1e-6))) / 2
  blip = gate * np.floor(t / 0.04)
  sine = np.sin(2 * np.pi * freq * t) * gate
  cosine = np.cos(2 * np.pi * freq * t) * gate
  return 0.09 * 2**blip * sine, blip, sine, cosine


@pytest.mark.parametrize("style, freq", list(IHC_BLIPS))
def test_ihc_param(style: str, freq: float):
  """Each blip's peak output and carrier-frequency amplitude match the reference."""
  fs = 40000.0
  hypers, weights, state = _design(ihc_style=style, fs=fs)
  x, blip, sine, cosine = _tone_blips(freq, fs)
  out = np.asarray(
    _ihc_drive(
      jnp.asarray(x),
      hypers.ears[0].ihc,
      weights.ears[0].ihc,
      state.ears[0].ihc,
      weights.ears[0].syn,
      state.ears[0].syn,
    )
  )
  got = []
  for i in range(1, 7):
    response = out * (blip == i)
    carrier = np.hypot(response @ sine, response @ cosine)
    got.append((response.max(), carrier))
  np.testing.assert_allclose(got, IHC_BLIPS[style, freq], rtol=1e-4, atol=0)


# --- Whole model -------------------------------------------------------------------


def test_ohc_health():
  """Halving OHC health over the basal half cuts its BM response to quiet noise."""
  noise = _noise(1e-4)
  hypers, weights, state = _design()
  baseline = np.asarray(carfac.run_segment_jit(noise, hypers, weights, state).bm)
  n_ch = hypers.ears[0].n_ch
  half = n_ch // 2
  hypers, weights, state = _design()
  car_w = weights.ears[0].car
  weights.ears[0].car = dataclasses.replace(car_w, ohc_health=car_w.ohc_health.at[:half].multiply(0.5))
  degraded = np.asarray(carfac.run_segment_jit(noise, hypers, weights, state).bm)
  ratio = np.sqrt(np.mean(degraded[:, :, 0] ** 2, 0) / np.mean(baseline[:, :, 0] ** 2, 0))
  np.testing.assert_array_less(ratio[9:half], 0.11)
  np.testing.assert_array_less(0.35, ratio[half + 5 : n_ch - 2])


def test_multiaural_carfac():
  """Two ears given the same noise produce the same NAP."""
  noise = _noise(1e-3)
  hypers, weights, state = _design(n_ears=2, ihc_style="one_cap")
  naps = np.asarray(carfac.run_segment_jit(np.stack([noise, noise], 1), hypers, weights, state).naps)
  assert np.max(np.abs(naps[:, :, 0] - naps[:, :, 1])) < 1e-5


# rms BM of the hearing ear with the other ear silent, over its rms when alone
# (from the Matlab version of the test).
SILENT_EAR_RATIO = [1.0] * 32 + [
    1.0001, 1.0001, 1.0001, 1.0002, 1.0004, 1.0007, 1.0018, 1.0050, 1.0133,
    1.0290, 1.0463, 1.0562, 1.0552, 1.0505, 1.0497, 1.0417, 1.0426, 1.0417,
    1.0320, 1.0110, 1.0093, 1.0124, 1.0065, 1.0132, 1.0379, 1.0530, 1.0503,
    1.0477, 1.0556, 1.0659, 1.0739, 1.0745, 1.0762, 1.0597, 1.0200, 1.0151,
    1.0138, 1.0129, 1.0182,
]  # fmt: skip


def test_multiaural_carfac_with_silent_channel():
  """A silent second ear raises the hearing ear's response by the reference's ratios.

  The stimulus is 50 ms of two C-major chords (C5-E5-G5 and C1-E1-G1). The
  binaural run is padded with silence to one second so that it reuses the
  compiled function of ``test_multiaural_carfac``; the model is causal, so
  the first 50 ms are unaffected.
  """
  t = np.arange(0, 0.05 - 1 / FS, 1 / FS)
  chord_hz = np.array([523.25, 659.25, 783.99, 32.7, 41.2, 49.0])
  chord = 1e-3 * np.sin(2 * np.pi * chord_hz[:, None] * t).sum(0)
  n = len(chord)
  binaural = np.zeros((int(FS), 2))
  binaural[:n, 0] = chord
  ratio = _rms_bm(binaural, 2, "one_cap", n_keep=n) / _rms_bm(chord, 1, "one_cap")
  np.testing.assert_allclose(ratio, SILENT_EAR_RATIO, rtol=0, atol=5e-4)
  assert np.all((ratio >= 1) & (ratio <= 1.25))
