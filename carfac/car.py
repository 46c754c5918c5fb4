"""CAR: the cascade of asymmetric resonators (the basilar membrane).

Each channel k is a two-pole, two-zero stage in "coupled form": the state
(z1, z2) is rotated by the pole angle theta_k and shrunk by the pole radius r,

    z1' = r (a0 z1 - c0 z2),    z2' = r (c0 z1 + a0 z2),

with a0 = cos theta, c0 = sin theta. The radius r = r1 + zb * NLF(v) moves
between maximum damping (r1) and less damping as the AGC ("zb", undamping)
and the outer-hair-cell nonlinearity NLF of the stage velocity v allow. The
stage input w is added to z1' and the stage output is y = g (w + h z2'); it is
the next stage's input. Channel 0 is the base (highest pole frequency).

The default "ripple" mode feeds each stage's output to the next within the
same sample: the first-order linear recurrence across channels

    y_k = g_k (y_{k-1} + h_k z2'_k),   y_{-1} = x.

``use_delay_buffer`` instead feeds each stage the previous sample's output
of the stage above (fully parallel, one sample of delay per stage). The
cascade output passes a 20 Hz one-pole high-pass (AC coupling) before it
becomes the BM output and the IHC input.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from carfac._dataclasses import as_leaf, frozen_array, pytree_dataclass, static_dataclass


@dataclasses.dataclass
class CarDesignParameters:
  """User-set parameters of the cascade (defaults of the reference, v2).

  ``exact_stage_gain`` and ``ac_coupled_bm`` select v1 behaviour, for
  reproducing the v1 golden data: the AGC loop then sets the stage gain with
  the exact DC-unity formula instead of its quadratic fit, and the BM output is
  the cascade output before the 20 Hz AC-coupling high-pass (in v1 the coupler
  sat inside the IHC, so the IHC input is unchanged).
  """

  velocity_scale: float = 0.1  # OHC nonlinearity input scale
  v_offset: float = 0.04  # offset that adds a quadratic part to the NLF
  min_zeta: float = 0.10  # minimum damping factor, mid-frequencies
  max_zeta: float = 0.35  # maximum damping factor, mid-frequencies
  first_pole_theta: float = 0.85 * math.pi
  zero_ratio: float = math.sqrt(2)  # how far the zero is above the pole
  high_f_damping_compression: float = 0.5  # 0 to 1; compresses theta near pi
  erb_per_step: float = 0.5  # channel spacing in ERBs
  min_pole_hz: float = 30
  erb_break_freq: float = 165.3  # Greenwood map's break frequency
  erb_q: float = 1000 / (24.7 * 4.37)  # Glasberg and Moore's high-CF ratio
  use_delay_buffer: bool = False
  linear_car: bool = False
  ac_corner_hz: float = 20
  exact_stage_gain: bool = False  # v1: exact g when closing the AGC loop
  ac_coupled_bm: bool = True  # False (v1): BM output before the AC coupler


@static_dataclass
class CarHypers:
  """Static CAR design: switches and fixed coefficient arrays (n_ch,)."""

  n_ch: int
  use_delay_buffer: bool
  linear_car: bool
  exact_stage_gain: bool
  ac_coupled_bm: bool
  r1_coeffs: np.ndarray  # pole radius at maximum damping
  a0_coeffs: np.ndarray  # cos(theta)
  c0_coeffs: np.ndarray  # sin(theta)
  h_coeffs: np.ndarray  # zero coefficient, (zero_ratio^2 - 1) c0
  g0_coeffs: np.ndarray  # initial stage gain, g_exact(ohc_health = 1)
  zr_coeffs: np.ndarray  # pole-radius increase per unit of undamping


@pytree_dataclass
class CarWeights:
  """Trainable CAR coefficients."""

  velocity_scale: jax.Array
  v_offset: jax.Array
  ohc_health: jax.Array  # (n_ch,), multiplies the undamping; 1 = healthy
  ga_coeffs: jax.Array  # quadratic fit of the stage gain: ga u^2 + gb u + gc
  gb_coeffs: jax.Array
  gc_coeffs: jax.Array
  ac_coeff: jax.Array  # AC-coupling high-pass coefficient, 2 pi f_c / fs


@pytree_dataclass
class CarState:
  """Per-channel CAR state, all (n_ch,)."""

  z1_memory: jax.Array
  z2_memory: jax.Array
  za_memory: jax.Array  # z2 of the previous sample (for the velocity)
  zb_memory: jax.Array  # undamping term, ramped by dzb towards the AGC target
  dzb_memory: jax.Array
  zy_memory: jax.Array  # stage outputs (before AC coupling)
  g_memory: jax.Array  # stage gains, ramped by dg
  dg_memory: jax.Array
  ac_coupler: jax.Array  # the AC-coupling low-pass state


def hz_to_erb(
  cf_hz: float | np.ndarray,
  erb_break_freq: float = 1000 / 4.37,
  erb_q: float = 1000 / (24.7 * 4.37),
) -> float | np.ndarray:
  """Equivalent rectangular bandwidth (Glasberg & Moore): (break + f) / Q."""
  return (erb_break_freq + cf_hz) / erb_q


def design_pole_frequencies(params: CarDesignParameters, fs: float) -> np.ndarray:
  """Pole frequencies, one per channel, from first_pole_theta down to min_pole_hz.

  Each step lowers the pole by erb_per_step ERBs. The values are rounded to
  float32, as in the reference, because every CAR coefficient is designed from
  them and the high-gain cascade amplifies a 1e-7 change ~1000-fold.
  """
  poles = []
  pole_hz = params.first_pole_theta * fs / (2 * math.pi)
  while pole_hz > params.min_pole_hz:
    poles.append(pole_hz)
    pole_hz = pole_hz - params.erb_per_step * hz_to_erb(pole_hz, params.erb_break_freq, params.erb_q)
  return np.array(poles, dtype=np.float32)


def _exact_stage_g(r1, zr, a0, c0, h, undamping):
  """Stage gain giving unity DC gain at the given undamping (any array type)."""
  r = r1 + zr * undamping
  return (1 - 2 * r * a0 + r**2) / (1 - 2 * r * a0 + h * r * c0 + r**2)


def design_stage_g(hypers: CarHypers, relative_undamping: float | np.ndarray) -> np.ndarray:
  """Exact DC-unity stage gain for ``relative_undamping`` (design time, numpy)."""
  return _exact_stage_g(
    hypers.r1_coeffs,
    hypers.zr_coeffs,
    hypers.a0_coeffs,
    hypers.c0_coeffs,
    hypers.h_coeffs,
    relative_undamping,
  )


def _design_coefficients_float32(
  params: CarDesignParameters, fs: float, pole_freqs: np.ndarray
) -> dict[str, np.ndarray]:
  """The CAR coefficient arrays, computed in float32 arithmetic.

  The reference designs in float32 (its pole frequencies are float32 and
  numpy keeps that type), so the same operations in the same order are done
  here; the oracle's coefficients are then reproduced to the last bit.
  """
  f32 = np.float32
  poles = np.asarray(pole_freqs, dtype=f32)
  theta = poles * f32(2 * math.pi / fs)
  c0 = np.sin(theta)
  a0 = np.cos(theta)
  x = theta / f32(math.pi)
  ff = f32(params.high_f_damping_compression)
  zr_base = f32(math.pi) * (x - ff * x**3)
  r1 = f32(1) - zr_base * f32(params.max_zeta)
  min_zeta = f32(params.min_zeta)
  erb = (f32(params.erb_break_freq) + poles) / f32(params.erb_q)
  min_zetas = min_zeta + f32(0.25) * (erb / poles - min_zeta)
  zr = zr_base * (f32(params.max_zeta) - min_zetas)
  h = c0 * f32(params.zero_ratio**2 - 1)
  g_at = lambda u: _exact_stage_g(r1, zr, a0, c0, h, u)
  g0, g1, ghalf = g_at(f32(0.0)), g_at(f32(1.0)), g_at(f32(0.5))
  return dict(
    r1=r1,
    zr=zr,
    a0=a0,
    c0=c0,
    h=h,
    ga=f32(2) * (g0 + g1 - f32(2) * ghalf),
    gb=f32(4) * ghalf - f32(3) * g0 - g1,
    gc=g0,
    g_init=g_at(np.ones_like(poles)),
  )


def design_and_init_car(
  params: CarDesignParameters, fs: float, pole_freqs: np.ndarray, dtype
) -> tuple[CarHypers, CarWeights, CarState]:
  """Designs the cascade for ``pole_freqs`` and returns its initial state."""
  c = _design_coefficients_float32(params, fs, pole_freqs)
  n_ch = len(pole_freqs)
  hypers = CarHypers(
    n_ch=n_ch,
    use_delay_buffer=params.use_delay_buffer,
    linear_car=params.linear_car,
    exact_stage_gain=params.exact_stage_gain,
    ac_coupled_bm=params.ac_coupled_bm,
    r1_coeffs=frozen_array(c["r1"]),
    a0_coeffs=frozen_array(c["a0"]),
    c0_coeffs=frozen_array(c["c0"]),
    h_coeffs=frozen_array(c["h"]),
    g0_coeffs=frozen_array(c["g_init"]),
    zr_coeffs=frozen_array(c["zr"]),
  )
  weights = CarWeights(
    velocity_scale=as_leaf(params.velocity_scale, dtype),
    v_offset=as_leaf(params.v_offset, dtype),
    ohc_health=as_leaf(np.ones(n_ch), dtype),
    ga_coeffs=as_leaf(c["ga"], dtype),
    gb_coeffs=as_leaf(c["gb"], dtype),
    gc_coeffs=as_leaf(c["gc"], dtype),
    ac_coeff=as_leaf(2 * math.pi * params.ac_corner_hz / fs, dtype),
  )
  zeros = as_leaf(np.zeros(n_ch), dtype)
  state = CarState(
    z1_memory=zeros,
    z2_memory=zeros,
    za_memory=zeros,
    zb_memory=as_leaf(c["zr"], dtype),
    dzb_memory=zeros,
    zy_memory=zeros,
    g_memory=as_leaf(c["g_init"], dtype),
    dg_memory=zeros,
    ac_coupler=zeros,
  )
  return hypers, weights, state


def stage_g(weights: CarWeights, undamping: jax.Array) -> jax.Array:
  """Quadratic fit of the DC-unity stage gain (v2 run-time rule)."""
  return weights.ga_coeffs * (undamping**2) + weights.gb_coeffs * undamping + weights.gc_coeffs


def target_stage_g(hypers: CarHypers, weights: CarWeights, undamping: jax.Array) -> jax.Array:
  """Stage gain the AGC loop steers to: quadratic fit, or exact in v1 mode."""
  if not hypers.exact_stage_gain:
    return stage_g(weights, undamping)
  coeff = lambda a: jnp.asarray(a, undamping.dtype)
  return _exact_stage_g(
    coeff(hypers.r1_coeffs),
    coeff(hypers.zr_coeffs),
    coeff(hypers.a0_coeffs),
    coeff(hypers.c0_coeffs),
    coeff(hypers.h_coeffs),
    undamping,
  )


def ohc_nlf(velocities: jax.Array, weights: CarWeights) -> jax.Array:
  """Outer-hair-cell nonlinearity: ~1 at small velocity, -> 0 at large."""
  return 1.0 / (1 + (velocities * weights.velocity_scale + weights.v_offset) ** 2)


def _ripple_sequential(x_in: jax.Array, g: jax.Array, offsets: jax.Array) -> jax.Array:
  """y_k = g_k y_{k-1} + offsets_k, y_{-1} = x_in, as a ``lax.scan`` over channels.

  The fastest form on CPU, where XLA compiles the whole time loop to one
  native function: measured there against a closed form with cumulative
  products, an associative scan, a blocked scan and a triangular matmul, for
  one stream and batched.
  """

  def stage(y_prev, g_and_offset):
    g_k, offset_k = g_and_offset
    y_k = g_k * y_prev + offset_k
    return y_k, y_k

  return jax.lax.scan(stage, x_in, (g, offsets))[1]


def _ripple_parallel(x_in: jax.Array, g: jax.Array, offsets: jax.Array) -> jax.Array:
  """The same recurrence as a log-depth ``associative_scan`` of affine maps.

  On a GPU each step of a sequential scan is a kernel launch: 71 of them per
  sample made the model 30x slower than real time on an H200. Composing the
  maps y -> g_k y + offsets_k pairwise takes log2(n_ch) elementwise rounds
  that XLA fuses; the products are grouped differently, so the last bits
  differ from the sequential order.
  """
  offsets = offsets.at[0].add(g[0] * x_in)  # fold y_{-1} = x_in into the first map

  def compose(earlier, later):
    (g_early, offset_early), (g_late, offset_late) = earlier, later
    return g_early * g_late, g_late * offset_early + offset_late

  return jax.lax.associative_scan(compose, (g, offsets))[1]


def _ripple(x_in: jax.Array, g: jax.Array, hz2: jax.Array) -> jax.Array:
  """Solves y_k = g_k (y_{k-1} + hz2_k), y_{-1} = x_in, channel by channel.

  Written as y_k = g_k y_{k-1} + (g_k hz2_k): the products are one vector
  operation, so the sequential chain is one multiply-add per channel (10%
  faster for one stream; the reference's order differs in the last bits).
  Sequential on CPU, parallel elsewhere (chosen when lowering, for the
  platform the computation runs on).
  """
  return jax.lax.platform_dependent(x_in, g, g * hz2, cpu=_ripple_sequential, default=_ripple_parallel)


def car_step(x_in: jax.Array, hypers: CarHypers, weights: CarWeights, state: CarState) -> tuple[jax.Array, CarState]:
  """Advances the cascade by one input sample.

  Returns the AC-coupled cascade output (n_ch,) and the new state.
  """
  dtype = state.z1_memory.dtype
  coeff = lambda a: jnp.asarray(a, dtype)
  r1, a0, c0, h = (
    coeff(hypers.r1_coeffs),
    coeff(hypers.a0_coeffs),
    coeff(hypers.c0_coeffs),
    coeff(hypers.h_coeffs),
  )
  g = state.g_memory + state.dg_memory
  zb = state.zb_memory + state.dzb_memory
  z1_old, z2_old = state.z1_memory, state.z2_memory
  if hypers.linear_car:
    r = r1 + zb
  else:
    r = r1 + zb * ohc_nlf(z2_old - state.za_memory, weights)
  z1 = r * (a0 * z1_old - c0 * z2_old)
  z2 = r * (c0 * z1_old + a0 * z2_old)
  x_in = jnp.asarray(x_in, dtype)
  if hypers.use_delay_buffer:
    stage_in = jnp.concatenate([x_in[None], state.zy_memory[:-1]])
    zy = g * (h * z2 + stage_in)
  else:
    zy = _ripple(x_in, g, h * z2)
    stage_in = jnp.concatenate([x_in[None], zy[:-1]])
  z1 = z1 + stage_in
  car_out = zy - state.ac_coupler
  new_state = CarState(
    z1_memory=z1,
    z2_memory=z2,
    za_memory=z2_old,
    zb_memory=zb,
    dzb_memory=state.dzb_memory,
    zy_memory=zy,
    g_memory=g,
    dg_memory=state.dg_memory,
    ac_coupler=state.ac_coupler + weights.ac_coeff * car_out,
  )
  return car_out, new_state
