"""A fixed-capacity pool of CARFAC streams, stepped as batched calls.

Every slot holds one stream's CarfacState (stacked along a leading axis, kept
on the device and donated to each step) plus its frame hop and unfinished
frame. A step takes one fixed-size block for each stream that has one and
advances exactly those streams; the others keep their state untouched.
Streams join (their slot is reset to the designed initial state) and leave
at any time. Every step, slot reset and slot move is compiled ahead of time,
at construction, so nothing compiles on the hot path.

Cost that follows the load (continuous batching): the slots are split into
``shards`` equal batches that run in parallel on a thread pool (XLA releases
the GIL; one shard per core). Within a shard the streams are kept packed at
the front: a stream joins the least loaded shard, after its packed streams,
and when a stream leaves, the shard's last stream is moved into the hole (a
copy on the device). The step is compiled for a ladder of batch sizes
(``buckets``: 1, 2, 4, ... up to the shard size), and each shard runs the
smallest that holds its streams, so a step costs what its streams need, not
what the pool could hold; a shard with no block in a step is skipped. The
slot number a stream gets from ``join`` stays its handle while it moves.

The NAP is summed inside the time loop over groups of ``frame_granule``
samples (every hop is a multiple of it), so the per-sample NAP is never
written out unless asked for.

Pictures: a mono pool built with ``pitchogram`` (a
``carfac.PitchogramPipelineParams`` whose segment is the pool's block) also
keeps each slot's SAI and vowel-embedding state and, per block, returns each
stream's SAI frame, pitchogram column (lag profile) and vowel coordinates,
batched in the same compiled step: what ``carfac.PitchogramPipeline`` with
the pool's design gives offline.

``measure_step_seconds`` times each compiled batch size (every shard at
once): the figures from which ``engine.scheduler.StepCosts`` derives how many
streams the machine serves in real time.

Bad input policy: a block of the wrong shape or dtype, or with NaN/Inf
samples, raises ``ValueError`` before anything runs, so no stream's state is
touched by it (the pool's part of the NaN/Inf policy; every layer's part:
README, "Bad input").
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import os
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import carfac
from carfac.finite import rows_with_non_finite
from carfac.training import available_cores
from engine.frames import max_frames, reduce_to_frames

RAW_OUTPUTS = ("naps", "bm")


class PoolFullError(RuntimeError):
  """Every slot of the pool is taken."""


@carfac.pytree_dataclass
class PoolState:
  """Device state of a shard's slots: model state, hop and unfinished frame."""

  model: carfac.CarfacState  # every leaf has a leading (slots,) axis
  hop: jax.Array  # (slots,) int32: samples per frame, per stream
  frame_sum: jax.Array  # (slots, n_ch, n_ears)
  frame_count: jax.Array  # (slots,) int32: samples in the unfinished frame
  input_gain: jax.Array  # (slots,): each stream's samples are scaled by it (its calibrated level)
  weights: carfac.CarfacWeights | None = None  # a pool with per-stream weights: each slot's own
  sai: carfac.SaiState | None = None  # with pictures: the SAI's buffer and frame
  pitchogram: carfac.PitchogramState | None = None  # with pictures: the vowel embedding's memory


@dataclasses.dataclass(frozen=True)
class SlotState:
  """One stream's whole pool state on the host, to continue it in another pool of the same design.

  ``arrays``: every leaf of the slot's ``PoolState`` (model state, hop,
  unfinished frame), keyed by its path; ``next_frame``: the stream-wide
  index of the next frame it will close.
  """

  arrays: dict[str, np.ndarray]
  next_frame: int


def _checked_weights(weights: carfac.CarfacWeights, designed: carfac.CarfacWeights) -> carfac.CarfacWeights:
  """``weights`` in the designed weights' dtype, if they have exactly their leaves and shapes."""
  expected = jax.tree_util.tree_flatten_with_path(designed)[0]
  given = jax.tree.leaves(weights)
  if jax.tree.structure(weights) != jax.tree.structure(designed):
    raise ValueError("the weights are not this design's (other leaves)")
  for (path, leaf), value in zip(expected, given):
    if np.shape(value) != leaf.shape:
      raise ValueError(f"weights leaf {jax.tree_util.keystr(path)}: shape {np.shape(value)}, the design's {leaf.shape}")
  return jax.tree.map(lambda value, leaf: jnp.asarray(value, leaf.dtype), weights, designed)


def _leaf_paths(state: PoolState) -> list[str]:
  return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]]


class Pictures(NamedTuple):
  """One block's pictures of one stream (a pool with ``pitchogram``)."""

  lag_profile: np.ndarray  # (n_lags,): the pitchogram column
  vowel_coords: np.ndarray  # (2,): F2 row, F1 row
  sai_frame: np.ndarray | None  # (n_ch, sai_width), for the slots ``step`` was asked for


@dataclasses.dataclass(frozen=True)
class BlockResult:
  """What one block of one stream produced."""

  frames: np.ndarray  # (n_frames, n_ch, n_ears): mean NAP per hop
  first_frame: int  # stream-wide index of frames[0]
  raw: dict[str, np.ndarray]  # requested per-sample outputs, (block, n_ch, n_ears)
  pictures: Pictures | None = None  # a pool with pitchogram: this block's SAI and pitchogram


def _shard_step(
  state: PoolState, blocks, active, *, hypers, weights, granule, n_frames_out, raw_outputs, picture_hypers
):
  """Runs a shard's blocks in one batch; keeps inactive slots as they were.

  With no raw outputs the model returns NAP sums over ``granule`` samples,
  and frames are closed on that coarser time grid (hops and frame counts
  are multiples of the granule, so no group straddles two frames).
  ``picture_hypers``: ``(sai_hypers, pitchogram_hypers)`` to run the SAI and
  pitchogram on each stream's per-sample NAP, or None.

  Every slot starts from the designed state (AGC phases at 0) and only ever
  runs whole blocks, so when a block is a whole number of AGC periods every
  phase is at 0 at every step: the model runs its branch-free schedule.
  """
  phases_at_zero = blocks.shape[1] % carfac.agc_period(hypers) == 0
  outputs = tuple(dict.fromkeys(("naps",) + raw_outputs))
  step = 1 if raw_outputs or picture_hypers else granule
  seg, model = carfac.run_segment_batch(
    blocks * state.input_gain.astype(blocks.dtype)[:, None, None],
    hypers,
    weights if state.weights is None else state.weights,
    state.model,
    outputs=outputs,
    sum_every=step,
    phases_at_zero=phases_at_zero,
    weights_per_stream=state.weights is not None,
  )
  naps, frame_step = seg["naps"], step
  if picture_hypers:
    # The SAI and the vowel embedding share one channel-major copy of the per-sample NAP, and the frames
    # close on granule sums, as without pictures: XLA otherwise transposes the time loop's output for each.
    by_channel = jnp.swapaxes(naps[..., 0], 1, 2)  # (streams, n_ch, block)
    granule_sums = sum(by_channel[..., offset::granule] for offset in range(granule))  # (streams, n_ch, groups)
    naps, frame_step = jnp.swapaxes(granule_sums, 1, 2)[..., None], granule
  reduce = functools.partial(reduce_to_frames, n_out=n_frames_out)
  frames, n_frames, frame_sum, frame_count = jax.vmap(reduce)(
    naps, state.frame_sum, state.frame_count // frame_step, state.hop // frame_step
  )
  frames = frames / frame_step  # reduce_to_frames divided the sums by hop / frame_step
  keep = functools.partial(carfac.select_streams, active)
  new_state = dataclasses.replace(
    state,
    model=keep(model, state.model),
    frame_sum=keep(frame_sum, state.frame_sum),
    frame_count=keep(frame_count * frame_step, state.frame_count),
  )
  raw = {name: seg[name] for name in raw_outputs}
  pictures = None
  if picture_hypers:
    # ``advance`` rather than ``keep``: a select over every slot's SAI buffer would cost more than the SAI.
    segment = functools.partial(carfac.run_pitchogram_segment, channels_first=True)
    _, profile, coords, sai, pitchogram = jax.vmap(segment, in_axes=(0, None, None, 0, 0, 0))(
      by_channel, *picture_hypers, state.sai, state.pitchogram, active
    )
    new_state = dataclasses.replace(new_state, sai=sai, pitchogram=pitchogram)
    pictures = (profile, coords)  # the SAI frames stay in the state: copying them all costs more than the SAI
  return new_state, frames, jnp.where(active, n_frames, 0), raw, pictures


def _bucket_step(state: PoolState, blocks, active, *, size: int, **step_options):
  """``_shard_step`` on a shard's first ``size`` slots (its packed streams); the other slots untouched."""
  if size == state.hop.shape[0]:
    return _shard_step(state, blocks, active, **step_options)
  head = jax.tree.map(lambda leaf: leaf[:size], state)
  new_head, *outputs = _shard_step(head, blocks, active, **step_options)
  state = jax.tree.map(lambda leaf, new: leaf.at[:size].set(new), state, new_head)
  return state, *outputs


def _reset_slot(state: PoolState, initial: PoolState, slot, hop):
  """Puts the designed initial state (unbatched ``initial``) and ``hop`` into ``slot``."""
  state = jax.tree.map(lambda leaf, init: leaf.at[slot].set(init), state, initial)
  return dataclasses.replace(state, hop=state.hop.at[slot].set(hop))


def _move_slot(state: PoolState, source, destination):
  """Copies slot ``source``'s whole state (model, hop, unfinished frame) into slot ``destination``."""
  return jax.tree.map(lambda leaf: leaf.at[destination].set(leaf[source]), state)


def default_shards(capacity: int) -> int:
  """Shards for a pool of ``capacity`` streams on JAX's default device.

  On a CPU, one per core this process may use (the most that divide
  ``capacity``): XLA releases the GIL, so shards step in parallel. On an
  accelerator, 1: every shard's step would run on the same device, one
  after another, each paying the step's fixed cost (about 5 ms per
  256-sample block on an H200; README, "GPU").
  """
  if jax.default_backend() != "cpu":
    return 1
  cores = available_cores()
  return max(d for d in range(1, min(cores, capacity) + 1) if capacity % d == 0)


def bucket_ladder(shard_slots: int) -> tuple[int, ...]:
  """Batch sizes compiled per shard: the powers of two below ``shard_slots``, and ``shard_slots``."""
  return tuple(sorted({1 << k for k in range(shard_slots.bit_length()) if 1 << k < shard_slots} | {shard_slots}))


class StreamPool:
  """``capacity`` streams of one design, stepped together block by block.

  ``hop`` is the default frame hop in samples; a stream may ask for its own
  hop when it joins, down to ``min_hop`` (default ``hop``), which fixes the
  most frames one block can close. Every hop must be a multiple of
  ``frame_granule`` (default: the largest that divides ``block_size``,
  ``hop`` and ``min_hop``; 1 when raw outputs are requested). A
  ``block_size`` that is a multiple of the AGC period (``carfac.agc_period``,
  64 samples by default) keeps every stream's AGC phases at 0 at each step,
  so the decimated AGC work is laid out when compiling, with no branch per
  sample (about 2x faster batched; any block size is exact, only slower).
  ``shards`` (default 1) must divide ``capacity``. ``buckets``: the batch sizes compiled per shard (default
  ``bucket_ladder(capacity // shards)``; the shard size is always one).
  ``weights``: trained ``CarfacWeights`` of this design (e.g. from
  ``carfac.load_weights``) in place of the designed ones; a pytree of other
  leaves or shapes raises ``ValueError``. ``per_stream_weights``: each slot
  keeps weights of its own (``join(weights=...)``; default the pool's), e.g.
  a listener's hearing profile, run in the same compiled step.
  Every stream may also scale its input (``join(input_gain=...)``, e.g.
  ``carfac.hearing.input_gain_for_level``).
  ``pitchogram``: a ``carfac.PitchogramPipelineParams`` (its
  ``num_samples_per_segment`` the block size; its ``highest_pole_hz`` is the
  design's business and is not read) to compute every stream's SAI and
  pitchogram per block (mono pools only; see the module doc).
  """

  def __init__(
    self,
    params: carfac.CarfacDesignParameters,
    capacity: int,
    block_size: int,
    hop: int,
    raw_outputs: Sequence[str] = (),
    dtype=np.float32,
    min_hop: int | None = None,
    shards: int = 1,
    frame_granule: int | None = None,
    buckets: Sequence[int] | None = None,
    pitchogram: carfac.PitchogramPipelineParams | None = None,
    weights: carfac.CarfacWeights | None = None,
    per_stream_weights: bool = False,
  ):
    min_hop = hop if min_hop is None else min_hop
    if capacity < 1 or block_size < 1 or not 1 <= min_hop <= hop:
      raise ValueError("capacity, block_size must be >= 1 and 1 <= min_hop <= hop")
    if shards < 1 or capacity % shards:
      raise ValueError(f"shards={shards} must be >= 1 and divide capacity={capacity}")
    unknown = set(raw_outputs) - set(RAW_OUTPUTS)
    if unknown:
      raise ValueError(f"unknown raw outputs {sorted(unknown)}; choose from {RAW_OUTPUTS}")
    if frame_granule is None:
      frame_granule = 1 if raw_outputs else math.gcd(block_size, hop, min_hop)
    if raw_outputs and frame_granule != 1:
      raise ValueError("a pool with raw outputs writes every sample: frame_granule must be 1")
    if block_size % frame_granule or hop % frame_granule or min_hop % frame_granule:
      raise ValueError(f"frame_granule={frame_granule} must divide block_size, hop and min_hop")
    shard_slots = capacity // shards
    buckets = bucket_ladder(shard_slots) if buckets is None else tuple(sorted(set(buckets) | {shard_slots}))
    if buckets[0] < 1 or buckets[-1] > shard_slots:
      raise ValueError(f"buckets must lie in 1..{shard_slots} (the shard size), got {buckets}")
    self.capacity, self.block_size, self.hop, self.min_hop = capacity, block_size, hop, min_hop
    self.shards, self.shard_slots, self.buckets, self.frame_granule = shards, shard_slots, buckets, frame_granule
    self.raw_outputs = tuple(raw_outputs)
    self.dtype = np.dtype(dtype)
    self.hypers, self.weights, model_state = carfac.design_and_init_carfac(params, self.dtype)
    if weights is not None:
      self.weights = _checked_weights(weights, self.weights)
    self.per_stream_weights = per_stream_weights
    self.n_ears = self.hypers.n_ears
    self.n_ch = self.hypers.ears[0].n_ch
    self.max_frames = max_frames(block_size, min_hop)
    self.pitchogram = pitchogram
    self._picture_hypers, picture_states = self._design_pictures(params, pitchogram)
    self._initial = PoolState(
      model=model_state,
      hop=jnp.asarray(hop, jnp.int32),
      frame_sum=jnp.zeros((self.n_ch, self.n_ears), self.dtype),
      frame_count=jnp.asarray(0, jnp.int32),
      input_gain=jnp.asarray(1, self.dtype),
      weights=self.weights if per_stream_weights else None,
      sai=picture_states[0],
      pitchogram=picture_states[1],
    )
    self._states = [carfac.repeat_streams(self._initial, shard_slots) for _ in range(shards)]
    self._free = list(range(capacity))  # slot numbers not in use
    self._members: list[list[int]] = [[] for _ in range(shards)]  # per shard: its slots, in position order
    self._where: dict[int, tuple[int, int]] = {}  # slot -> (shard, position)
    self._next_frame = [0] * capacity
    self._executor = ThreadPoolExecutor(shards, thread_name_prefix="carfac-shard") if shards > 1 else None
    self._compile()

  def _design_pictures(self, params: carfac.CarfacDesignParameters, pitchogram) -> tuple:
    """The SAI and pitchogram hypers and initial states, or (None, (None, None)) without pictures."""
    if pitchogram is None:
      return None, (None, None)
    if self.n_ears != 1:
      raise ValueError(f"the pitchogram is mono: a pool with pitchogram needs 1 ear, got {self.n_ears}")
    if pitchogram.num_samples_per_segment != self.block_size:
      raise ValueError(
        f"the pitchogram's segment ({pitchogram.num_samples_per_segment} samples) "
        f"must be the pool's block ({self.block_size})"
      )
    return carfac.design_and_init_pitchogram_stages(params.fs, params.ears[0].car, pitchogram, self.dtype)

  @property
  def picture_hypers(self) -> tuple[carfac.SaiHypers, carfac.PitchogramHypers] | None:
    """The designed SAI and pitchogram of a pool with ``pitchogram`` (else None)."""
    return self._picture_hypers

  def _compile(self) -> None:
    """Ahead-of-time compilation: calls below can never trigger a compile."""
    step_options = dict(
      hypers=self.hypers,
      weights=self.weights,
      granule=self.frame_granule,
      n_frames_out=self.max_frames,
      raw_outputs=self.raw_outputs,
      picture_hypers=self._picture_hypers,
    )
    state = self._states[0]

    def compile_step(size: int):
      blocks = jax.ShapeDtypeStruct((size, self.block_size, self.n_ears), self.dtype)
      active = jax.ShapeDtypeStruct((size,), np.bool_)
      bucket = functools.partial(_bucket_step, size=size, **step_options)
      return jax.jit(bucket, donate_argnums=0).lower(state, blocks, active).compile()

    # XLA compiles without the GIL: the batch sizes compile in parallel, one per core.
    with ThreadPoolExecutor(min(len(self.buckets), os.cpu_count() or 1)) as compiler:
      self._steps = dict(zip(self.buckets, compiler.map(compile_step, self.buckets)))
    scalar = jax.ShapeDtypeStruct((), np.int32)
    self._reset = jax.jit(_reset_slot, donate_argnums=0).lower(state, self._initial, scalar, scalar).compile()
    self._move = jax.jit(_move_slot, donate_argnums=0).lower(state, scalar, scalar).compile()
    if self._picture_hypers is not None:
      self._sai_frame = jax.jit(lambda state, position: state.sai.frame[position]).lower(state, scalar).compile()

  @property
  def initial_state(self) -> PoolState:
    """The state a stream joins with (one slot, unbatched): the designed model state."""
    return self._initial

  @property
  def active_streams(self) -> int:
    return self.capacity - len(self._free)

  @property
  def slots_in_use(self) -> list[int]:
    return sorted(self._where)

  @property
  def shard_streams(self) -> list[int]:
    """How many streams each shard holds."""
    return [len(members) for members in self._members]

  def bucket_for(self, streams: int) -> int:
    """The compiled batch size that a shard holding ``streams`` streams runs (0 for none)."""
    return 0 if streams == 0 else self.buckets[bisect.bisect_left(self.buckets, streams)]

  def nearest_hop(self, hop: int) -> int:
    """The hop this pool can run nearest to ``hop`` samples: a multiple of ``frame_granule``, at least ``min_hop``."""
    return max(self.min_hop, self.frame_granule * round(hop / self.frame_granule))

  def _require_in_use(self, slot: int) -> None:
    if slot not in self._where:
      raise ValueError(f"slot {slot} is not in use")

  def centre_frequencies(self) -> np.ndarray:
    """Pole frequency of each channel, Hz (channel 0 highest)."""
    return np.asarray(self.hypers.ears[0].pole_freqs)

  def join(
    self,
    hop: int | None = None,
    resume: SlotState | None = None,
    weights: carfac.CarfacWeights | None = None,
    input_gain: float = 1.0,
  ) -> int:
    """Takes a free slot in the least loaded shard, from the designed initial state or ``resume``.

    ``hop``: this stream's frame hop in samples (default: the pool's), at
    least ``min_hop`` and a multiple of ``frame_granule``. ``resume``: a
    stream's state from ``export_slot`` of a pool of the same design; it goes
    on exactly where it was (frame indices, weights and gain included). A
    state whose leaves differ from this pool's in name, shape or dtype raises
    ``ValueError``. ``weights`` (a pool with ``per_stream_weights``) and
    ``input_gain`` (finite, > 0): this stream's, for a fresh start only.
    """
    hop = self.hop if hop is None else int(hop)
    if hop < self.min_hop or hop % self.frame_granule:
      raise ValueError(f"hop {hop} must be >= {self.min_hop} samples and a multiple of {self.frame_granule}")
    start = self._initial if resume is None else self._checked_resume(resume)
    start = self._with_stream_settings(start, weights, input_gain, resume is not None)
    if not self._free:
      raise PoolFullError(f"all {self.capacity} stream slots are in use")
    shard = min(range(self.shards), key=lambda s: len(self._members[s]))
    slot, position = self._free.pop(0), len(self._members[shard])
    self._members[shard].append(slot)
    self._where[slot] = (shard, position)
    self._states[shard] = self._reset(self._states[shard], start, np.int32(position), np.int32(hop))
    self._next_frame[slot] = 0 if resume is None else resume.next_frame
    return slot

  def _with_stream_settings(self, start: PoolState, weights, input_gain: float, resuming: bool) -> PoolState:
    """``start`` with a stream's own weights and input gain (checked)."""
    if weights is None and input_gain == 1.0:
      return start
    if resuming:
      raise ValueError("a resumed stream keeps its own weights and input gain")
    if weights is not None and not self.per_stream_weights:
      raise ValueError("this pool's streams share its weights (build it with per_stream_weights=True)")
    if not (math.isfinite(input_gain) and input_gain > 0):
      raise ValueError(f"input_gain must be finite and > 0, got {input_gain}")
    if weights is not None:
      weights = _checked_weights(weights, self.weights)
      for path, leaf in jax.tree_util.tree_flatten_with_path(weights)[0]:
        if not np.isfinite(np.asarray(leaf)).all():
          raise ValueError(f"weights leaf {jax.tree_util.keystr(path)} has NaN or Inf values")
      start = dataclasses.replace(start, weights=weights)
    return dataclasses.replace(start, input_gain=jnp.asarray(input_gain, self.dtype))

  def export_slot(self, slot: int) -> SlotState:
    """A copy, on the host, of ``slot``'s whole state (see ``SlotState``), between steps."""
    self._require_in_use(slot)
    shard, position = self._where[slot]
    leaves = [np.asarray(leaf)[position].copy() for leaf in jax.tree.leaves(self._states[shard])]
    return SlotState(dict(zip(_leaf_paths(self._initial), leaves)), self._next_frame[slot])

  def _checked_resume(self, resume: SlotState) -> PoolState:
    """``resume`` as an unbatched ``PoolState``, if it has exactly this pool's leaves and finite values."""
    expected = dict(zip(_leaf_paths(self._initial), jax.tree.leaves(self._initial)))
    if set(resume.arrays) != set(expected):
      raise ValueError("the state's leaves are not this pool's (another design?)")
    leaves = []
    for path, leaf in expected.items():
      array = np.asarray(resume.arrays[path])
      if array.shape != leaf.shape or array.dtype != leaf.dtype:
        raise ValueError(f"state leaf {path}: {array.dtype}{array.shape}, this pool has {leaf.dtype}{leaf.shape}")
      if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"state leaf {path} has NaN or Inf values")
      leaves.append(array)
    if not isinstance(resume.next_frame, int) or resume.next_frame < 0:
      raise ValueError(f"next_frame must be an int >= 0, got {resume.next_frame!r}")
    return jax.tree.unflatten(jax.tree.structure(self._initial), leaves)

  def leave(self, slot: int) -> None:
    """Frees ``slot`` (the next stream to take it starts afresh); its shard's last stream moves into its place."""
    self._require_in_use(slot)
    shard, position = self._where.pop(slot)
    members = self._members[shard]
    last = members.pop()
    if last != slot:
      self._states[shard] = self._move(self._states[shard], np.int32(len(members)), np.int32(position))
      members[position] = last
      self._where[last] = (shard, position)
    self._free.append(slot)

  def _checked_block(self, slot: int, block) -> np.ndarray:
    """One block, checked (shape and dtype) and shaped (block_size, n_ears); cast and checked for NaN/Inf per batch."""
    self._require_in_use(slot)
    array = np.asarray(block)
    if array.dtype not in (np.float32, np.float64):
      raise ValueError(f"slot {slot}: block dtype must be float32 or float64, got {array.dtype}")
    expected = (self.block_size, self.n_ears)
    allowed = [expected] + ([(self.block_size,)] if self.n_ears == 1 else [])
    if array.shape not in allowed:
      raise ValueError(f"slot {slot}: block shape must be {expected}, got {array.shape}")
    return array.reshape(expected)

  def _reject_non_finite(self, blocks: Mapping[int, np.ndarray], batches: dict[int, np.ndarray]) -> None:
    """Raises for the first slot (in ``blocks``' order) whose block has NaN or Inf at the pool's dtype.

    Checked on each shard's batch, after the cast, in one pass (a check per
    block cost more than the step itself on a GPU, thousands of streams at a
    time), so a float64 sample beyond float32's range, which the cast makes
    Inf, is rejected too.
    """
    bad = {(shard, position) for shard, batch in batches.items() for position in rows_with_non_finite(batch)}
    for slot in blocks:
      if self._where[slot] in bad:
        raise ValueError(f"slot {slot}: block has NaN or Inf samples; rejected, state untouched")

  def _run_shard(self, shard: int, batch: np.ndarray, active: np.ndarray):
    """Steps a shard's packed streams (``len(active)``: a compiled batch size); outputs on the host.

    The frame counts come back as a list of ints, read once per shard rather than once per stream.
    """
    self._states[shard], frames, n_frames, raw, pictures = self._steps[len(active)](self._states[shard], batch, active)
    pictures = None if pictures is None else tuple(np.asarray(x) for x in pictures)
    return np.asarray(frames), np.asarray(n_frames).tolist(), {k: np.asarray(v) for k, v in raw.items()}, pictures

  def _in_parallel(self, run: Callable[[int], object], shards: Sequence[int]) -> list:
    """``run`` of each shard, on the thread pool when there are several (one runs here: no thread hop)."""
    return list(self._executor.map(run, shards) if self._executor and len(shards) > 1 else map(run, shards))

  def step(self, blocks: Mapping[int, np.ndarray], sai_frames: Collection[int] = ()) -> dict[int, BlockResult]:
    """Advances every stream in ``blocks`` (slot -> one block) by one block.

    ``sai_frames``: slots (among ``blocks``) whose new SAI frame to return
    too, in a pool with ``pitchogram`` (each is a copy of 300 KB or so, so
    only those that want one).
    """
    batches: dict[int, np.ndarray] = {}
    actives: dict[int, np.ndarray] = {}
    with np.errstate(over="ignore"):  # a float64 sample beyond the pool's float32 becomes Inf, rejected below
      for slot, block in blocks.items():
        checked = self._checked_block(slot, block)
        shard, position = self._where[slot]
        if shard not in batches:
          size = self.bucket_for(len(self._members[shard]))
          batches[shard] = np.zeros((size, self.block_size, self.n_ears), self.dtype)
          actives[shard] = np.zeros(size, np.bool_)
        batches[shard][position] = checked
        actives[shard][position] = True
    self._reject_non_finite(blocks, batches)
    busy = sorted(batches)
    outputs = dict(zip(busy, self._in_parallel(lambda s: self._run_shard(s, batches[s], actives[s]), busy)))
    results = {}
    for slot in blocks:
      shard, position = self._where[slot]
      frames, counts, raw, pictures = outputs[shard]
      count = counts[position]
      results[slot] = BlockResult(
        frames=frames[position, :count],
        first_frame=self._next_frame[slot],
        raw={name: values[position] for name, values in raw.items()},
        pictures=None
        if pictures is None
        else Pictures(
          *(x[position] for x in pictures),
          np.asarray(self._sai_frame(self._states[shard], np.int32(position))) if slot in sai_frames else None,
        ),
      )
      self._next_frame[slot] += count
    return results

  def measure_step_seconds(self, repeats: int = 15) -> dict[int, float]:
    """Median wall time of ``step`` at each compiled batch size, every shard running it at once.

    Streams join for the measurement (``size`` per shard, low-level noise
    as audio) and leave after it, so it needs an empty pool; it times the
    whole call, Python bookkeeping included. The first run of each size is
    a warm-up.
    """
    if self._where:
      raise RuntimeError("measure_step_seconds needs an empty pool")
    rng = np.random.default_rng(0)
    noise = (1e-3 * rng.standard_normal((self.capacity, self.block_size, self.n_ears))).astype(self.dtype)
    seconds = {}
    for size in self.buckets:
      slots = [self.join() for _ in range(size * self.shards)]  # (each joins the least loaded shard)
      times = []
      for _ in range(repeats + 1):
        started = time.perf_counter()
        self.step({slot: noise[slot] for slot in slots})
        times.append(time.perf_counter() - started)
      for slot in reversed(slots):
        self.leave(slot)
      seconds[size] = statistics.median(times[1:])
    return seconds
