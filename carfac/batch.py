"""Many independent streams of one design in one call, AGC work only when due.

``jax.vmap(run_segment)`` is correct but slow: a ``lax.cond`` with a batched
predicate becomes a ``select``, so every stream runs the decimated AGC update
(smoothing, coupling, loop closure) on every sample. Here the time loop is
outside and the batch inside: the per-sample ear step is vmapped, and the AGC
update runs under one unbatched ``cond`` on "any stream due", applied only to
the streams that are due. Streams whose AGC phases are aligned (for example
all started from the designed state and fed blocks whose length is a multiple
of the total AGC decimation) therefore update together once every
``decimation[0]`` samples; unaligned streams are still exact.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from carfac.carfac import (
    CarfacHypers,
    CarfacState,
    CarfacWeights,
    _checked_outputs,
    _open_loop_states,
    agc_view,
    ears_step,
    merge_agc_view,
    require_float_input,
    state_dtype,
    update_agc,
)


def _validated_batch(input_waves, hypers: CarfacHypers, dtype) -> jax.Array:
  """(n_streams, n_samp) or (n_streams, n_samp, n_ears) float -> 3-D array."""
  shape = np.shape(input_waves)
  require_float_input(input_waves)
  if len(shape) == 2 and hypers.n_ears == 1:
    shape = shape + (1,)
  if len(shape) != 3 or shape[2] != hypers.n_ears:
    raise ValueError(
        f"input_waves must have shape (n_streams, n_samp, {hypers.n_ears}), got {np.shape(input_waves)}"
    )
  return jnp.asarray(input_waves, dtype).reshape(shape)


def _where_due(due: jax.Array, new, old):
  """Per stream: ``new`` where due (a (n_streams,) bool), else ``old``."""
  pick = lambda a, b: jnp.where(due.reshape(due.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, new, old)


def run_segment_batch(
    input_waves: jax.Array,
    hypers: CarfacHypers,
    weights: CarfacWeights,
    states: CarfacState,
    open_loop: bool = False,
    outputs: Sequence[str] = ("naps",),
    sum_every: int = 1,
) -> tuple[dict[str, jax.Array], CarfacState]:
  """Runs a batch of independent streams sharing ``hypers`` and ``weights``.

  Args:
    input_waves: (n_streams, n_samp) or (n_streams, n_samp, n_ears) float.
    states: a CarfacState whose every leaf has a leading (n_streams,) axis,
      e.g. ``jax.tree.map(lambda a: jnp.stack([a] * n), state)``.
    outputs: names from ``OUTPUT_NAMES``.
    sum_every: return each output summed over consecutive groups of this
      many samples (``n_samp`` must be a multiple): the sums are kept in the
      time loop, so a caller that only needs, e.g., frame means avoids
      writing and re-reading every sample's output.

  Returns:
    (outputs, new states): each output (n_streams, n_samp // sum_every,
    n_ch, n_ears) (``naps_fibers`` with a class axis before the ears); with
    ``sum_every=1`` equal to running ``run_segment_outputs`` on each stream
    separately.
  """
  outputs = _checked_outputs(outputs)
  x = _validated_batch(input_waves, hypers, state_dtype(states))
  ear_states = list(states.ears)
  if open_loop:
    ear_states = _open_loop_states(ear_states)
  step_all = jax.vmap(lambda s, x_t: ears_step(hypers, weights, s, x_t, outputs))
  update_all = jax.vmap(lambda s: update_agc(hypers, weights, s, open_loop))

  def sample_step(ear_states, x_t):
    ear_states, due, per_sample = step_all(ear_states, x_t)
    views = jax.lax.cond(
        jnp.any(due),
        lambda v: _where_due(due, update_all(v), v),
        lambda v: v,
        agc_view(ear_states),
    )
    return merge_agc_view(ear_states, views), per_sample

  time_major = jnp.swapaxes(x, 0, 1)
  if sum_every == 1:
    ear_states, seg = jax.lax.scan(sample_step, ear_states, time_major)
  else:
    n_samp = x.shape[1]
    if sum_every < 1 or n_samp % sum_every:
      raise ValueError(f"sum_every={sum_every} must be >= 1 and divide n_samp={n_samp}")
    groups = time_major.reshape((n_samp // sum_every, sum_every) + time_major.shape[1:])
    sample_outputs = jax.eval_shape(sample_step, ear_states, time_major[0])[1]

    def group_step(ear_states, x_group):
      def summing_step(carry, x_t):
        ear_states, sums = carry
        ear_states, per_sample = sample_step(ear_states, x_t)
        return (ear_states, {k: sums[k] + per_sample[k] for k in sums}), None

      zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in sample_outputs.items()}
      (ear_states, sums), _ = jax.lax.scan(summing_step, (ear_states, zeros), x_group)
      return ear_states, sums

    ear_states, seg = jax.lax.scan(group_step, ear_states, groups)
  seg = {name: jnp.swapaxes(values, 0, 1) for name, values in seg.items()}
  return seg, CarfacState(ears=ear_states)
