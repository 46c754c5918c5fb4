"""Pitchogram: a pitch picture from SAI frames, and a vowel embedding of the NAP.

Follows google/carfac ``cpp/pitchogram.{h,cc}`` (there is no numpy
reference). Per SAI frame:

1. Each channel's row is multiplied by a 0/1 mask that removes the lags within
   half a period of that channel's pole frequency around zero lag (column
   ``sai_width - future_lags``): the zero-lag ridge says nothing about pitch.
2. The masked frame is averaged over channels: the lag profile, one value per
   lag, which peaks at the pitch period and its multiples.
3. With ``log_lag`` (the default) the profile is box-averaged into cells
   spaced ``lags_per_octave`` per octave on a log axis of lag +
   ``log_offset_s``, from ``min_lag_s`` up to the frame's widest lag.

Per NAP segment, the vowel embedding smooths each channel's mean NAP with a
one-pole filter (``vowel_time_constant_s``) and projects it onto two
difference-of-Gaussians rows that pick out the F2 (1100 vs 2365 Hz) and F1
(265 vs 700 Hz) regions. ``column_rgb`` colours a pitchogram column with that
2-D coordinate, as the reference's demo draws it.

The design arithmetic (mask edges, resampling cells, vowel rows) is done in
float32 exactly as the C++ does it, because its integer decisions (a mask
edge, a cell's first sample) must land where the reference's do.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from carfac import car
from carfac._dataclasses import (
  default_float_dtype,
  frozen_array,
  pytree_dataclass,
  static_dataclass,
)
from carfac.carfac import (
  CarfacDesignParameters,
  CarfacHypers,
  CarfacState,
  CarfacWeights,
  design_and_init_carfac,
  run_segment_outputs,
)
from carfac.finite import count_non_finite
from carfac.sai import (
  SaiDesignParameters,
  SaiHypers,
  SaiState,
  design_and_init_sai,
  run_sai_segment,
)

_F32 = np.float32


@dataclasses.dataclass
class PitchogramDesignParameters:
  """User-set pitchogram parameters (the reference's ``PitchogramParams``)."""

  log_lag: bool = True  # log-lag cells; needs future_lags = sai_width - 1
  lags_per_octave: float = 36.0  # log-lag cells per octave
  min_lag_s: float = 0.0005  # the first cell's left edge
  log_offset_s: float = 0.0025  # added to the lag before taking the log
  vowel_time_constant_s: float = 0.02  # smoothing of the NAP for the vowel embedding
  light_color_theme: bool = False  # white background instead of black


@static_dataclass
class PitchogramHypers:
  """Static pitchogram design: the zero-lag mask, lag cells and vowel rows."""

  mask: np.ndarray  # (n_ch, sai_width), 0 near zero lag, else 1
  resampling: np.ndarray | None  # (sai_width, n_lags) cell weights; None: linear lag
  vowel_matrix: np.ndarray  # (2, n_ch): the F2 row, then the F1 row
  lags_s: np.ndarray  # (n_lags,) each output's lag in seconds (a log cell's centre)
  cgram_smoother: float  # one-pole coefficient per segment
  light_color_theme: bool

  @property
  def num_lags(self) -> int:
    return len(self.lags_s)


@pytree_dataclass
class PitchogramState:
  """The smoothed mean NAP per channel (n_ch,), the vowel embedding's memory."""

  cgram: jax.Array


def pole_frequencies_f32(car_params: car.CarDesignParameters, fs: float) -> np.ndarray:
  """The pole frequencies as the C++ ``CARPoleFrequencies`` computes them (float32)."""
  fs32 = _F32(fs)
  erb_per_step = _F32(car_params.erb_per_step)
  break_freq, erb_q = _F32(car_params.erb_break_freq), _F32(car_params.erb_q)
  pole_hz = _F32(car_params.first_pole_theta) * fs32 / _F32(2 * math.pi)
  poles = []
  while pole_hz > _F32(car_params.min_pole_hz):
    poles.append(pole_hz)
    pole_hz = _F32(pole_hz - erb_per_step * ((break_freq + pole_hz) / erb_q))
  return np.array(poles, dtype=_F32)


def frequency_to_channel_index(car_params: car.CarDesignParameters, fs: float, frequency_hz: float) -> np.float32:
  """The fractional channel whose pole is ``frequency_hz`` (0 = the first pole)."""
  pole0 = _F32(car_params.first_pole_theta) * _F32(fs) / _F32(2 * math.pi)
  break_freq = _F32(car_params.erb_break_freq)
  ratio = _F32(1) - _F32(car_params.erb_per_step) / _F32(car_params.erb_q)
  frequency = min(max(_F32(frequency_hz), _F32(car_params.min_pole_hz)), pole0)
  return _F32(np.log(_F32((frequency + break_freq) / (pole0 + break_freq))) / np.log(ratio))


def _zero_lag_mask(poles: np.ndarray, fs: float, sai: SaiHypers) -> np.ndarray:
  """Zeroes, per channel, the lags within half a pole period of zero lag."""
  mask = np.ones((sai.num_channels, sai.sai_width))
  center = sai.sai_width - sai.future_lags
  last = sai.sai_width - 1
  for channel, pole in enumerate(poles[: sai.num_channels]):
    half_cycle = _F32(0.5) * _F32(fs) / pole
    start = min(max(int(np.floor(_F32(center) - half_cycle)), 0), last)
    end = min(max(int(np.ceil(_F32(center) + half_cycle)), 0), last)
    mask[channel, start : end + 1] = 0
  return mask


def _round_half_away(value: np.float32) -> int:
  """C's round() of a non-negative value: halves go up (numpy's round goes to even)."""
  floor = math.floor(float(value))
  return floor + 1 if float(value) - floor >= 0.5 else floor


@dataclasses.dataclass(frozen=True)
class _Cell:
  """A box average of the lag profile: end samples part-weighted, interior ones fully."""

  left_index: int
  right_index: int
  left_weight: np.float32
  interior_weight: np.float32
  right_weight: np.float32

  @classmethod
  def spanning(cls, left_edge: float, right_edge: float) -> _Cell:
    """The cell over [left_edge, right_edge] lags, widened to at least one lag."""
    left, right = _F32(left_edge), _F32(right_edge)
    width = right - left
    if width < 1:
      grow = _F32(0.5) * (_F32(1) - width)
      left, right = left - grow, right + grow
    left, right = max(_F32(0), left), max(_F32(0), right)
    width = right - left
    left_index, right_index = _round_half_away(left), _round_half_away(right)
    if right_index > left_index and width > _F32(0.999):
      return cls(
        left_index,
        right_index,
        (_F32(0.5) - (left - _F32(left_index))) / width,
        _F32(1) / width,
        (_F32(0.5) + (right - _F32(right_index))) / width,
      )
    return cls(left_index, right_index, _F32(1), _F32(0), _F32(0))

  def weights(self, sai_width: int) -> np.ndarray:
    """The cell as a column of weights over the sai_width lags."""
    column = np.zeros(sai_width)
    column[self.left_index + 1 : self.right_index] = self.interior_weight
    column[self.right_index] = self.right_weight
    column[self.left_index] = self.left_weight
    return column


def _log_lag_resampling(params: PitchogramDesignParameters, fs: float, sai_width: int) -> tuple[np.ndarray, np.ndarray]:
  """The (sai_width, n_lags) weights of every log-lag cell that fits in the frame,
  and each cell's centre lag in samples.

  Cell i spans (L0 + O) 2^(i / lags_per_octave) - O to the next edge, in lags,
  with L0 = min_lag_s fs and O = log_offset_s fs; cells stop before one
  reaches the frame's last lag. The edges recur in float64, as in the C++.
  """
  spacing = 2.0 ** (1.0 / float(_F32(params.lags_per_octave)))
  log_offset = float(_F32(fs) * _F32(params.log_offset_s))
  left = float(_F32(fs) * _F32(params.min_lag_s))
  columns, centres = [], []
  while True:
    right = (left + log_offset) * spacing - log_offset
    cell = _Cell.spanning(left, right)
    if cell.right_index >= sai_width:
      break
    columns.append(cell.weights(sai_width))
    centres.append((left + right) / 2)
    left = right
  return np.stack(columns, axis=1), np.array(centres)


def _vowel_matrix(car_params: car.CarDesignParameters, fs: float, num_channels: int) -> np.ndarray:
  """Rows that extract F2 and F1 as differences of two Gaussians over channels."""
  channels = np.arange(num_channels, dtype=_F32)

  def kernel(center: np.float32) -> np.ndarray:
    z = (channels - center) / _F32(3.3)
    return np.exp((z * z) / _F32(-2))

  def index(hz: float) -> np.float32:
    return frequency_to_channel_index(car_params, fs, hz)

  rows = np.stack(
    [
      kernel(index(1100)) - kernel(index(2365)),
      kernel(index(265)) - kernel(index(700)),
    ]
  )
  return (rows * (_F32(car_params.erb_per_step) / _F32(2))).astype(np.float64)


def design_and_init_pitchogram(
  fs: float,
  car_params: car.CarDesignParameters,
  sai: SaiHypers,
  params: PitchogramDesignParameters | None = None,
  dtype=None,
) -> tuple[PitchogramHypers, PitchogramState]:
  """Designs the pitchogram for a CARFAC ear (``car_params``) and its SAI."""
  params = PitchogramDesignParameters() if params is None else params
  poles = pole_frequencies_f32(car_params, fs)
  if len(poles) != sai.num_channels:
    raise ValueError(f"the SAI has {sai.num_channels} channels but the CAR design has {len(poles)}")
  if params.log_lag and sai.future_lags != sai.sai_width - 1:
    raise ValueError(
      "a log-lag pitchogram needs an SAI with future_lags = sai_width - 1, "
      f"got future_lags {sai.future_lags} and sai_width {sai.sai_width}"
    )
  frame_rate_hz = _F32(fs) / _F32(sai.input_segment_width)
  smoother = _F32(1) - np.exp(_F32(-1) / (_F32(params.vowel_time_constant_s) * frame_rate_hz))
  if params.log_lag:
    resampling, lags = _log_lag_resampling(params, fs, sai.sai_width)
  else:  # SAI column j is the NAP j - (sai_width - 1 - future_lags) samples after the trigger
    resampling, lags = None, np.arange(sai.sai_width) - (sai.sai_width - 1 - sai.future_lags)
  hypers = PitchogramHypers(
    mask=frozen_array(_zero_lag_mask(poles, fs, sai)),
    resampling=None if resampling is None else frozen_array(resampling),
    vowel_matrix=frozen_array(_vowel_matrix(car_params, fs, sai.num_channels)),
    lags_s=frozen_array(lags / fs),
    cgram_smoother=float(smoother),
    light_color_theme=bool(params.light_color_theme),
  )
  dtype = default_float_dtype() if dtype is None else np.dtype(dtype)
  return hypers, PitchogramState(cgram=jnp.zeros((sai.num_channels,), dtype))


def _masked_channel_mean(frame: jax.Array, mask: jax.Array) -> jax.Array:
  """The mean over channels of ``frame * mask``, both (n_ch, width).

  Summed one channel's row at a time: XLA:CPU runs these row additions 5x
  faster than one reduction over the channel axis of the masked frame
  (0.40 against 2.1 ms for 32 streams' 71 x 1103 frames, measured).
  """
  total = frame[0] * mask[0]
  for channel in range(1, frame.shape[0]):
    total = total + frame[channel] * mask[channel]
  return total / frame.shape[0]


def run_pitchogram_frame(sai_frame: jax.Array, hypers: PitchogramHypers) -> jax.Array:
  """The lag profile (n_lags,) of one SAI frame (n_ch, sai_width); stateless."""
  dtype = sai_frame.dtype
  profile = _masked_channel_mean(sai_frame, jnp.asarray(hypers.mask, dtype))
  if hypers.resampling is None:
    return profile
  return profile @ jnp.asarray(hypers.resampling, dtype)


def vowel_embedding(
  nap_segment: jax.Array, hypers: PitchogramHypers, state: PitchogramState, channels_first: bool = False
) -> tuple[jax.Array, PitchogramState]:
  """The 2-D vowel coordinates after a NAP segment (n_samples, n_ch) of one ear
  (``channels_first``: (n_ch, n_samples)).

  Element 0 is the F2 row, element 1 the F1 row, as in the reference.
  """
  cgram = state.cgram
  mean = jnp.mean(nap_segment.astype(cgram.dtype), axis=1 if channels_first else 0)
  cgram = cgram + hypers.cgram_smoother * (mean - cgram)
  coords = jnp.asarray(hypers.vowel_matrix, cgram.dtype) @ cgram
  return coords, PitchogramState(cgram=cgram)


def column_rgb(lag_profile: np.ndarray, vowel_coords: np.ndarray, light_color_theme: bool = False) -> np.ndarray:
  """One pitchogram image column, uint8 (n_lags, 3), tinted by the vowel coordinates.

  The tint maps (0, 0) near grey, and its saturation and hue follow the
  coordinates' norm and angle; a lag's brightness is its profile value. Dark
  theme: tint * value on black; light theme: 255 - tint * value on white.
  Values are clipped to [0, 255] and truncated, in float32, as the C++ does.
  """
  v = np.asarray(vowel_coords, dtype=_F32)
  tint = np.array(
    [_F32(0.5) - _F32(0.6) * v[1], _F32(0.5) - _F32(0.6) * v[0], _F32(0.35) * (v[0] + v[1]) + _F32(0.4)],
    dtype=_F32,
  ) * _F32(0.5 * 255)
  shade = np.asarray(lag_profile, dtype=_F32)[:, None] * tint[None, :]
  if light_color_theme:
    shade = _F32(255) - shade
  return np.clip(shade, 0, 255).astype(np.uint8)


@dataclasses.dataclass
class PitchogramPipelineParams:
  """The reference pipeline's parameters (``PitchogramPipelineParams``), its defaults."""

  num_frames: int = 400  # image width: columns kept, one per segment
  num_samples_per_segment: int = 256  # audio samples per SAI frame
  highest_pole_hz: float = 7000.0  # CARFAC's first pole
  max_lag_s: float = 0.05  # the SAI's widest lag
  num_triggers_per_frame: int = 2
  pitchogram_params: PitchogramDesignParameters = dataclasses.field(default_factory=PitchogramDesignParameters)


def pipeline_carfac_params(sample_rate_hz: float, highest_pole_hz: float = 7000.0) -> CarfacDesignParameters:
  """The CARFAC of the reference pipeline: one ear, first pole at highest_pole_hz.

  The reference pipeline runs the C++ CARFAC, a v1 model: the one-capacitor
  IHC and the exact stage gain when the AGC loop closes (see
  ``../shared/oracle_sai/README.md``). Its first pole angle is stored in
  float32, as there.
  """
  params = CarfacDesignParameters(fs=sample_rate_hz, n_ears=1)
  ear_params = params.ears[0]
  ear_params.car.first_pole_theta = float(
    _F32(2 * math.pi * float(_F32(highest_pole_hz)) / float(_F32(sample_rate_hz)))
  )
  ear_params.car.exact_stage_gain = True
  ear_params.ihc.ihc_style = "one_cap"
  return params


def _round_lag(max_lag_s: float, sample_rate_hz: float) -> int:
  """round(max_lag_s * fs) in float32, halves away from zero, as the C++ sizes the SAI."""
  return _round_half_away(_F32(max_lag_s) * _F32(sample_rate_hz))


def design_and_init_pitchogram_stages(
  sample_rate_hz: float,
  car_params: car.CarDesignParameters,
  params: PitchogramPipelineParams,
  dtype=None,
) -> tuple[tuple[SaiHypers, PitchogramHypers], tuple[SaiState, PitchogramState]]:
  """The SAI and pitchogram of the reference pipeline, after an ear of ``car_params``.

  As the C++ pipeline sizes them: one SAI frame per segment of
  ``num_samples_per_segment`` samples, trigger windows one sample wider,
  lags up to ``max_lag_s`` (all of them future lags, as the log-lag
  pitchogram needs), the C++ SAI (``cpp_compatible``). Returns
  ``((sai_hypers, pitchogram_hypers), (sai_state, pitchogram_state))``.
  """
  sai_width = _round_lag(params.max_lag_s, sample_rate_hz)
  sai_hypers, sai_state = design_and_init_sai(
    SaiDesignParameters(
      num_channels=len(car.design_pole_frequencies(car_params, sample_rate_hz)),
      sai_width=sai_width,
      future_lags=sai_width - 1,
      num_triggers_per_frame=params.num_triggers_per_frame,
      trigger_window_width=params.num_samples_per_segment + 1,
      input_segment_width=params.num_samples_per_segment,
      cpp_compatible=True,
    ),
    dtype,
  )
  pitchogram_hypers, pitchogram_state = design_and_init_pitchogram(
    sample_rate_hz, car_params, sai_hypers, params.pitchogram_params, dtype
  )
  return (sai_hypers, pitchogram_hypers), (sai_state, pitchogram_state)


@static_dataclass
class PitchogramPipelineHypers:
  """The three stages' static designs: CARFAC, SAI and pitchogram."""

  carfac: CarfacHypers
  sai: SaiHypers
  pitchogram: PitchogramHypers


@pytree_dataclass
class PitchogramPipelineState:
  """The three stages' states."""

  carfac: CarfacState
  sai: SaiState
  pitchogram: PitchogramState


class PipelineFrame(NamedTuple):
  """What one segment of audio gives: its NAP and the pictures made from it."""

  nap: jax.Array  # (num_samples_per_segment, n_ch)
  sai_frame: jax.Array  # (n_ch, sai_width)
  lag_profile: jax.Array  # (n_lags,), the pitchogram column
  vowel_coords: jax.Array  # (2,): F2 row, F1 row


def run_pitchogram_segment(
  nap_segment: jax.Array,
  sai_hypers: SaiHypers,
  pitchogram_hypers: PitchogramHypers,
  sai_state: SaiState,
  pitchogram_state: PitchogramState,
  advance: jax.Array | bool = True,
  channels_first: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array, SaiState, PitchogramState]:
  """SAI frame, lag profile and vowel coordinates of one ear's NAP segment.

  Returns ``(sai_frame, lag_profile, vowel_coords, sai_state,
  pitchogram_state)``; pure and vmappable over streams. ``advance``: see
  ``run_sai_segment`` (where false, both states come back unchanged);
  ``channels_first``: the segment is (n_ch, n_samples), as there.
  """
  frame, sai_state = run_sai_segment(nap_segment, sai_hypers, sai_state, advance, channels_first)
  coords, new_pitchogram_state = vowel_embedding(nap_segment, pitchogram_hypers, pitchogram_state, channels_first)
  if advance is not True:
    cgram = jnp.where(advance, new_pitchogram_state.cgram, pitchogram_state.cgram)
    new_pitchogram_state = PitchogramState(cgram=cgram)
  return frame, run_pitchogram_frame(frame, pitchogram_hypers), coords, sai_state, new_pitchogram_state


def run_pipeline_segment(
  samples: jax.Array,
  hypers: PitchogramPipelineHypers,
  weights: CarfacWeights,
  state: PitchogramPipelineState,
) -> tuple[PipelineFrame, PitchogramPipelineState]:
  """CARFAC, SAI and pitchogram over one segment of mono audio (closed loop)."""
  seg, carfac_state = run_segment_outputs(samples, hypers.carfac, weights, state.carfac)
  nap = seg["naps"][:, :, 0]
  frame, profile, coords, sai_state, pitchogram_state = run_pitchogram_segment(
    nap, hypers.sai, hypers.pitchogram, state.sai, state.pitchogram
  )
  return PipelineFrame(nap, frame, profile, coords), PitchogramPipelineState(carfac_state, sai_state, pitchogram_state)


_run_pipeline_segment_jit = jax.jit(run_pipeline_segment, static_argnames="hypers", donate_argnames="state")


class PitchogramPipeline:
  """CARFAC -> SAI -> pitchogram on a stream of mono audio, with its scrolling image.

  The Python counterpart of the reference's C++ ``PitchogramPipeline``. Feed
  it one segment at a time with ``process_samples``; after each, the latest
  ``nap``, ``sai_frame``, ``lag_profile`` and ``vowel_coords`` are there, and
  ``image`` (uint8, (num_lags, num_frames, 3)) has scrolled one column left,
  with the new column on the right: one row per lag cell (row 0 the shortest
  lag), on a black (or, with ``light_color_theme``, white) background.

  ``carfac_params`` replaces the reference pipeline's CARFAC (one ear); by
  default it is ``pipeline_carfac_params``. The SAI follows the C++ one
  (``cpp_compatible``), as the pipeline it mirrors does.
  """

  def __init__(
    self,
    sample_rate_hz: float,
    params: PitchogramPipelineParams | None = None,
    carfac_params: CarfacDesignParameters | None = None,
    dtype=None,
  ):
    if not sample_rate_hz > 0:
      raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    self.params = PitchogramPipelineParams() if params is None else params
    p = self.params
    if carfac_params is None:
      carfac_params = pipeline_carfac_params(sample_rate_hz, p.highest_pole_hz)
    if carfac_params.n_ears != 1:
      raise ValueError(f"the pitchogram pipeline is mono, got {carfac_params.n_ears} ears")
    self.sample_rate_hz = float(sample_rate_hz)
    dtype = default_float_dtype() if dtype is None else np.dtype(dtype)
    carfac_hypers, self._weights, carfac_state = design_and_init_carfac(carfac_params, dtype=dtype)
    (sai_hypers, pitchogram_hypers), (sai_state, pitchogram_state) = design_and_init_pitchogram_stages(
      sample_rate_hz, carfac_params.ears[0].car, p, dtype
    )
    self._hypers = PitchogramPipelineHypers(carfac_hypers, sai_hypers, pitchogram_hypers)
    self._state = PitchogramPipelineState(carfac_state, sai_state, pitchogram_state)
    self.pole_frequencies = pole_frequencies_f32(carfac_params.ears[0].car, sample_rate_hz)
    self.frame: PipelineFrame | None = None
    background = 255 if p.pitchogram_params.light_color_theme else 0
    self.image = np.full((pitchogram_hypers.num_lags, p.num_frames, 3), background, np.uint8)

  @property
  def num_samples_per_segment(self) -> int:
    return self.params.num_samples_per_segment

  @property
  def num_lags(self) -> int:
    return self._hypers.pitchogram.num_lags

  @property
  def lags_s(self) -> np.ndarray:
    """The lag of each image row (lag cell), in seconds."""
    return self._hypers.pitchogram.lags_s

  def process_samples(self, samples: np.ndarray) -> PipelineFrame:
    """Runs one segment (num_samples_per_segment finite float samples); returns its frame."""
    samples = np.asarray(samples)
    expected = (self.num_samples_per_segment,)
    if samples.shape != expected or not np.issubdtype(samples.dtype, np.floating):
      raise ValueError(f"process_samples takes a float array of shape {expected}, got {samples.dtype} {samples.shape}")
    if count_non_finite(samples):  # rejected before running, the state untouched (README, "Bad input")
      raise ValueError("process_samples: the samples must be finite (no NaN or Inf)")
    frame, self._state = _run_pipeline_segment_jit(samples, self._hypers, self._weights, self._state)
    self.frame = PipelineFrame(*(np.asarray(x) for x in frame))
    self.image[:, :-1] = self.image[:, 1:]
    self.image[:, -1] = column_rgb(
      self.frame.lag_profile, self.frame.vowel_coords, self._hypers.pitchogram.light_color_theme
    )
    return self.frame
