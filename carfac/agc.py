"""AGC: the automatic gain control, a cascade of decimated smoothing stages.

The NAP, scaled by ``detect_scale``, is accumulated into stage 0, which updates
every ``decimation[0]`` samples; stage s updates every ``decimation[s]``
updates of stage s-1. When stage s updates it takes its accumulated input
in_s (the mean since its last update), passes in_s on to stage s+1 (which may
then update first), adds ``agc_stage_gain`` times stage s+1's memory, and moves
its memory m_s towards that by ``agc_epsilon``:

    m_s <- smooth_s(m_s + eps_s (in_s + G m_{s+1} - m_s)).

smooth_s is a spatial FIR across channels, 3 or 5 taps (outer taps of the 5-tap
filter are duplicated), applied ``agc_spatial_iterations`` times, with the
design's edge rules. Stage 0's memory is the extra damping fed back to the CAR.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from carfac._dataclasses import as_leaf, pytree_dataclass, static_dataclass

_MAX_SPATIAL_ITERATIONS = 16


@dataclasses.dataclass
class AgcDesignParameters:
  """User-set AGC parameters; per-stage sequences have ``n_stages`` entries."""

  n_stages: int = 4
  time_constants: np.ndarray = dataclasses.field(default_factory=lambda: 0.002 * 4 ** np.arange(4))  # seconds
  agc_stage_gain: float = 2.0  # gain from each stage to the next faster one
  decimation: tuple[int, ...] = (8, 2, 2, 2)
  agc1_scales: np.ndarray = dataclasses.field(
    default_factory=lambda: 1.0 * np.sqrt(2) ** np.arange(4)
  )  # spatial spread towards the apex, in channels
  agc2_scales: np.ndarray = dataclasses.field(
    default_factory=lambda: 1.65 * math.sqrt(2) ** np.arange(4)
  )  # spread towards the base
  agc_mix_coeffs: float = 0.5  # binaural mixing


@static_dataclass
class AgcHypers:
  """Static design of one AGC stage."""

  n_ch: int
  n_agc_stages: int
  decimation: int
  agc_spatial_iterations: int
  agc_spatial_n_taps: int  # 3 or 5


@pytree_dataclass
class AgcWeights:
  """Coefficients of one AGC stage."""

  agc_epsilon: jax.Array
  agc_stage_gain: jax.Array
  agc_spatial_fir: jax.Array  # (3,): [apex-side, centre, base-side]
  detect_scale: jax.Array  # 1 / total DC gain on stage 0, 1 elsewhere
  agc_mix_coeffs: jax.Array  # binaural mixing per update; 0 on stage 0


@pytree_dataclass
class AgcState:
  """State of one AGC stage."""

  decim_phase: jax.Array  # int32 scalar; the stage updates when it wraps to 0
  agc_memory: jax.Array  # (n_ch,)
  input_accum: jax.Array  # (n_ch,)


def design_fir_coeffs(n_taps: int, delay_variance: float, mean_delay: float, n_iter: int) -> tuple[list[float], bool]:
  """Spatial FIR matching a target spread (variance) and delay (mean).

  Moment matching, per iteration: [a, 1-a-b, b] for 3 taps, or
  [a/2, a/2, 1-a-b, b/2, b/2] (stored as [a/2, 1-a-b, b/2]) for 5 taps.
  Returns the 3 stored coefficients and whether the centre tap is large enough
  for a well-behaved smoother.
  """
  mean_delay = mean_delay / n_iter
  delay_variance = delay_variance / n_iter
  moment2 = delay_variance + mean_delay * mean_delay
  if n_taps == 3:
    a = (moment2 - mean_delay) / 2
    b = (moment2 + mean_delay) / 2
    fir = [a, 1 - a - b, b]
    return fir, fir[1] >= 0.25
  if n_taps == 5:
    a = (moment2 * 2 / 5 - mean_delay * 2 / 3) / 2
    b = (moment2 * 2 / 5 + mean_delay * 2 / 3) / 2
    fir = [a / 2, 1 - a - b, b / 2]
    return fir, fir[1] >= 0.15
  raise ValueError(f"n_taps must be 3 or 5, got {n_taps}")


def _search_fir(spread_sq: float, delay: float) -> tuple[list[float], int, int]:
  """Tries 3 taps once, then 5 taps with 1, 2, ... 16 iterations."""
  fir, ok = design_fir_coeffs(3, spread_sq, delay, 1)
  if ok:
    return fir, 3, 1
  for n_iter in range(1, _MAX_SPATIAL_ITERATIONS + 1):
    fir, ok = design_fir_coeffs(5, spread_sq, delay, n_iter)
    if ok:
      return fir, 5, n_iter
  raise ValueError(
    f"AGC spatial smoothing needs more than {_MAX_SPATIAL_ITERATIONS} iterations; use less spread or decimation"
  )


def _validate(params: AgcDesignParameters) -> None:
  n = params.n_stages
  for name in ("time_constants", "decimation", "agc1_scales", "agc2_scales"):
    if len(getattr(params, name)) < n:
      raise ValueError(f"AgcDesignParameters.{name} needs {n} entries")
  if n < 1 or any(int(d) < 1 for d in params.decimation[:n]):
    raise ValueError("AGC needs n_stages >= 1 and every decimation >= 1")


def design_and_init_agc(
  params: AgcDesignParameters, fs: float, n_ch: int, dtype
) -> tuple[tuple[AgcHypers, ...], list[AgcWeights], list[AgcState]]:
  """Designs every AGC stage of one ear and returns their zero state."""
  _validate(params)
  n_stages = params.n_stages
  hypers, weights, states = [], [], []
  decim = 1
  total_dc_gain = 0.0
  for stage in range(n_stages):
    tau = params.time_constants[stage]
    decim = decim * params.decimation[stage]
    ntimes = tau * (fs / decim)  # smoothing updates per time constant
    delay = (params.agc2_scales[stage] - params.agc1_scales[stage]) / ntimes
    spread_sq = (params.agc1_scales[stage] ** 2 + params.agc2_scales[stage] ** 2) / ntimes
    fir, n_taps, n_iter = _search_fir(spread_sq, delay)
    total_dc_gain = total_dc_gain + params.agc_stage_gain**stage
    mix = 0.0 if stage == 0 else params.agc_mix_coeffs / ntimes
    hypers.append(
      AgcHypers(
        n_ch=n_ch,
        n_agc_stages=n_stages,
        decimation=int(params.decimation[stage]),
        agc_spatial_iterations=n_iter,
        agc_spatial_n_taps=n_taps,
      )
    )
    weights.append(
      dict(
        agc_epsilon=1 - math.exp(-decim / (tau * fs)),
        agc_stage_gain=params.agc_stage_gain,
        agc_spatial_fir=fir,
        detect_scale=1.0,
        agc_mix_coeffs=mix,
      )
    )
    states.append(
      AgcState(
        decim_phase=jnp.asarray(0, jnp.int32),
        agc_memory=as_leaf(np.zeros(n_ch), dtype),
        input_accum=as_leaf(np.zeros(n_ch), dtype),
      )
    )
  weights[0]["detect_scale"] = 1 / total_dc_gain
  weights = [AgcWeights(**{k: as_leaf(v, dtype) for k, v in w.items()}) for w in weights]
  return tuple(hypers), weights, states


def _shift_towards_apex(m: jax.Array, k: int) -> jax.Array:
  """out[i] = m[i - k] (neighbour k channels basal); edges as the reference.

  k = 1 replicates m[0]; k = 2 gives [m0, m1, m0, m1, m2, ...].
  """
  return jnp.concatenate([m[:k], m[:-k]])


def _shift_towards_base(m: jax.Array, k: int) -> jax.Array:
  """out[i] = m[i + k]; k = 1 replicates the last value, k = 2 ends [.., m_{n-1}, m_{n-2}]."""
  return jnp.concatenate([m[k:], m[::-1][:k]])


def spatial_smooth(hypers: AgcHypers, weights: AgcWeights, memory: jax.Array) -> jax.Array:
  """Applies the stage's spatial FIR ``agc_spatial_iterations`` times."""
  f0, f1, f2 = (weights.agc_spatial_fir[i] for i in range(3))
  m = memory
  for _ in range(hypers.agc_spatial_iterations):
    if hypers.agc_spatial_n_taps == 3:
      m = f0 * _shift_towards_apex(m, 1) + f1 * m + f2 * _shift_towards_base(m, 1)
    else:
      m = (
        f0 * (_shift_towards_apex(m, 2) + _shift_towards_apex(m, 1))
        + f1 * m
        + f2 * (_shift_towards_base(m, 1) + _shift_towards_base(m, 2))
      )
  return m


def accumulate_input(
  detects: jax.Array,
  hypers: Sequence[AgcHypers],
  weights: Sequence[AgcWeights],
  states: list[AgcState],
) -> tuple[jax.Array, list[AgcState]]:
  """Adds one sample's NAP to stage 0; returns (stage 0 updates now, states).

  The decimated update itself is ``update_stages``, run only when stage 0's
  phase wraps to 0.
  """
  s0 = states[0]
  phase = (s0.decim_phase + 1) % hypers[0].decimation
  s0 = AgcState(
    decim_phase=phase,
    agc_memory=s0.agc_memory,
    input_accum=s0.input_accum + weights[0].detect_scale * detects,
  )
  return phase == 0, [s0, *states[1:]]


def update_stages(
  hypers: Sequence[AgcHypers],
  weights: Sequence[AgcWeights],
  states: list[AgcState],
  n_firing: int | None = None,
) -> list[AgcState]:
  """The decimated update, starting at stage 0 (whose phase just wrapped).

  A slower stage whose phase wraps updates first, so its new memory feeds the
  faster one, as in the reference recursion. Whether it wraps is decided
  inside a ``lax.cond``, or, where the caller knows it, by ``n_firing``: the
  number of stages that update now, from ``firing_schedule`` (no branch).
  """
  states = list(states)

  def fire(stage: int, states: list[AgcState]) -> list[AgcState]:
    states = list(states)
    st, w = states[stage], weights[stage]
    stage_in = st.input_accum / hypers[stage].decimation
    if stage + 1 < len(hypers):
      nxt = states[stage + 1]
      nxt_phase = (nxt.decim_phase + 1) % hypers[stage + 1].decimation
      states[stage + 1] = AgcState(
        decim_phase=nxt_phase,
        agc_memory=nxt.agc_memory,
        input_accum=nxt.input_accum + stage_in,
      )
      if n_firing is not None:
        if stage + 1 < n_firing:
          states = fire(stage + 1, states)
      elif hypers[stage + 1].decimation == 1:
        states = fire(stage + 1, states)
      else:
        states = jax.lax.cond(nxt_phase == 0, lambda s: fire(stage + 1, s), list, states)
      stage_in = stage_in + w.agc_stage_gain * states[stage + 1].agc_memory
    memory = st.agc_memory + w.agc_epsilon * (stage_in - st.agc_memory)
    states[stage] = AgcState(
      decim_phase=st.decim_phase,
      agc_memory=spatial_smooth(hypers[stage], w, memory),
      input_accum=jnp.zeros_like(st.input_accum),
    )
    return states

  return fire(0, states)


def firing_schedule(hypers: Sequence[AgcHypers]) -> tuple[int, ...]:
  """How many stages update at each stage-0 update of one whole AGC period.

  From every phase at 0, stage s > 0 updates at the k-th stage-0 update
  (k = 1, 2, ...) when k is a multiple of ``decimation[1] * ... *
  decimation[s]``, and then so have all faster stages. The period is that
  product over every stage after the first; all phases are back at 0 at its
  end. Entry ``k - 1`` is the count for the k-th update.
  """
  spans = np.cumprod([1] + [h.decimation for h in hypers[1:]])
  return tuple(int(sum((k + 1) % span == 0 for span in spans)) for k in range(int(spans[-1])))


def agc_step(
  detects: jax.Array,
  hypers: Sequence[AgcHypers],
  weights: Sequence[AgcWeights],
  states: list[AgcState],
) -> tuple[jax.Array, list[AgcState]]:
  """One input sample of the AGC of one ear; returns (updated, new states)."""
  updated, states = accumulate_input(detects, hypers, weights, states)
  states = jax.lax.cond(updated, lambda s: update_stages(hypers, weights, s), list, states)
  return updated, states
