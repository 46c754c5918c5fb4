"""The whole model: design, and running segments of audio through all ears.

Per sample, each ear runs CAR -> IHC -> (SYN) and adds its NAP to AGC stage 0.
When stage 0 is due (every ``decimation[0]`` samples, all ears in lockstep),
the decimated AGC stages update, the ears' AGC memories are cross-coupled, and
unless ``open_loop`` the loop is closed: the CAR gets new undamping and stage
gain targets, reached by linear ramps over the next decimation period.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from carfac import agc, car, ear, ihc
from carfac._dataclasses import default_float_dtype, pytree_dataclass, static_dataclass
from carfac.time_loop import checkpointed_scan

#: Per-sample outputs ``run_segment_outputs`` can return.
OUTPUT_NAMES = ("naps", "naps_fibers", "bm", "seg_ohc", "seg_agc")
_SAMPLE_FIELD = {
  "naps": "nap",
  "naps_fibers": "fibers",
  "bm": "bm",
  "seg_ohc": "ohc",
  "seg_agc": "agc",
}


class CarfacDesignParameters:
  """Design parameters of the whole model: the sample rate and one set per ear.

  Edit the per-ear stage parameters in place, e.g.
  ``params.ears[0].ihc.ihc_style = 'one_cap'``; ``ihc_style`` (one of
  ``carfac.IHC_STYLE_NAMES``) sets every ear's at once.
  """

  def __init__(
    self,
    fs: float = 22050.0,
    n_ears: int = 1,
    use_delay_buffer: bool = False,
    ihc_style: str | None = None,
  ):
    if n_ears < 1:
      raise ValueError(f"n_ears must be >= 1, got {n_ears}")
    self.fs = float(fs)
    self.ears = [
      ear.EarDesignParameters(car=car.CarDesignParameters(use_delay_buffer=use_delay_buffer)) for _ in range(n_ears)
    ]
    if ihc_style is not None:
      for each in self.ears:
        each.ihc.ihc_style = ihc.check_ihc_style(ihc_style)

  @property
  def n_ears(self) -> int:
    return len(self.ears)

  def __repr__(self) -> str:
    return f"CarfacDesignParameters(fs={self.fs}, ears={self.ears!r})"


@static_dataclass
class CarfacHypers:
  """Static design of the model; hashes by value (a jit static argument)."""

  fs: float
  ears: tuple[ear.EarHypers, ...]

  @property
  def n_ears(self) -> int:
    return len(self.ears)


@pytree_dataclass
class CarfacWeights:
  ears: list[ear.EarWeights]


@pytree_dataclass
class CarfacState:
  ears: list[ear.EarState]


class SegmentOutput(NamedTuple):
  """``run_segment``'s result; unpacks into five values like the seed example.

  Arrays are time-major, (n_samp, n_ch, n_ears).
  """

  naps: jax.Array
  state: CarfacState
  bm: jax.Array
  seg_ohc: jax.Array
  seg_agc: jax.Array


class FullSegmentOutput(NamedTuple):
  """``run_segment_full``'s result, in the reference's six-value order.

  ``naps_fibers`` is (n_samp, n_ch, n_classes, n_ears): expected spikes per
  sample per fibre class (zeros when the synapse is off).
  """

  naps: jax.Array
  naps_fibers: jax.Array
  state: CarfacState
  bm: jax.Array
  seg_ohc: jax.Array
  seg_agc: jax.Array


def _check_ears_compatible(hypers: Sequence[ear.EarHypers]) -> None:
  """Ears are coupled channel by channel and updated in lockstep."""
  first = hypers[0]
  for e, h in enumerate(hypers[1:], start=1):
    if h.n_ch != first.n_ch:
      raise ValueError(
        f"ear {e} has {h.n_ch} channels but ear 0 has {first.n_ch}; binaural coupling needs equal channel counts"
      )
    if [a.decimation for a in h.agc] != [a.decimation for a in first.agc]:
      raise ValueError(
        f"ear {e} has AGC decimation {[a.decimation for a in h.agc]} but "
        f"ear 0 has {[a.decimation for a in first.agc]}; ears must match"
      )


def design_and_init_carfac(
  params: CarfacDesignParameters, dtype=None
) -> tuple[CarfacHypers, CarfacWeights, CarfacState]:
  """Designs every ear from its own parameters; returns (hypers, weights, state).

  ``dtype`` is the float type of weights and state: float64 when
  ``jax_enable_x64`` is on, float32 otherwise, unless given.
  """
  dtype = np.dtype(dtype) if dtype is not None else default_float_dtype()
  if dtype not in (np.float32, np.float64):
    raise ValueError(f"dtype must be float32 or float64, got {dtype}")
  designed = [ear.design_and_init_ear(p, params.fs, dtype) for p in params.ears]
  hypers = CarfacHypers(fs=params.fs, ears=tuple(d[0] for d in designed))
  _check_ears_compatible(hypers.ears)
  state = CarfacState(ears=[d[2] for d in designed])
  # Donation needs every state leaf in a buffer of its own.
  state = jax.tree.map(lambda leaf: jnp.array(leaf, copy=True), state)
  return hypers, CarfacWeights(ears=[d[1] for d in designed]), state


def cross_couple(hypers: CarfacHypers, weights: CarfacWeights, states: list[ear.EarState]) -> list[ear.EarState]:
  """Moves each ear's AGC memories towards the mean over ears.

  Only stages that have just updated (ear 0's phase is 0, stopping at the
  first that has not) are mixed; no effect with one ear.
  """
  n_ears = len(states)
  if n_ears < 2:
    return states
  states = [dataclasses.replace(s, agc=list(s.agc)) for s in states]
  active = True
  for stage in range(len(hypers.ears[0].agc)):
    active = jnp.logical_and(active, states[0].agc[stage].decim_phase == 0)
    mix = jnp.maximum(weights.ears[0].agc[stage].agc_mix_coeffs, 0.0)
    memories = [s.agc[stage].agc_memory for s in states]
    mean = sum(memories[1:], memories[0]) / n_ears
    for s, m in zip(states, memories):
      s.agc[stage] = dataclasses.replace(s.agc[stage], agc_memory=jnp.where(active, m + mix * (mean - m), m))
  return states


def close_agc_loop(hypers: CarfacHypers, weights: CarfacWeights, states: list[ear.EarState]) -> list[ear.EarState]:
  """Sets CAR ramps so undamping and stage gain reach the AGC's new targets.

  The targets are reached after ``decimation[0]`` samples, when the next
  stage-0 update arrives.
  """
  closed = []
  for h, w, s in zip(hypers.ears, weights.ears, states):
    decim = h.agc[0].decimation
    undamping = (1 - s.agc[0].agc_memory) * w.car.ohc_health
    target_g = car.target_stage_g(h.car, w.car, undamping)
    zr = jnp.asarray(h.car.zr_coeffs, undamping.dtype)
    car_s = dataclasses.replace(
      s.car,
      dzb_memory=(zr * undamping - s.car.zb_memory) / decim,
      dg_memory=(target_g - s.car.g_memory) / decim,
    )
    closed.append(dataclasses.replace(s, car=car_s))
  return closed


def require_float_input(input_waves) -> None:
  """Rejects integer (e.g. PCM) input: the model needs float audio."""
  input_dtype = np.dtype(getattr(input_waves, "dtype", np.float64))
  if not jnp.issubdtype(input_dtype, jnp.floating):
    raise ValueError(
      f"input_waves must be a float array (float32 or float64), got {input_dtype}; convert integer PCM to float first"
    )


def _validated_input(input_waves, hypers: CarfacHypers, dtype) -> jax.Array:
  """Checks rank, ear count and dtype; returns (n_samp, n_ears) of ``dtype``."""
  shape = np.shape(input_waves)
  require_float_input(input_waves)
  if len(shape) not in (1, 2):
    raise ValueError(f"input_waves must have shape (n_samp,) or (n_samp, n_ears), got {shape}")
  n_ears = 1 if len(shape) == 1 else shape[1]
  if n_ears != hypers.n_ears:
    raise ValueError(
      f"input_waves has {n_ears} ear(s) (shape {shape}) but the model was "
      f"designed for {hypers.n_ears}; expected shape (n_samp, {hypers.n_ears})"
    )
  return jnp.asarray(input_waves, dtype).reshape(shape[0], n_ears)


def state_dtype(state: CarfacState):
  """The float dtype the model state (and so the computation) is in."""
  return state.ears[0].car.z1_memory.dtype


def _open_loop_states(states: list[ear.EarState]) -> list[ear.EarState]:
  """Freezes the CAR ramps where they are (open loop: the AGC never feeds back)."""
  return [
    dataclasses.replace(
      s,
      car=dataclasses.replace(
        s.car,
        dzb_memory=jnp.zeros_like(s.car.dzb_memory),
        dg_memory=jnp.zeros_like(s.car.dg_memory),
      ),
    )
    for s in states
  ]


def _checked_outputs(outputs: Sequence[str]) -> tuple[str, ...]:
  outputs = tuple(outputs)
  unknown = set(outputs) - set(OUTPUT_NAMES)
  if unknown:
    raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {OUTPUT_NAMES}")
  return outputs


def ears_step(
  hypers: CarfacHypers,
  weights: CarfacWeights,
  states: list[ear.EarState],
  x_t: jax.Array,
  outputs: Sequence[str],
) -> tuple[list[ear.EarState], jax.Array, dict[str, jax.Array]]:
  """One sample through every ear, up to the AGC input accumulation.

  Returns (new states, whether the decimated AGC update is due, the requested
  per-sample outputs, each (n_ch, n_ears) or (n_ch, n_classes, n_ears)).
  The update itself is ``update_agc``; the ears' AGC phases move in lockstep.
  """
  samples, new_states, due = [], [], None
  for e, (h, w, s) in enumerate(zip(hypers.ears, weights.ears, states)):
    sample, ear_due, s = ear.ear_step(x_t[e], h, w, s)
    samples.append(sample)
    new_states.append(s)
    due = ear_due if due is None else due
  per_sample = {}
  for name in outputs:
    values = [getattr(smp, _SAMPLE_FIELD[name]) for smp in samples]
    if values[0] is None:  # fibres without a synapse
      n_classes = hypers.ears[0].syn.n_classes
      values = [jnp.zeros(smp.nap.shape + (n_classes,), smp.nap.dtype) for smp in samples]
    per_sample[name] = jnp.stack(values, axis=-1)
  return new_states, due, per_sample


def update_agc(
  hypers: CarfacHypers,
  weights: CarfacWeights,
  states: list[ear.EarState],
  open_loop: bool,
  n_firing: int | None = None,
) -> list[ear.EarState]:
  """The decimated work: AGC stages of every ear, coupling, loop closure.

  ``n_firing``: how many AGC stages update, where the caller knows it (see
  ``agc.firing_schedule``); by default decided from the phases.
  """
  states = [
    dataclasses.replace(s, agc=agc.update_stages(h.agc, w.agc, s.agc, n_firing))
    for h, w, s in zip(hypers.ears, weights.ears, states)
  ]
  states = cross_couple(hypers, weights, states)
  if not open_loop:
    states = close_agc_loop(hypers, weights, states)
  return states


#: The CAR state the decimated AGC update reads (zb, g) or writes (dzb, dg).
_CAR_FIELDS_FOR_AGC = ("zb_memory", "g_memory", "dzb_memory", "dg_memory")


def agc_view(states: list[ear.EarState]) -> list[ear.EarState]:
  """Only the state ``update_agc`` reads or writes; the rest set to None.

  Passing just this through the ``lax.cond`` around the update keeps XLA
  from copying the whole state on every sample (costly once batched).
  """
  views = []
  for s in states:
    unused = {f.name: None for f in dataclasses.fields(s.car) if f.name not in _CAR_FIELDS_FOR_AGC}
    views.append(dataclasses.replace(s, car=dataclasses.replace(s.car, **unused), ihc=None, syn=None))
  return views


def merge_agc_view(states: list[ear.EarState], views: list[ear.EarState]) -> list[ear.EarState]:
  """``states`` with the AGC memories and CAR ramps of ``views``."""
  return [
    dataclasses.replace(
      s,
      agc=v.agc,
      car=dataclasses.replace(s.car, dzb_memory=v.car.dzb_memory, dg_memory=v.car.dg_memory),
    )
    for s, v in zip(states, views)
  ]


def run_segment_outputs(
  input_waves: jax.Array,
  hypers: CarfacHypers,
  weights: CarfacWeights,
  state: CarfacState,
  open_loop: bool = False,
  outputs: Sequence[str] = ("naps",),
  checkpoint_every: int | None = None,
) -> tuple[dict[str, jax.Array], CarfacState]:
  """Runs a segment and returns only the requested per-sample ``outputs``.

  ``outputs`` names entries of ``OUTPUT_NAMES``; each is (n_samp, n_ch,
  n_ears), ``naps_fibers`` (n_samp, n_ch, n_classes, n_ears). Asking for fewer
  outputs saves memory traffic in the time loop. Segments of any length can be
  chained by passing the returned state back in; the result equals one call.
  ``checkpoint_every``: see ``run_segment``.
  """
  outputs = _checked_outputs(outputs)
  x = _validated_input(input_waves, hypers, state_dtype(state))
  states = list(state.ears)
  if open_loop:
    states = _open_loop_states(states)

  def sample_step(states, x_t):
    states, due, per_sample = ears_step(hypers, weights, states, x_t, outputs)
    views = jax.lax.cond(due, lambda v: update_agc(hypers, weights, v, open_loop), list, agc_view(states))
    return merge_agc_view(states, views), per_sample

  states, seg = checkpointed_scan(sample_step, states, x, checkpoint_every)
  return seg, CarfacState(ears=states)


def run_segment_full(
  input_waves: jax.Array,
  hypers: CarfacHypers,
  weights: CarfacWeights,
  state: CarfacState,
  open_loop: bool = False,
  checkpoint_every: int | None = None,
) -> FullSegmentOutput:
  """Like ``run_segment``, plus the synapse's per-fibre-class output.

  Returns the reference's six values (naps, naps_fibers, state, bm, seg_ohc,
  seg_agc).
  """
  seg, state = run_segment_outputs(input_waves, hypers, weights, state, open_loop, OUTPUT_NAMES, checkpoint_every)
  return FullSegmentOutput(seg["naps"], seg["naps_fibers"], state, seg["bm"], seg["seg_ohc"], seg["seg_agc"])


def run_segment(
  input_waves: jax.Array,
  hypers: CarfacHypers,
  weights: CarfacWeights,
  state: CarfacState,
  open_loop: bool = False,
  checkpoint_every: int | None = None,
) -> SegmentOutput:
  """Runs CARFAC over a segment of audio at the design sample rate.

  Args:
    input_waves: (n_samp,) or (n_samp, n_ears) float audio.
    hypers, weights, state: from ``design_and_init_carfac`` (state from the
      previous segment to continue seamlessly).
    open_loop: run the AGC but never feed it back to the CAR.
    checkpoint_every: for ``jax.grad`` of long segments: rematerialise the
      time loop every this many samples (``jax.checkpoint``, see
      ``carfac.time_loop``), so the backward pass keeps one chunk's residuals
      instead of every sample's. The values and gradients are unchanged. On
      CPU, 64 makes the gradient 2.4x faster and keeps 10 s of audio under
      1 GB (``bench/bench_grad.py``); ``None`` (default) does not.

  Returns:
    ``SegmentOutput(naps, state, bm, seg_ohc, seg_agc)``: the NAP, the new
    state, the BM output, and the CAR's za (OHC) and zb (AGC undamping)
    memories after each sample, all (n_samp, n_ch, n_ears).
  """
  seg, state = run_segment_outputs(
    input_waves,
    hypers,
    weights,
    state,
    open_loop,
    ("naps", "bm", "seg_ohc", "seg_agc"),
    checkpoint_every,
  )
  return SegmentOutput(seg["naps"], state, seg["bm"], seg["seg_ohc"], seg["seg_agc"])


_JIT_OPTIONS = dict(static_argnames=("hypers", "open_loop", "checkpoint_every"), donate_argnames=("state",))

#: ``run_segment`` compiled once per (hypers value, open_loop, input shape);
#: the passed-in state is donated: do not use it after the call.
run_segment_jit = jax.jit(run_segment, **_JIT_OPTIONS)

#: ``run_segment_full`` compiled likewise, state donated.
run_segment_full_jit = jax.jit(run_segment_full, **_JIT_OPTIONS)
