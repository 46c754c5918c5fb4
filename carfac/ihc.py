"""IHC: the inner hair cell, turning BM motion into a neural activity pattern.

Styles (``IhcHypers.ihc_style``):
- 0 ``just_hwr``: half-wave rectify and clip to [0, 2].
- 1 ``one_cap`` (v1, "Allen" model): a detection conductance G(bm) drains one
  capacitor that recharges towards 1; the current, smoothed twice, is the NAP.
- 2 ``two_cap`` (v2 default): a receptor capacitor drives a second,
  neurotransmitter capacitor; smoothed once. The receptor potential (zero at
  rest) also feeds the v3 synapse (``two_cap_with_syn``).
The NAP has the rest level subtracted, so it is about 0 in silence.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from carfac._dataclasses import as_leaf, pytree_dataclass, static_dataclass

IHC_STYLES = {"just_hwr": 0, "one_cap": 1, "two_cap": 2, "two_cap_with_syn": 2}
IHC_STYLE_NAMES = tuple(IHC_STYLES)  # the one list of IHC styles (settings, CLI choices, checks)


def check_ihc_style(style: str) -> str:
  """``style`` if it is one of ``IHC_STYLE_NAMES``, else ``ValueError`` saying which are."""
  if style not in IHC_STYLES:
    raise ValueError(f"unknown ihc_style {style!r}; expected one of {sorted(IHC_STYLES)}")
  return style


@dataclasses.dataclass
class IhcDesignParameters:
  """User-set IHC parameters (seconds)."""

  ihc_style: str = "two_cap"
  tau_lpf: float = 0.000080  # output smoothing (twice for one_cap)
  tau_out: float = 0.0005  # one_cap depletion
  tau_in: float = 0.010  # one_cap recovery
  tau1_out: float = 0.00050  # two_cap receptor depletion
  tau1_in: float = 0.00020  # two_cap receptor recovery
  tau2_out: float = 0.001  # two_cap transmitter depletion
  tau2_in: float = 0.010  # two_cap transmitter recovery


@static_dataclass
class IhcHypers:
  """Static IHC design: the channel count and the style (0, 1 or 2)."""

  n_ch: int
  ihc_style: int


@pytree_dataclass
class IhcWeights:
  """IHC coefficients (scalars); those a style does not use stay 0."""

  lpf_coeff: jax.Array
  out1_rate: jax.Array
  in1_rate: jax.Array
  out2_rate: jax.Array
  in2_rate: jax.Array
  output_gain: jax.Array
  rest_output: jax.Array
  rest_cap2: jax.Array
  rest_cap1: jax.Array
  rest_cap: jax.Array
  out_rate: jax.Array
  in_rate: jax.Array


@pytree_dataclass
class IhcState:
  """IHC state, (n_ch,) for the fields the style uses, scalar 0 otherwise."""

  ihc_accum: jax.Array  # running sum of the output (legacy, not an output)
  cap_voltage: jax.Array
  lpf1_state: jax.Array
  lpf2_state: jax.Array
  cap1_voltage: jax.Array
  cap2_voltage: jax.Array


def ihc_detect(x):
  """Rectifying detection conductance G(x) = z^3 / (z^3 + z^2 + 0.1).

  z = max(0, x + 0.175); the range is [0, ~1.34]. Works on floats, numpy and
  jnp arrays.
  """
  xp = jnp if isinstance(x, jax.Array) else np
  z = xp.maximum(0.0, x + 0.175)
  return z**3 / (z**3 + z**2 + 0.1)


def _lpf_coeff(tau: float, fs: float) -> float:
  """One-pole low-pass coefficient for time constant ``tau``."""
  return 1 - math.exp(-1 / (tau * fs))


def _one_cap_coefficients(p: IhcDesignParameters, fs: float) -> dict:
  ro = 1 / float(ihc_detect(10.0))  # output resistance at a very high level
  c = p.tau_out / ro
  ri = p.tau_in / c
  saturation_output = 1 / (2 * ro + ri)  # 50% duty cycle at saturation
  r0 = 1 / float(ihc_detect(0.0))
  current = 1 / (ri + r0)  # at rest
  return dict(
    lpf_coeff=_lpf_coeff(p.tau_lpf, fs),
    out_rate=ro / (p.tau_out * fs),
    in_rate=1 / (p.tau_in * fs),
    output_gain=1 / (saturation_output - current),
    rest_output=current / (saturation_output - current),
    rest_cap=1 - current * ri,
  )


def _two_cap_coefficients(p: IhcDesignParameters, fs: float) -> dict:
  g1_max = float(ihc_detect(10.0))  # receptor conductance at a high level
  r1min = 1 / g1_max
  c1 = p.tau1_out * g1_max
  r1 = p.tau1_in / c1
  rest_current1 = 1 / (r1 + 1 / float(ihc_detect(0.0)))
  rest_cap1 = 1 - rest_current1 * r1
  g2max = r1 / (r1min + r1)  # receptor potential at saturation
  r2min = 1 / g2max
  c2 = p.tau2_out * g2max
  r2 = p.tau2_in / c2
  saturation_current2 = 1 / (2 * r2min + r2)
  rest_current2 = 1 / (r2 + 1 / (r1 * rest_current1))
  return dict(
    lpf_coeff=_lpf_coeff(p.tau_lpf, fs),
    out1_rate=r1min / (p.tau1_out * fs),
    in1_rate=1 / (p.tau1_in * fs),
    out2_rate=r2min / (p.tau2_out * fs),
    in2_rate=1 / (p.tau2_in * fs),
    output_gain=1 / (saturation_current2 - rest_current2),
    rest_output=rest_current2 / (saturation_current2 - rest_current2),
    rest_cap2=1 - rest_current2 * r2,
    rest_cap1=rest_cap1,
  )


def design_and_init_ihc(
  params: IhcDesignParameters, fs: float, n_ch: int, dtype
) -> tuple[IhcHypers, IhcWeights, IhcState]:
  """Designs the IHC of one ear and returns its resting state."""
  style = IHC_STYLES[check_ihc_style(params.ihc_style)]
  coeffs = {f.name: 0.0 for f in dataclasses.fields(IhcWeights)}
  if style == 1:
    coeffs.update(_one_cap_coefficients(params, fs))
  elif style == 2:
    coeffs.update(_two_cap_coefficients(params, fs))
  weights = IhcWeights(**{k: as_leaf(v, dtype) for k, v in coeffs.items()})
  zero = as_leaf(0.0, dtype)
  fill = lambda value: as_leaf(np.full(n_ch, value), dtype)
  state = IhcState(
    ihc_accum=fill(0.0),
    cap_voltage=fill(coeffs["rest_cap"]) if style == 1 else zero,
    lpf1_state=fill(coeffs["rest_output"]) if style else zero,
    lpf2_state=fill(coeffs["rest_output"]) if style == 1 else zero,
    cap1_voltage=fill(coeffs["rest_cap1"]) if style == 2 else zero,
    cap2_voltage=fill(coeffs["rest_cap2"]) if style == 2 else zero,
  )
  return IhcHypers(n_ch=n_ch, ihc_style=style), weights, state


def ihc_step(
  bm: jax.Array, hypers: IhcHypers, weights: IhcWeights, state: IhcState
) -> tuple[jax.Array, jax.Array, IhcState]:
  """One sample of the IHC for the BM vector ``bm`` (n_ch,).

  Returns (ihc_out, v_recep, new_state); v_recep is the receptor potential
  relative to rest (two_cap), zeros for the other styles.
  """
  w, s = weights, state
  v_recep = jnp.zeros_like(bm)
  if hypers.ihc_style == 0:
    ihc_out = jnp.minimum(2.0, jnp.maximum(0.0, bm))
  elif hypers.ihc_style == 1:
    out = ihc_detect(bm) * s.cap_voltage
    cap = s.cap_voltage - out * w.out_rate + (1 - s.cap_voltage) * w.in_rate
    out = out * w.output_gain
    lpf1 = s.lpf1_state + w.lpf_coeff * (out - s.lpf1_state)
    lpf2 = s.lpf2_state + w.lpf_coeff * (lpf1 - s.lpf2_state)
    ihc_out = lpf2 - w.rest_output
    s = dataclasses.replace(s, cap_voltage=cap, lpf1_state=lpf1, lpf2_state=lpf2)
  else:
    receptor_current = ihc_detect(bm) * s.cap1_voltage
    cap1 = s.cap1_voltage - receptor_current * w.out1_rate + (1 - s.cap1_voltage) * w.in1_rate
    out = (1 - cap1) * s.cap2_voltage
    cap2 = s.cap2_voltage - out * w.out2_rate + (1 - s.cap2_voltage) * w.in2_rate
    out = out * w.output_gain
    lpf1 = s.lpf1_state + w.lpf_coeff * (out - s.lpf1_state)
    ihc_out = lpf1 - w.rest_output
    v_recep = w.rest_cap1 - cap1
    s = dataclasses.replace(s, cap1_voltage=cap1, cap2_voltage=cap2, lpf1_state=lpf1)
  s = dataclasses.replace(s, ihc_accum=s.ihc_accum + ihc_out)
  return ihc_out, v_recep, s
