"""SYN: the v3 IHC synapse, three classes of auditory-nerve fibres per channel.

The receptor potential v (from the two_cap IHC) sets, per fibre class c, a
release probability through a sigmoid s = 1 / (1 + exp(-(v - v_half_c) /
v_width_c)). Release r = (1 - q) s draws on a neurotransmitter reservoir q
that refills with time constant ``reservoir_tau``; the smoothed release,
scaled by a2, is the firing probability per fibre per sample. The NAP (and
the AGC input) is the fibre-count- and class-weighted sum of the firing rates,
with the healthy spontaneous level subtracted. Active only when the IHC style
is ``two_cap_with_syn``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from carfac._dataclasses import as_leaf, pytree_dataclass, static_dataclass

DEFAULT_IHCS_PER_CHANNEL = 10
_HEALTHY_FIBERS_PER_IHC = (50, 35, 25)
_AGC_WEIGHTS_PER_IHC = (1.2 / 22050, 1.2 / 22050, 1.2 / 22050)


def _default_fibers() -> np.ndarray:
  return np.array(_HEALTHY_FIBERS_PER_IHC) * DEFAULT_IHCS_PER_CHANNEL


def _default_agc_weights() -> np.ndarray:
  return np.array(_AGC_WEIGHTS_PER_IHC) / DEFAULT_IHCS_PER_CHANNEL


@dataclasses.dataclass
class SynDesignParameters:
  """User-set synapse parameters, per fibre class (high, medium, low spont)."""

  n_classes: int = 3
  healthy_n_fibers: np.ndarray = dataclasses.field(default_factory=_default_fibers)
  spont_rates: np.ndarray = dataclasses.field(default_factory=lambda: np.array([50, 6, 1]))  # spikes/s
  sat_rates: float = 200.0  # spikes/s
  sat_reservoir: float = 0.2
  v_width: float = 0.02
  tau_lpf: float = 0.000080
  reservoir_tau: float = 0.02
  agc_weights: np.ndarray = dataclasses.field(default_factory=_default_agc_weights)  # multiplied by fs at design time

  @classmethod
  def from_ihcs_per_channel(
    cls,
    ihcs_per_channel: int | None = None,
    healthy_n_fibers: np.ndarray | None = None,
    agc_weights: np.ndarray | None = None,
    **kwargs,
  ) -> SynDesignParameters:
    """Parameters for ``ihcs_per_channel`` IHCs per channel (default 10).

    Fibre counts are given per IHC and multiplied by it; AGC weights are
    divided by it. (Unlike the reference, explicit arrays are accepted.)
    """
    ihcs = DEFAULT_IHCS_PER_CHANNEL if ihcs_per_channel is None else ihcs_per_channel
    fibers = np.array(
      _HEALTHY_FIBERS_PER_IHC if healthy_n_fibers is None else healthy_n_fibers,
      dtype=np.float64,
    )
    weights = np.array(
      _AGC_WEIGHTS_PER_IHC if agc_weights is None else agc_weights,
      dtype=np.float64,
    )
    return cls(healthy_n_fibers=fibers * ihcs, agc_weights=weights / ihcs, **kwargs)


@static_dataclass
class SynHypers:
  """Whether the synapse runs, and its number of fibre classes."""

  do_syn: bool = False
  n_classes: int = 3


@pytree_dataclass
class SynWeights:
  """Synapse coefficients; class vectors have shape (n_classes,)."""

  n_fibers: jax.Array  # (n_ch, n_classes)
  v_widths: jax.Array
  v_halfs: jax.Array
  a1: jax.Array  # reservoir feedback gain
  a2: jax.Array  # release -> firing probability gain
  agc_weights: jax.Array
  spont_p: jax.Array  # spontaneous firing probability per sample
  spont_sub: jax.Array  # healthy spontaneous NAP level, subtracted
  res_lpf_inits: jax.Array  # resting reservoir level
  res_coeff: jax.Array
  lpf_coeff: jax.Array


@pytree_dataclass
class SynState:
  """Synapse state, (n_ch, n_classes)."""

  reservoirs: jax.Array
  lpf_state: jax.Array


def design_and_init_syn(
  params: SynDesignParameters, fs: float, n_ch: int, enabled: bool, dtype
) -> tuple[SynHypers, SynWeights | None, SynState | None]:
  """Designs the synapse (when ``enabled``) and returns its resting state."""
  if not enabled:
    return SynHypers(do_syn=False, n_classes=params.n_classes), None, None
  n_classes = params.n_classes
  p1 = params.sat_rates / fs  # saturated firing probability per sample
  p0 = np.asarray(params.spont_rates) / fs  # spontaneous
  q1 = 1 - params.sat_reservoir
  r1 = 0.5 * params.sat_reservoir  # sigmoid at 50% duty cycle when saturated
  a1 = q1 / r1
  a2 = p1 / r1
  r0 = p0 / a2
  q0 = r0 * a1
  w0 = 1 - q0
  s0 = r0 / w0
  offsets = np.log((1 - s0) / s0)  # sigmoid midpoints giving spont rates
  v_widths = params.v_width * np.ones(n_classes)
  spont_p = a2 * w0 * s0
  agc_weights = fs * np.asarray(params.agc_weights)
  healthy = np.asarray(params.healthy_n_fibers, dtype=np.float64)
  weights = SynWeights(
    n_fibers=as_leaf(np.ones((n_ch, 1)) * healthy, dtype),
    v_widths=as_leaf(v_widths, dtype),
    v_halfs=as_leaf(offsets * v_widths, dtype),
    a1=as_leaf(a1, dtype),
    a2=as_leaf(a2, dtype),
    agc_weights=as_leaf(agc_weights, dtype),
    spont_p=as_leaf(spont_p, dtype),
    spont_sub=as_leaf((healthy * spont_p) @ agc_weights, dtype),
    res_lpf_inits=as_leaf(q0, dtype),
    res_coeff=as_leaf(1 - math.exp(-1 / (params.reservoir_tau * fs)), dtype),
    lpf_coeff=as_leaf(1 - math.exp(-1 / (params.tau_lpf * fs)), dtype),
  )
  state = SynState(
    reservoirs=as_leaf(np.ones((n_ch, 1)) * q0, dtype),
    lpf_state=as_leaf(np.ones((n_ch, 1)) * spont_p, dtype),
  )
  return SynHypers(do_syn=True, n_classes=n_classes), weights, state


def syn_step(v_recep: jax.Array, weights: SynWeights, state: SynState) -> tuple[jax.Array, jax.Array, SynState]:
  """One sample of the synapse for receptor potentials ``v_recep`` (n_ch,).

  Returns (syn_out (n_ch,), firings (n_ch, n_classes), new_state); firings are
  the expected spikes per sample per class (fibre count x probability).
  """
  w = weights
  x = (v_recep[:, None] - w.v_halfs) / w.v_widths
  s = 1 / (1 + jnp.exp(-x))
  q = state.reservoirs
  r = (1 - q) * s
  lpf = state.lpf_state + w.lpf_coeff * (w.a2 * r - state.lpf_state)
  firings = w.n_fibers * lpf
  reservoirs = q + w.res_coeff * (w.a1 * r - q)
  syn_out = firings @ w.agc_weights - w.spont_sub
  return syn_out, firings, SynState(reservoirs=reservoirs, lpf_state=lpf)
