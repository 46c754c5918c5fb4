"""examples/fit_ohc_health.py end to end: fit, save, serve, stream.

The example is run as a user runs it (a subprocess). Measured here with
0.25 s of noise and 300 steps: the fitted health within 0.113 of the truth
in the impaired channels and 0.009 in the others (tolerances 0.15 and
0.03); with the defaults (0.5 s) 0.047 and 0.005.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from server_harness import TIMEOUT_S, TOLERANCE, InProcessServer, max_error, stream

import carfac
from server.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fit_ohc_health.py"


def test_the_fit_recovers_the_profile_and_the_server_serves_it(tmp_path: Path) -> None:
  fitted, report_path = tmp_path / "fitted.npz", tmp_path / "fit.json"
  command = [sys.executable, EXAMPLE, "--out", fitted, "--report", report_path, "--seconds", "0.25", "--steps", "300"]
  done = subprocess.run(command, capture_output=True, text=True, timeout=4 * TIMEOUT_S)
  assert done.returncode == 0, done.stderr
  report = json.loads(report_path.read_text())
  truth, health = np.asarray(report["true_health"]), np.asarray(report["fitted_health"])
  assert report["max_error_impaired"] == np.abs(health - truth)[:30].max() <= 0.15
  assert report["max_error_normal"] <= 0.03
  assert health[:10].max() < 0.6  # the loss was found, not left at the all-healthy start

  settings = Settings(port=0, log_level="warning", ears=[1], capacity=2, shards=1, pitchogram=False, weights=fitted)
  server = InProcessServer(settings).start()
  try:
    audio = (0.05 * np.random.default_rng(7).standard_normal((11025, 1))).astype(np.float32)
    session = asyncio.run(stream(server.ws, audio, 22050.0, headers={}))
  finally:
    server.stop()
  session.check()
  hypers, designed, state = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(), np.float32)
  weights = carfac.load_weights(fitted, hypers, like=designed)
  np.testing.assert_array_equal(np.asarray(weights.ears[0].car.ohc_health), health.astype(np.float32))
  naps = np.asarray(carfac.run_segment(audio, hypers, weights, state).naps)
  hop = session.ready["hop_samples"]
  n = len(naps) // hop
  expected = naps[: n * hop].astype(np.float64).reshape(n, hop, *naps.shape[1:]).mean(axis=1)
  assert max_error(session.rows("frames"), expected) <= TOLERANCE
