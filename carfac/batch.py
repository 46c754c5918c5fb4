"""Many independent streams of one design in one call, AGC work only when due.

``jax.vmap(run_segment)`` is correct but slow: a ``lax.cond`` with a batched
predicate becomes a ``select``, so every stream runs the decimated AGC update
(smoothing, coupling, loop closure) on every sample. Here the time loop is
outside and the batch inside: the per-sample ear step is vmapped. Streams
whose AGC phases are all 0 (started from the designed state and fed only
whole AGC periods, as the engine's pool does) run ``decimation[0]`` samples
with no branch, then the update for all of them together; others run the
checked loop, where the update is under one unbatched ``cond`` on "any
stream due", applied only to the streams that are due. Both are exact.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from carfac import agc
from carfac.carfac import CarfacHypers, CarfacState, CarfacWeights
from carfac.sample_step import (
  agc_view,
  checked_outputs,
  ears_step,
  loop_start_states,
  merge_agc_view,
  sample_step_with_agc,
  state_dtype,
  update_agc,
  validated_waves,
)
from carfac.time_loop import checkpointed_scan


def _groups_per_chunk(checkpoint_every: int | None, group: int) -> int | None:
  """``checkpoint_every`` samples as a whole number (>= 1) of ``group``-sample steps."""
  return None if checkpoint_every is None else max(1, checkpoint_every // group)


def _summing_scan(step, states, xs, sum_every: int, checkpoint_every: int | None = None, unroll: int | bool = 1):
  """Runs ``step`` over the time axis of ``xs``; outputs summed over groups of ``sum_every`` samples.

  With ``sum_every`` 1 the per-sample outputs; otherwise the sums are carried
  in the loop, so per-sample outputs are never written out. The time loop is
  rematerialised every ``checkpoint_every`` samples (rounded to whole groups).
  ``unroll``: as ``lax.scan``'s, for both levels of the loop.
  """
  if sum_every == 1:
    return checkpointed_scan(step, states, xs, checkpoint_every, unroll)
  groups = xs.reshape((xs.shape[0] // sum_every, sum_every) + xs.shape[1:])
  sample_outputs = jax.eval_shape(step, states, xs[0])[1]

  def group_step(states, x_group):
    def summing_step(carry, x_t):
      states, sums = carry
      states, per_sample = step(states, x_t)
      return (states, {k: sums[k] + per_sample[k] for k in sums}), None

    zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in sample_outputs.items()}
    (states, sums), _ = jax.lax.scan(summing_step, (states, zeros), x_group, unroll=unroll)
    return states, sums

  return checkpointed_scan(group_step, states, groups, _groups_per_chunk(checkpoint_every, sum_every), unroll)


def agc_period(hypers: CarfacHypers) -> int:
  """Samples in one whole AGC period: the product of the stages' decimations."""
  return int(np.prod([h.decimation for h in hypers.ears[0].agc]))


def _all_phases_at_zero(states: CarfacState) -> jax.Array:
  """Whether every AGC stage of every ear of every stream is at phase 0."""
  return jnp.all(jnp.stack([jnp.all(a.decim_phase == 0) for s in states.ears for a in s.agc]))


def run_segment_batch(
  input_waves: jax.Array,
  hypers: CarfacHypers,
  weights: CarfacWeights,
  states: CarfacState,
  open_loop: bool = False,
  outputs: Sequence[str] = ("naps",),
  sum_every: int = 1,
  phases_at_zero: bool | None = None,
  checkpoint_every: int | None = None,
  weights_per_stream: bool = False,
) -> tuple[dict[str, jax.Array], CarfacState]:
  """Runs a batch of independent streams sharing ``hypers`` (and ``weights``, unless per stream).

  Args:
    input_waves: (n_streams, n_samp) or (n_streams, n_samp, n_ears) float.
    states: a CarfacState whose every leaf has a leading (n_streams,) axis,
      e.g. ``carfac.repeat_streams(state, n)``.
    outputs: names from ``OUTPUT_NAMES``.
    sum_every: return each output summed over consecutive groups of this
      many samples (``n_samp`` must be a multiple): the sums are kept in the
      time loop, so a caller that only needs, e.g., frame means avoids
      writing and re-reading every sample's output.
    phases_at_zero: whether every stream's AGC phases are all 0 at the start
      (true of the designed state and of any state that has only run
      segments whose lengths are multiples of ``agc_period(hypers)``). Then,
      if ``n_samp`` is such a multiple too, the AGC updates come at samples
      known when tracing, and the time loop has no branch per sample (about
      2x faster batched). ``None``: checked at run time, both loops compiled.
      ``True`` is the caller's promise: a state with other phases gives wrong
      results.
    checkpoint_every: for gradients, rematerialise the time loop in chunks
      of about this many samples (rounded to whole AGC decimation groups, or
      to whole ``sum_every`` groups): see ``carfac.time_loop``. Same values.
    weights_per_stream: every leaf of ``weights`` has a leading (n_streams,)
      axis, one set of weights per stream (e.g. each listener's hearing
      profile), in the same compiled call.

  Returns:
    (outputs, new states): each output (n_streams, n_samp // sum_every,
    n_ch, n_ears) (``naps_fibers`` with a class axis before the ears); with
    ``sum_every=1`` equal to running ``run_segment_outputs`` on each stream
    separately.
  """
  outputs = checked_outputs(outputs)
  x = validated_waves(input_waves, hypers, state_dtype(states), batch=True)
  n_samp = x.shape[1]
  if sum_every < 1 or n_samp % sum_every:
    raise ValueError(f"sum_every={sum_every} must be >= 1 and divide n_samp={n_samp}")
  ear_states = loop_start_states(states, open_loop)
  weights_axis = 0 if weights_per_stream else None
  step_all = jax.vmap(lambda w, s, x_t: ears_step(hypers, w, s, x_t, outputs), in_axes=(weights_axis, 0, 0))
  step_all = functools.partial(step_all, weights)
  time_major = jnp.swapaxes(x, 0, 1)

  def checked_loop(ear_states):
    """Any phases: the AGC update under a branch on "any stream due", every sample."""
    update_all = jax.vmap(lambda w, s: update_agc(hypers, w, s, open_loop), in_axes=(weights_axis, 0))
    sample_step = sample_step_with_agc(step_all, functools.partial(update_all, weights))
    return _summing_scan(sample_step, ear_states, time_major, sum_every, checkpoint_every)

  def scheduled_loop(ear_states):
    """Phases at zero: stage 0 updates after every ``decimation[0]`` samples, for every stream.

    The samples between updates run with no branch; which slower stages
    update too is known from the group's number (``agc.firing_schedule``),
    so a ``switch`` on it picks the update with that many stages. Off the
    CPU the group's samples are unrolled: a GPU launches kernels for each
    iteration of a loop, and unrolled samples fuse into fewer kernels.
    """
    group = hypers.ears[0].agc[0].decimation
    unit = math.gcd(sum_every, group)  # outputs summed in the loop over this many samples
    schedule = agc.firing_schedule(hypers.ears[0].agc)
    updates = [  # one branch per count of updating stages
      functools.partial(
        jax.vmap(lambda w, s, n=n: update_agc(hypers, w, s, open_loop, n), in_axes=(weights_axis, 0)), weights
      )
      for n in range(1, max(schedule) + 1)
    ]
    branch_of_group = jnp.asarray(schedule, jnp.int32) - 1

    def plain_step(ear_states, x_t):
      ear_states, _, per_sample = step_all(ear_states, x_t)
      return ear_states, per_sample

    def group_samples(unroll: int | bool):
      return functools.partial(_summing_scan, plain_step, sum_every=unit, unroll=unroll)

    def group_step(ear_states, index_and_x):
      index, x_group = index_and_x
      ear_states, sums = jax.lax.platform_dependent(
        ear_states, x_group, cpu=group_samples(1), default=group_samples(True)
      )
      branch = branch_of_group[index % len(schedule)]
      return merge_agc_view(ear_states, jax.lax.switch(branch, updates, agc_view(ear_states))), sums

    groups = time_major.reshape((n_samp // group, group) + time_major.shape[1:])
    indices = jnp.arange(n_samp // group, dtype=jnp.int32)
    ear_states, seg = checkpointed_scan(
      group_step, ear_states, (indices, groups), _groups_per_chunk(checkpoint_every, group)
    )
    # (n_samp // group, group // unit, ...) -> (n_samp // sum_every, ...)
    seg = {k: v.reshape((n_samp // sum_every, sum_every // unit) + v.shape[2:]).sum(axis=1) for k, v in seg.items()}
    return ear_states, seg

  if n_samp % agc_period(hypers) or phases_at_zero is False:
    ear_states, seg = checked_loop(ear_states)
  elif phases_at_zero:
    ear_states, seg = scheduled_loop(ear_states)
  else:
    ear_states, seg = jax.lax.cond(_all_phases_at_zero(states), scheduled_loop, checked_loop, ear_states)
  seg = {name: jnp.swapaxes(values, 0, 1) for name, values in seg.items()}
  return seg, CarfacState(ears=ear_states)
