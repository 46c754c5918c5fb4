"""Per-stream hearing profiles and levels over protocol v1 (the start message's ``hearing``).

Streams with different profiles share one pool and one compiled step; each
one's frames must equal an offline run with its own health and scaled
input, and a bad ``hearing`` object must be refused with what is wrong while
an honest client streams on.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import numpy as np
import pytest
from server_harness import (
  AUTH,
  TOLERANCE,
  InProcessServer,
  alongside_honest_client,
  exchange,
  make_audio,
  max_error,
  reference,
  stream,
)

import carfac
from carfac import hearing
from server.settings import Settings

RATE = 22050.0


def _start(**fields) -> str:
  return json.dumps({"type": "start", "sample_rate": RATE, "channels": 1, "format": "f32le", **fields})


@pytest.fixture(scope="module")
def server():
  settings = Settings(port=0, log_level="warning", ears=[1, 2], capacity=4, shards=1, pitchogram=False)
  running = InProcessServer(settings).start()
  yield running
  running.stop()


def _poles(settings: Settings) -> np.ndarray:
  hypers, _, _ = carfac.design_and_init_carfac(carfac.CarfacDesignParameters(fs=settings.model_rate), np.float32)
  return np.asarray(hypers.ears[0].pole_freqs)


async def _three_listeners(server, audio):
  profile = {"profile": "moderate-sloping", "level_db_spl": 84.0}
  audiogram = {"audiogram": {"frequencies_hz": [500, 1000, 2000, 4000], "loss_db": [0, 10, 30, 45]}}
  return await asyncio.gather(
    stream(server.ws, audio, RATE, seed=1),
    stream(server.ws, audio, RATE, seed=2, hearing=profile),
    stream(server.ws, audio, RATE, seed=3, hearing=audiogram),
  )


def test_streams_with_their_own_profiles_and_levels_in_one_pool_equal_offline_runs(server) -> None:
  audio = make_audio(0.6, RATE, 1, seed=5)
  normal, sloping, notch = asyncio.run(_three_listeners(server, audio))
  poles = _poles(server.settings)
  hop = normal.ready["hop_samples"]
  expected_health = {
    "sloping": carfac.ohc_health_from_audiogram(
      hearing.AUDIOMETRIC_FREQUENCIES_HZ, hearing.EXAMPLE_AUDIOGRAMS["moderate-sloping"], poles
    ),
    "audiogram": carfac.ohc_health_from_audiogram([500, 1000, 2000, 4000], [0, 10, 30, 45], poles),
  }
  gain = carfac.input_gain_for_level(84.0)
  assert "hearing" not in normal.ready
  assert sloping.ready["hearing"]["level_db_spl"] == 84.0 and sloping.ready["hearing"]["input_gain"] == pytest.approx(
    gain
  )
  np.testing.assert_allclose(sloping.ready["hearing"]["ohc_health"][0], expected_health["sloping"], atol=1e-6)
  assert notch.ready["hearing"]["level_db_spl"] is None and notch.ready["hearing"]["input_gain"] == 1.0
  for session in (normal, sloping, notch):
    session.check()
  healthy = reference(audio, RATE, server.settings, hop)["frames"]
  assert max_error(normal.rows("frames"), healthy) <= TOLERANCE
  for session, health, input_gain in (
    (sloping, expected_health["sloping"], gain),
    (notch, expected_health["audiogram"], 1.0),
  ):
    own = reference(audio, RATE, server.settings, hop, ohc_health=health, input_gain=input_gain)["frames"]
    assert max_error(session.rows("frames"), own) <= TOLERANCE
    assert max_error(session.rows("frames"), healthy) > 100 * TOLERANCE  # not the normal listener's frames
  # The audiogram's loss is above 1 kHz: there its NAP is lower than the normal listener's, below 300 Hz alike.
  ratio = notch.rows("frames")[10:].mean(axis=(0, 2)) / normal.rows("frames")[10:].mean(axis=(0, 2))
  assert (
    ratio[(poles > 2000) & (poles < 6000)].max() < 0.8 and np.abs(ratio[(poles > 90) & (poles < 300)] - 1).max() < 0.2
  )


def test_a_binaural_stream_takes_one_health_list_per_ear(server) -> None:
  audio = make_audio(0.3, RATE, 2, seed=6)
  n_ch = len(_poles(server.settings))
  health = [[1.0] * n_ch, [0.3] * 35 + [1.0] * (n_ch - 35)]  # the right ear's 35 highest channels impaired
  session = asyncio.run(stream(server.ws, audio, RATE, hearing={"ohc_health": health}))
  session.check()
  expected = reference(audio, RATE, server.settings, session.ready["hop_samples"], ohc_health=np.asarray(health))
  assert max_error(session.rows("frames"), expected["frames"]) <= TOLERANCE
  assert session.ready["hearing"]["ohc_health"] == health


def test_info_lists_the_profiles_and_ranges(server) -> None:
  info = httpx.get(f"{server.http}/v1/info", headers=AUTH).json()["hearing"]
  assert info["supported"] is True
  assert set(info["profiles"]) == set(hearing.EXAMPLE_AUDIOGRAMS)
  assert info["profiles"]["noise-notch"]["loss_db"] == list(hearing.EXAMPLE_AUDIOGRAMS["noise-notch"])
  assert info["level_db_spl_range"] == [0.0, 140.0] and info["unscaled_full_scale_sine_db_spl"] == 103.99


N_CH = 71
BAD_HEARING = {
  # name: (hearing object, what the error message must say)
  "unknown profile": ({"profile": "deaf"}, "profile 'deaf': choose from"),
  "two sources": (
    {"profile": "normal", "ohc_health": [1.0] * N_CH},
    "at most one of profile, audiogram and ohc_health",
  ),
  "health too short": ({"ohc_health": [1.0] * 3}, "ohc_health needs 71 values"),
  "health above 1": ({"ohc_health": [1.5] + [1.0] * (N_CH - 1)}, r"ohc_health must lie within \[0, 1\]"),
  "health per ear on a mono stream": ({"ohc_health": [[1.0] * N_CH] * 2}, "or 1 lists of 71"),
  "audiogram not increasing": (
    {"audiogram": {"frequencies_hz": [1000, 500], "loss_db": [10, 10]}},
    "frequencies_hz must be increasing",
  ),
  "audiogram lengths differ": ({"audiogram": {"frequencies_hz": [500, 1000], "loss_db": [10]}}, "one loss for each"),
  "audiogram too many points": (
    {"audiogram": {"frequencies_hz": list(range(200, 3600, 200)), "loss_db": [0] * 17}},
    "1 to 16 frequencies",
  ),
  "audiogram frequency out of range": (
    {"audiogram": {"frequencies_hz": [50, 1000], "loss_db": [0, 0]}},
    r"frequencies_hz must lie within \[100, 20000\]",
  ),
  "loss out of range": ({"audiogram": {"frequencies_hz": [1000], "loss_db": [200]}}, r"loss_db must lie within"),
  "level out of range": ({"level_db_spl": 200.0}, r"level_db_spl must lie within \[0, 140\]"),
  "unknown field": ({"volume": 3}, "hearing.volume"),
}


@pytest.mark.parametrize("case", BAD_HEARING)
def test_a_bad_hearing_object_is_refused_with_what_is_wrong(server, case: str) -> None:
  hearing_object, message = BAD_HEARING[case]
  refused = exchange(server.ws, [_start(hearing=hearing_object)])
  session = asyncio.run(alongside_honest_client(server, refused))
  assert session.error["code"] == "invalid_message" and session.close_code == 1007, session.texts
  assert session.ready is None
  assert re.search(message, session.error["message"]), session.error["message"]


def test_a_non_finite_level_in_the_json_is_refused(server) -> None:
  text = _start(hearing={"level_db_spl": 0}).replace('"level_db_spl": 0', '"level_db_spl": NaN')
  session = asyncio.run(exchange(server.ws, [text]))
  assert session.error["code"] == "invalid_message" and "level_db_spl must be finite" in session.error["message"]


def test_a_server_without_hearing_profiles_says_unsupported() -> None:
  settings = Settings(
    port=0, log_level="warning", ears=[1], capacity=1, shards=1, pitchogram=False, hearing_profiles=False
  )
  running = InProcessServer(settings).start()
  try:
    session = asyncio.run(exchange(running.ws, [_start(hearing={"profile": "normal"})]))
    info = httpx.get(f"{running.http}/v1/info", headers=AUTH).json()["hearing"]
  finally:
    running.stop()
  assert session.error["code"] == "unsupported" and session.close_code == 1003
  assert "--hearing-profiles false" in session.error["message"] and info["supported"] is False
