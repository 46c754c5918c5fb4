"""A stream's hearing profile and input level: the start message's ``hearing`` object, checked and resolved.

    "hearing": {"profile": "mild-high-frequency", "level_db_spl": 70}
    "hearing": {"audiogram": {"frequencies_hz": [500, 1000, 2000, 4000], "loss_db": [10, 20, 40, 60]}}
    "hearing": {"ohc_health": [1.0, 0.9, ...]}          # one per channel, or one list per ear

At most one of ``profile`` (a name from ``carfac.hearing.EXAMPLE_AUDIOGRAMS``),
``audiogram`` (dB HL, mapped per channel by ``carfac.ohc_health_from_audiogram``)
and ``ohc_health`` (the values themselves, in [0, 1]); ``level_db_spl``: the
sound level that a full-scale sine stands for (``carfac.input_gain_for_level``;
without it, samples enter the model as they are: a full-scale sine is about
104 dB SPL). The stream's ``ohc_health`` replaces the served weights' (the
designed ones, or ``--weights``); their other leaves stay. Every value is
checked (ranges, lengths, finiteness) and a bad one ends the start with
``invalid_message`` (1007) saying which; a server started with
``--hearing-profiles false`` answers ``unsupported`` (1003).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

import carfac
from carfac import hearing
from server.protocol import ErrorKind, HearingMessage, ProtocolError

AUDIOGRAM_FREQUENCY_RANGE_HZ = (100.0, 20000.0)
AUDIOGRAM_LOSS_RANGE_DB = (-20.0, 120.0)
AUDIOGRAM_MAX_POINTS = 16
LEVEL_RANGE_DB_SPL = (0.0, 140.0)


@dataclasses.dataclass(frozen=True)
class StreamHearing:
  """A resolved profile: each ear's health per channel and the input gain."""

  ohc_health: np.ndarray | None  # (n_ears, n_ch), or None: the served weights' own
  input_gain: float
  level_db_spl: float | None

  def weights(self, served: carfac.CarfacWeights) -> carfac.CarfacWeights | None:
    """The stream's weights: ``served`` with this health, or None to keep the pool's."""
    return None if self.ohc_health is None else carfac.with_ohc_health(served, self.ohc_health)

  def describe(self) -> dict[str, Any]:
    """What the ready message echoes: the health actually used, per ear, and the level."""
    health = None
    if self.ohc_health is not None:  # the shortest decimals that give back the float32 values exactly
      health = [[float(np.format_float_positional(h, unique=True)) for h in ear] for ear in self.ohc_health]
    return {
      "ohc_health": health,
      "level_db_spl": self.level_db_spl,
      "input_gain": self.input_gain,
    }


def _invalid(message: str) -> ProtocolError:
  return ProtocolError(ErrorKind.INVALID_MESSAGE, f"hearing: {message}")


def _finite_within(name: str, values, low: float, high: float) -> np.ndarray:
  array = np.asarray(values, float)
  if not np.isfinite(array).all():
    raise _invalid(f"{name} must be finite numbers")
  if ((array < low) | (array > high)).any():
    raise _invalid(f"{name} must lie within [{low:g}, {high:g}]")
  return array


def _audiogram_health(frequencies_hz, loss_db, poles: np.ndarray) -> np.ndarray:
  if not 1 <= len(frequencies_hz) <= AUDIOGRAM_MAX_POINTS or len(loss_db) != len(frequencies_hz):
    raise _invalid(f"an audiogram needs 1 to {AUDIOGRAM_MAX_POINTS} frequencies and one loss for each")
  frequencies = _finite_within("audiogram.frequencies_hz", frequencies_hz, *AUDIOGRAM_FREQUENCY_RANGE_HZ)
  losses = _finite_within("audiogram.loss_db", loss_db, *AUDIOGRAM_LOSS_RANGE_DB)
  if (np.diff(frequencies) <= 0).any():
    raise _invalid("audiogram.frequencies_hz must be increasing")
  return carfac.ohc_health_from_audiogram(frequencies, losses, poles)


def _given_health(values, n_ears: int, n_ch: int) -> np.ndarray:
  """The start's own health values, (n_ch,) or (n_ears, n_ch), checked."""
  nested = bool(values) and isinstance(values[0], list)
  shape = (n_ears, n_ch) if nested else (n_ch,)
  fits = len(values) == n_ears and all(len(ear) == n_ch for ear in values) if nested else len(values) == n_ch
  if not fits:
    raise _invalid(f"ohc_health needs {n_ch} values (one per channel) or {n_ears} lists of {n_ch} (one per ear)")
  return _finite_within("ohc_health", values, 0.0, 1.0).reshape(shape)


def resolve(message: HearingMessage | None, poles: np.ndarray, n_ears: int, offered: bool) -> StreamHearing | None:
  """The stream's profile (``poles``: the pool's pole frequencies), or None for a start without ``hearing``."""
  if message is None:
    return None
  if not offered:
    raise ProtocolError(ErrorKind.UNSUPPORTED, "this server does not take hearing profiles (--hearing-profiles false)")
  chosen = [name for name in ("profile", "audiogram", "ohc_health") if getattr(message, name) is not None]
  if len(chosen) > 1:
    raise _invalid(f"give at most one of profile, audiogram and ohc_health, not {' and '.join(chosen)}")
  health = None
  if message.profile is not None:
    if message.profile not in hearing.EXAMPLE_AUDIOGRAMS:
      raise _invalid(f"profile {message.profile!r}: choose from {sorted(hearing.EXAMPLE_AUDIOGRAMS)}")
    health = hearing.profile_ohc_health(message.profile, poles)
  elif message.audiogram is not None:
    health = _audiogram_health(message.audiogram.frequencies_hz, message.audiogram.loss_db, poles)
  elif message.ohc_health is not None:
    health = _given_health(message.ohc_health, n_ears, len(poles))
  level = message.level_db_spl
  if level is not None:
    _finite_within("level_db_spl", level, *LEVEL_RANGE_DB_SPL)
  return StreamHearing(
    ohc_health=None if health is None else np.broadcast_to(health, (n_ears, len(poles))).astype(np.float32),
    input_gain=1.0 if level is None else carfac.input_gain_for_level(level),
    level_db_spl=level,
  )


def info(offered: bool) -> dict[str, Any]:
  """What ``/v1/info`` says about hearing profiles."""
  return {
    "supported": offered,
    "profiles": {
      name: {"frequencies_hz": list(hearing.AUDIOMETRIC_FREQUENCIES_HZ), "loss_db": list(losses)}
      for name, losses in hearing.EXAMPLE_AUDIOGRAMS.items()
    },
    "audiogram": {
      "frequency_range_hz": list(AUDIOGRAM_FREQUENCY_RANGE_HZ),
      "loss_range_db": list(AUDIOGRAM_LOSS_RANGE_DB),
      "max_points": AUDIOGRAM_MAX_POINTS,
      "rule": "carfac.ohc_health_from_audiogram: the health whose measured threshold shift equals the loss",
    },
    "ohc_health_range": [0.0, 1.0],
    "level_db_spl_range": list(LEVEL_RANGE_DB_SPL),
    "unscaled_full_scale_sine_db_spl": round(hearing.FULL_SCALE_SINE_DB_SPL, 2),
  }
