"""One sample through every ear, and the decimated AGC update: what every time loop is built from.

``run_segment_outputs`` (one stream) and ``run_segment_batch`` (many streams,
vmapped) differ only in how they loop over time; both take their input
checks, their open-loop set-up and their per-sample step from here:

- ``ears_step``: one sample through CAR -> IHC -> (SYN) of every ear, adding
  each NAP to AGC stage 0; it says whether the decimated update is due.
- ``update_agc``: the decimated work (AGC stages, ``cross_couple``,
  ``close_agc_loop``), run every ``decimation[0]`` samples.
- ``sample_step_with_agc``: the two joined under one ``lax.cond``, the AGC
  update applied (``select_streams``) only to the streams that are due; one
  stream is the case of a scalar "due".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from carfac import agc, car, ear

if TYPE_CHECKING:
  from carfac.carfac import CarfacHypers, CarfacState, CarfacWeights

#: Per-sample outputs the time loops can return, and the field of the ear's per-sample output each one is.
_SAMPLE_FIELD = {"naps": "nap", "naps_fibers": "fibers", "bm": "bm", "seg_ohc": "ohc", "seg_agc": "agc"}
OUTPUT_NAMES = tuple(_SAMPLE_FIELD)

#: The CAR state the decimated AGC update reads (zb, g) or writes (dzb, dg).
_CAR_FIELDS_FOR_AGC = ("zb_memory", "g_memory", "dzb_memory", "dg_memory")

EarStates = list[ear.EarState]
PerSample = dict[str, jax.Array]


def checked_outputs(outputs: Sequence[str]) -> tuple[str, ...]:
  """``outputs`` as a tuple of names from ``OUTPUT_NAMES``; raises ``ValueError`` naming any other."""
  outputs = tuple(outputs)
  unknown = set(outputs) - set(OUTPUT_NAMES)
  if unknown:
    raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {OUTPUT_NAMES}")
  return outputs


def require_float_input(input_waves) -> None:
  """Rejects integer (e.g. PCM) input: the model needs float audio."""
  input_dtype = np.dtype(getattr(input_waves, "dtype", np.float64))
  if not jnp.issubdtype(input_dtype, jnp.floating):
    raise ValueError(
      f"input_waves must be a float array (float32 or float64), got {input_dtype}; convert integer PCM to float first"
    )


def validated_waves(input_waves, hypers: CarfacHypers, dtype, batch: bool = False) -> jax.Array:
  """Checks dtype, rank and ear count; returns (n_samp, n_ears), or (n_streams, n_samp, n_ears) for a batch.

  One ear may leave out its ear axis: (n_samp,) or, batched, (n_streams, n_samp).
  """
  shape = np.shape(input_waves)
  require_float_input(input_waves)
  if batch:
    if len(shape) == 2 and hypers.n_ears == 1:
      shape = shape + (1,)
    if len(shape) != 3 or shape[2] != hypers.n_ears:
      raise ValueError(f"input_waves must have shape (n_streams, n_samp, {hypers.n_ears}), got {np.shape(input_waves)}")
    return jnp.asarray(input_waves, dtype).reshape(shape)
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


def loop_start_states(state: CarfacState, open_loop: bool) -> EarStates:
  """The ears' states a time loop starts from: with ``open_loop``, the CAR ramps frozen where they are
  (the AGC still runs but never feeds back)."""
  if not open_loop:
    return list(state.ears)
  frozen = lambda s: dataclasses.replace(
    s.car, dzb_memory=jnp.zeros_like(s.car.dzb_memory), dg_memory=jnp.zeros_like(s.car.dg_memory)
  )
  return [dataclasses.replace(s, car=frozen(s)) for s in state.ears]


def select_streams(mask: jax.Array, new, old):
  """Per stream: ``new`` where ``mask`` (a (n_streams,) bool, or a scalar for one stream), else ``old``.

  Leaf by leaf for pytrees, every leaf with the stream axis first. The one
  select-per-stream of the time loops (AGC updates of the streams that are
  due) and of the engine's pool (advancing only the streams that had a block).
  """
  pick = lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)
  return jax.tree.map(pick, new, old)


def repeat_streams(state, n_streams: int):
  """``state`` (any pytree of arrays) for ``n_streams`` streams: every leaf gains a leading stream axis.

  A broadcast per leaf, whatever ``n_streams``: ``jnp.stack([leaf] * n)``
  compiles a concatenation of ``n`` operands per leaf shape (38 s for 4096
  streams of the default design on CPU).
  """
  return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (n_streams,) + jnp.shape(leaf)), state)


def ears_step(
  hypers: CarfacHypers,
  weights: CarfacWeights,
  states: EarStates,
  x_t: jax.Array,
  outputs: Sequence[str],
) -> tuple[EarStates, jax.Array, PerSample]:
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


def cross_couple(hypers: CarfacHypers, weights: CarfacWeights, states: EarStates) -> EarStates:
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


def close_agc_loop(hypers: CarfacHypers, weights: CarfacWeights, states: EarStates) -> EarStates:
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


def update_agc(
  hypers: CarfacHypers,
  weights: CarfacWeights,
  states: EarStates,
  open_loop: bool,
  n_firing: int | None = None,
) -> EarStates:
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


def agc_view(states: EarStates) -> EarStates:
  """Only the state ``update_agc`` reads or writes; the rest set to None.

  Passing just this through the ``lax.cond`` around the update keeps XLA
  from copying the whole state on every sample (costly once batched).
  """
  views = []
  for s in states:
    unused = {f.name: None for f in dataclasses.fields(s.car) if f.name not in _CAR_FIELDS_FOR_AGC}
    views.append(dataclasses.replace(s, car=dataclasses.replace(s.car, **unused), ihc=None, syn=None))
  return views


def merge_agc_view(states: EarStates, views: EarStates) -> EarStates:
  """``states`` with the AGC memories and CAR ramps of ``views``."""
  return [
    dataclasses.replace(
      s,
      agc=v.agc,
      car=dataclasses.replace(s.car, dzb_memory=v.car.dzb_memory, dg_memory=v.car.dg_memory),
    )
    for s, v in zip(states, views)
  ]


def sample_step_with_agc(
  step_ears: Callable[[EarStates, jax.Array], tuple[EarStates, jax.Array, PerSample]],
  update: Callable[[EarStates], EarStates],
) -> Callable[[EarStates, jax.Array], tuple[EarStates, PerSample]]:
  """The per-sample step of a time loop whose AGC phases are not known when tracing.

  ``step_ears`` is ``ears_step`` (or its vmap over streams, whose "due" is
  then (n_streams,)); ``update`` is ``update_agc`` on an ``agc_view`` (or
  its vmap). The update runs under one ``lax.cond`` on "any stream due",
  with only the AGC view of the state passed through the branch, and is
  kept only for the streams that are due.
  """

  def sample_step(states: EarStates, x_t: jax.Array) -> tuple[EarStates, PerSample]:
    states, due, per_sample = step_ears(states, x_t)
    views = jax.lax.cond(jnp.any(due), lambda v: select_streams(due, update(v), v), lambda v: v, agc_view(states))
    return merge_agc_view(states, views), per_sample

  return sample_step
