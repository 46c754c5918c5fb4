"""One ear: CAR -> IHC -> (SYN) -> AGC accumulation, for one input sample.

The decimated AGC update, the binaural cross-coupling and the loop closure
act on all ears together and live in ``carfac.carfac``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import numpy as np

from carfac import agc, car, ihc, syn
from carfac._dataclasses import frozen_array, pytree_dataclass, static_dataclass


@dataclasses.dataclass
class EarDesignParameters:
  """The user-set parameters of every stage of one ear."""

  car: car.CarDesignParameters = dataclasses.field(default_factory=car.CarDesignParameters)
  agc: agc.AgcDesignParameters = dataclasses.field(default_factory=agc.AgcDesignParameters)
  ihc: ihc.IhcDesignParameters = dataclasses.field(default_factory=ihc.IhcDesignParameters)
  syn: syn.SynDesignParameters = dataclasses.field(default_factory=syn.SynDesignParameters)


@static_dataclass
class EarHypers:
  """Static design of one ear."""

  n_ch: int
  pole_freqs: np.ndarray  # Hz, float32 values, channel 0 highest
  max_channels_per_octave: float
  car: car.CarHypers
  agc: tuple[agc.AgcHypers, ...]  # one per stage
  ihc: ihc.IhcHypers
  syn: syn.SynHypers


@pytree_dataclass
class EarWeights:
  car: car.CarWeights
  agc: list[agc.AgcWeights]
  ihc: ihc.IhcWeights
  syn: syn.SynWeights | None


@pytree_dataclass
class EarState:
  car: car.CarState
  ihc: ihc.IhcState
  agc: list[agc.AgcState]
  syn: syn.SynState | None


class EarSample(NamedTuple):
  """What one ear produces for one input sample (each (n_ch,) unless noted)."""

  nap: jax.Array
  bm: jax.Array
  ohc: jax.Array  # CAR za_memory after the step
  agc: jax.Array  # CAR zb_memory after the step
  fibers: jax.Array | None  # (n_ch, n_classes), synapse only


def design_and_init_ear(params: EarDesignParameters, fs: float, dtype) -> tuple[EarHypers, EarWeights, EarState]:
  """Designs every stage of one ear and returns their initial state."""
  pole_freqs = car.design_pole_frequencies(params.car, fs)
  n_ch = len(pole_freqs)
  if n_ch < 2:
    raise ValueError(f"the CAR design gives {n_ch} channel(s) at fs={fs}; need at least 2")
  car_h, car_w, car_s = car.design_and_init_car(params.car, fs, pole_freqs, dtype)
  agc_h, agc_w, agc_s = agc.design_and_init_agc(params.agc, fs, n_ch, dtype)
  ihc_h, ihc_w, ihc_s = ihc.design_and_init_ihc(params.ihc, fs, n_ch, dtype)
  syn_h, syn_w, syn_s = syn.design_and_init_syn(params.syn, fs, n_ch, params.ihc.ihc_style == "two_cap_with_syn", dtype)
  hypers = EarHypers(
    n_ch=n_ch,
    pole_freqs=frozen_array(pole_freqs),
    max_channels_per_octave=1 / math.log(pole_freqs[0] / pole_freqs[1], 2),
    car=car_h,
    agc=agc_h,
    ihc=ihc_h,
    syn=syn_h,
  )
  return (
    hypers,
    EarWeights(car=car_w, agc=agc_w, ihc=ihc_w, syn=syn_w),
    EarState(car=car_s, ihc=ihc_s, agc=agc_s, syn=syn_s),
  )


def ear_step(
  x_in: jax.Array, hypers: EarHypers, weights: EarWeights, state: EarState
) -> tuple[EarSample, jax.Array, EarState]:
  """Runs one sample through one ear, up to the AGC input accumulation.

  Returns (outputs, agc_due, new_state); ``agc_due`` is true when AGC stage 0
  has collected a full decimation period and must update.
  """
  car_out, car_s = car.car_step(x_in, hypers.car, weights.car, state.car)
  ihc_out, v_recep, ihc_s = ihc.ihc_step(car_out, hypers.ihc, weights.ihc, state.ihc)
  fibers, syn_s = None, state.syn
  if hypers.syn.do_syn:
    nap, fibers, syn_s = syn.syn_step(v_recep, weights.syn, state.syn)
  else:
    nap = ihc_out
  agc_due, agc_s = agc.accumulate_input(nap, hypers.agc, weights.agc, state.agc)
  bm = car_out if hypers.car.ac_coupled_bm else car_s.zy_memory
  sample = EarSample(nap=nap, bm=bm, ohc=car_s.za_memory, agc=car_s.zb_memory, fibers=fibers)
  return sample, agc_due, EarState(car=car_s, ihc=ihc_s, agc=agc_s, syn=syn_s)
