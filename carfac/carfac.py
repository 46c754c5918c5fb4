"""The whole model: design, and running segments of audio through all ears.

Per sample, each ear runs CAR -> IHC -> (SYN) and adds its NAP to AGC stage 0.
When stage 0 is due (every ``decimation[0]`` samples, all ears in lockstep),
the decimated AGC stages update, the ears' AGC memories are cross-coupled, and
unless ``open_loop`` the loop is closed: the CAR gets new undamping and stage
gain targets, reached by linear ramps over the next decimation period.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from carfac import car, ear, ihc
from carfac._dataclasses import default_float_dtype, pytree_dataclass, static_dataclass
from carfac.sample_step import (
  OUTPUT_NAMES,
  checked_outputs,
  ears_step,
  loop_start_states,
  sample_step_with_agc,
  state_dtype,
  update_agc,
  validated_waves,
)
from carfac.time_loop import checkpointed_scan


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
  outputs = checked_outputs(outputs)
  x = validated_waves(input_waves, hypers, state_dtype(state))
  sample_step = sample_step_with_agc(
    lambda states, x_t: ears_step(hypers, weights, states, x_t, outputs),
    lambda views: update_agc(hypers, weights, views, open_loop),
  )
  states, seg = checkpointed_scan(sample_step, loop_start_states(state, open_loop), x, checkpoint_every)
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
