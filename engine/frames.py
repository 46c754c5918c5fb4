"""NAP frames: the mean of the per-sample NAP over each hop, across blocks.

A block of B samples closes at most ``max_frames(B, hop)`` frames; the samples
of a hop that the block does not finish are carried (as a running sum and a
count) into the next block, so any hop works with any block size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def samples_for_ms(ms: float, rate: float) -> int:
  """A duration (e.g. a frame hop) in ms as a whole number (>= 1) of samples at ``rate``."""
  return max(1, round(rate * ms / 1000))


def max_frames(block_size: int, hop: int) -> int:
  """The most frames one block can close (a fixed output size for jit)."""
  return -(-block_size // hop)


def reduce_to_frames(
  naps: jax.Array,
  carry_sum: jax.Array,
  carry_count: jax.Array,
  hop: int | jax.Array,
  n_out: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Closes the hops that end inside this block.

  Args:
    naps: (B, ...) per-sample NAP of one block.
    carry_sum: (...) sum of the current, unfinished hop before this block.
    carry_count: int32 scalar, samples in that unfinished hop (0 <= c < hop).
    hop: samples per frame; may be traced (one hop per stream in a pool).
    n_out: frames returned, at least ``max_frames(B, hop)``; defaults to
      that when ``hop`` is a Python int.

  Returns:
    (frames, n_frames, new_carry_sum, new_carry_count): frames is
    (n_out, ...), of which the first n_frames are valid (the rest 0).
  """
  block = naps.shape[0]
  if n_out is None:
    n_out = max_frames(block, hop)
  # Sample t belongs to frame (carry_count + t) // hop of this block; frame 0
  # also holds the carried partial hop, frame n_frames is the new partial hop.
  frame_of_sample = (carry_count + jnp.arange(block)) // hop
  sums = jax.ops.segment_sum(naps, frame_of_sample, num_segments=n_out + 1)
  sums = sums.at[0].add(carry_sum)
  n_frames = ((carry_count + block) // hop).astype(jnp.int32)
  closed = (jnp.arange(n_out) < n_frames)[(...,) + (None,) * (naps.ndim - 1)]
  frames = jnp.where(closed, sums[:n_out] / hop, 0)
  new_count = ((carry_count + block) % hop).astype(jnp.int32)
  return frames, n_frames, sums[n_frames], new_count
