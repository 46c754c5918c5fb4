"""SAI: the stabilized auditory image of one ear's NAP, one frame per segment.

Each call consumes a fixed-length segment of NAP (time-major, as
``run_segment`` returns it), appends it to a per-channel input buffer and
blends ``num_triggers_per_frame`` 50%-overlapping "trigger windows" of that
buffer into a persistent frame. Per channel and window, the trigger is the
largest sample of the NAP times a sine window (the window's own peak when the
windowed NAP has no positive sample); the ``sai_width`` samples that start
``future_lags`` before the trigger are blended into the frame with weight
alpha = (0.025 + peak) / (0.5 + peak), so strong triggers replace the frame
and weak ones nudge it. Column j of the frame is lag j - future_lags (column
``future_lags`` is the trigger itself): a sparse, running autocorrelation in
which a periodic sound stands still.

The reference has two implementations that differ (see
``../shared/oracle_sai/README.md``). By default this follows the numpy one
(``python/src/carfac/sai.py``, which matches Matlab). With
``cpp_compatible=True`` it follows ``cpp/sai.cc``, which the reference's
pitchogram pipeline uses: for an odd ``trigger_window_width`` the C++ hop is
a float (width / 2) and the window start and offsets are truncated from it,
and its sine window is computed in float32 (its last element, sin(float(pi)),
is -8.7e-8 instead of +1.2e-16, which decides whether an all-negative window
falls back to the window's centre).

Unlike the numpy reference, ``trigger_window_width`` may be narrower than
``sai_width`` (the pitchogram pipeline uses 257 and 1103, as the C++ allows):
the buffer always holds a full frame before the first window, so every index
stays in bounds.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from carfac._dataclasses import (
  default_float_dtype,
  frozen_array,
  pytree_dataclass,
  static_dataclass,
)


@dataclasses.dataclass
class SaiDesignParameters:
  """User-set SAI parameters (the reference's ``SAIParams``).

  The defaults are the reference pitchogram pipeline's SAI for this project's
  default CARFAC (22050 Hz, 71 channels): 256-sample segments, lags up to
  50 ms (1103 samples, all of them "future" lags, as the log-lag pitchogram
  needs) and two trigger windows of 257 samples per frame.
  """

  num_channels: int = 71  # rows of a frame: the CARFAC's channels
  sai_width: int = 1103  # columns of a frame: lags
  future_lags: int = 1102  # columns at lags >= 0 come after this many
  num_triggers_per_frame: int = 2  # trigger windows blended per frame
  trigger_window_width: int = 257  # samples searched for each trigger
  input_segment_width: int = 256  # NAP samples per call (the frame hop)
  cpp_compatible: bool = False  # follow cpp/sai.cc instead of the numpy SAI


@static_dataclass
class SaiHypers:
  """Static SAI design: sizes, the trigger window and where windows sit."""

  num_channels: int
  sai_width: int
  future_lags: int
  input_segment_width: int
  trigger_window_width: int
  buffer_width: int  # NAP samples kept per channel
  window_offsets: tuple[int, ...]  # start of each trigger window after the first
  window_range_start: int  # buffer index where the first trigger window starts
  offset_range_start: int  # buffer index of lag column 0 for a trigger at 0
  window: np.ndarray  # (trigger_window_width,) sine window

  @property
  def ring_width(self) -> int:
    """The buffer rounded up to whole segments: the positions of the state's ring."""
    return -(-self.buffer_width // self.input_segment_width) * self.input_segment_width


@pytree_dataclass
class SaiState:
  """The NAP buffer, as a ring stored twice, and the running frame (n_ch, sai_width).

  The ring has ``ring_width`` positions (buffer_width rounded up to whole
  segments), and ``ring`` (n_ch, 2 * ring_width) holds each position p twice,
  at p and p + ring_width. A segment is written, twice, at ``write_at`` (a
  whole number of segments, so it never wraps), and the buffer's
  buffer_width samples are then one contiguous slice of ``ring``: each call
  writes its own samples instead of shifting the whole buffer as the
  reference does (a sixth of the memory traffic).
  """

  ring: jax.Array
  write_at: jax.Array  # int32 scalar: ring position of the next segment
  frame: jax.Array


def _buffer_width(params: SaiDesignParameters) -> int:
  """Room for every trigger window plus a full frame after the last trigger."""
  windows = 1 + (params.num_triggers_per_frame - 1) / 2
  if params.cpp_compatible:
    return params.sai_width + int(np.float32(windows) * np.float32(params.trigger_window_width))
  return params.sai_width + int(windows * params.trigger_window_width)


def _trigger_window(params: SaiDesignParameters) -> np.ndarray:
  """sin over (pi/W, ..., pi]: W samples, the last one at pi."""
  width = params.trigger_window_width
  if params.cpp_compatible:
    f32 = np.float32
    step = (f32(np.pi) - f32(np.pi / width)) / f32(max(width - 1, 1))
    phases = f32(np.pi / width) + np.arange(width, dtype=f32) * step
    phases[-1] = f32(np.pi)
    return np.sin(phases).astype(np.float64)
  return np.sin(np.linspace(np.pi / width, np.pi, width))


def _window_placement(params: SaiDesignParameters, buffer_width: int) -> tuple[int, tuple[int, ...]]:
  """The first window's start and every window's offset from it."""
  width, count = params.trigger_window_width, params.num_triggers_per_frame
  if params.cpp_compatible:
    hop = np.float32(width) / np.float32(2)
    start = int(np.float32(buffer_width - width) - np.float32(count - 1) * hop)
    offsets = tuple(int(np.float32(w) * hop) for w in range(count))
  else:
    hop = width // 2
    start = (buffer_width - width) - (count - 1) * hop
    offsets = tuple(w * hop for w in range(count))
  return start, offsets


def _check_positive(params: SaiDesignParameters) -> None:
  for name in (
    "num_channels",
    "sai_width",
    "num_triggers_per_frame",
    "trigger_window_width",
    "input_segment_width",
  ):
    value = getattr(params, name)
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"SaiDesignParameters.{name} must be a positive integer, got {value!r}")
  if not 0 <= params.future_lags < params.sai_width:
    raise ValueError(
      f"SaiDesignParameters.future_lags must be in [0, sai_width={params.sai_width}), got {params.future_lags}"
    )


def design_sai(params: SaiDesignParameters) -> SaiHypers:
  """Designs the SAI; raises ValueError for parameters it cannot run."""
  _check_positive(params)
  buffer_width = _buffer_width(params)
  if params.input_segment_width > buffer_width:
    raise ValueError(
      f"input_segment_width {params.input_segment_width} exceeds the SAI buffer "
      f"({buffer_width} samples): some input would never be seen; use more "
      "or wider trigger windows"
    )
  # The buffer holds sai_width samples before the first window (less half a
  # sample in the C++ placement), so both starts below are >= 0 and the last
  # frame slice ends exactly at the buffer's end.
  window_start, offsets = _window_placement(params, buffer_width)
  return SaiHypers(
    num_channels=params.num_channels,
    sai_width=params.sai_width,
    future_lags=params.future_lags,
    input_segment_width=params.input_segment_width,
    trigger_window_width=params.trigger_window_width,
    buffer_width=buffer_width,
    window_offsets=offsets,
    window_range_start=window_start - params.future_lags,
    offset_range_start=1 + window_start - params.sai_width,
    window=frozen_array(_trigger_window(params)),
  )


def init_sai_state(hypers: SaiHypers, dtype=None) -> SaiState:
  """An all-zero buffer and frame (the reference's Reset)."""
  dtype = default_float_dtype() if dtype is None else np.dtype(dtype)
  return SaiState(
    ring=jnp.zeros((hypers.num_channels, 2 * hypers.ring_width), dtype),
    write_at=jnp.zeros((), jnp.int32),
    frame=jnp.zeros((hypers.num_channels, hypers.sai_width), dtype),
  )


def design_and_init_sai(params: SaiDesignParameters, dtype=None) -> tuple[SaiHypers, SaiState]:
  """The designed SAI and its initial state (float64 when x64 is on by default)."""
  hypers = design_sai(params)
  return hypers, init_sai_state(hypers, dtype)


def _rows_from(buffer: jax.Array, starts: jax.Array, width: int) -> jax.Array:
  """Row c of the result is buffer[c, starts[c] : starts[c] + width]."""
  return jax.vmap(lambda row, start: jax.lax.dynamic_slice_in_dim(row, start, width))(buffer, starts)


def _peak_and_first_index(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each row's maximum and the first column holding it (argmax's answer).

  A max and a min over a mask: XLA:CPU runs argmax's paired reduction 4x
  slower than these two plain ones.
  """
  peak = jnp.max(x, axis=1)
  columns = jnp.arange(x.shape[1], dtype=jnp.int32)
  return peak, jnp.min(jnp.where(x == peak[:, None], columns, x.shape[1] - 1), axis=1)


def _stabilize(ring: jax.Array, start: jax.Array, frame: jax.Array, hypers: SaiHypers, advance) -> jax.Array:
  """Blends the lagged NAP after each window's trigger into the frame.

  Buffer sample j of every channel is ``ring[:, start + j]``. Where
  ``advance`` is false the blend weight is 0, which leaves the frame exactly
  as it was (the NAP is finite).
  """
  window = jnp.asarray(hypers.window, ring.dtype)
  fallback_index = jnp.argmax(window)
  fallback_peak = window[fallback_index]
  width = hypers.trigger_window_width
  for offset in hypers.window_offsets:
    window_start = start + hypers.window_range_start + offset
    weighted = jax.lax.dynamic_slice_in_dim(ring, window_start, width, axis=1) * window
    peak, index = _peak_and_first_index(weighted)
    no_trigger = peak <= 0
    index = jnp.where(no_trigger, fallback_index, index)
    peak = jnp.where(no_trigger, fallback_peak, peak)
    alpha = ((0.025 + peak) / (0.5 + peak))[:, None]
    if advance is not True:
      alpha = jnp.where(advance, alpha, 0)
    lagged = _rows_from(ring, start + index + offset + hypers.offset_range_start, hypers.sai_width)
    frame = frame * (1 - alpha) + alpha * lagged
  return frame


def run_sai_segment(
  nap_segment: jax.Array,
  hypers: SaiHypers,
  state: SaiState,
  advance: jax.Array | bool = True,
  channels_first: bool = False,
) -> tuple[jax.Array, SaiState]:
  """One SAI frame from a NAP segment (input_segment_width, n_ch) of one ear.

  Pure and jittable (``hypers`` static); vmap it over streams. Returns the
  frame (n_ch, sai_width) and the new state, whose ``frame`` is the same
  array: the next call blends into it. ``advance``: a traced bool; where it
  is false the state comes back exactly unchanged (and so does the frame),
  so a batch can step only some of its streams without a select over every
  stream's whole state. ``channels_first``: the segment is (n_ch,
  input_segment_width) instead, the layout the SAI works in (a caller that
  has it saves a transpose).
  """
  expected = (hypers.input_segment_width, hypers.num_channels)
  if channels_first:
    expected = expected[::-1]
  if tuple(nap_segment.shape) != expected:
    layout = "(n_ch, input_segment_width)" if channels_first else "(input_segment_width, n_ch)"
    raise ValueError(f"nap_segment must be {layout} = {expected}, got {tuple(nap_segment.shape)}")
  dtype = state.frame.dtype
  fresh = jnp.asarray(nap_segment, dtype)
  if not channels_first:
    fresh = fresh.T
  ring_width, segment = hypers.ring_width, hypers.input_segment_width
  if advance is not True:
    kept = jax.lax.dynamic_slice_in_dim(state.ring, state.write_at, segment, axis=1)
    fresh = jnp.where(advance, fresh, kept)
  ring = jax.lax.dynamic_update_slice_in_dim(state.ring, fresh, state.write_at, axis=1)
  ring = jax.lax.dynamic_update_slice_in_dim(ring, fresh, state.write_at + ring_width, axis=1)
  written_to = state.write_at + segment  # the buffer ends here: its oldest sample is buffer_width before
  start = (written_to - hypers.buffer_width) % ring_width
  frame = _stabilize(ring, start, state.frame, hypers, advance)
  write_at = written_to % ring_width
  if advance is not True:
    write_at = jnp.where(advance, write_at, state.write_at)
  return frame, SaiState(ring=ring, write_at=write_at, frame=frame)


run_sai_segment_jit = jax.jit(run_sai_segment, static_argnums=1, static_argnames="channels_first")
