"""Measures the threshold shift table of ``carfac.hearing`` (``THRESHOLD_SHIFT_DB``) and prints it as JSON.

For each frequency of ``SHIFT_FREQUENCIES_HZ`` and each health of
``SHIFT_HEALTH`` (set in every channel at once), the shift in dB that a
30 dB SPL tone needs for the default design's NAP to come back to its
healthy value (``carfac.hearing.threshold_shift_db``). Paste the printed
rows into ``carfac/hearing.py`` when the model or the default design changes.

    .venv/bin/python scripts/measure_threshold_shift.py
"""

from __future__ import annotations

import json

import jax
import numpy as np

import carfac
from carfac import hearing


def main() -> None:
  jax.config.update("jax_enable_x64", True)  # the table in float64
  hypers, weights, state = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(), np.float64)
  n_ch = hypers.ears[0].n_ch
  table = [
    [
      round(
        hearing.threshold_shift_db(hypers, weights, hearing.with_ohc_health(weights, np.full(n_ch, h)), state, f), 2
      )
      for h in hearing.SHIFT_HEALTH
    ]
    for f in hearing.SHIFT_FREQUENCIES_HZ
  ]
  print(json.dumps({"frequencies_hz": hearing.SHIFT_FREQUENCIES_HZ, "health": hearing.SHIFT_HEALTH, "shift_db": table}))


if __name__ == "__main__":
  main()
