"""The pitchogram and SAI outputs of protocol v1, against the library's offline pipeline."""

from __future__ import annotations

import asyncio
import json
import math
import re

import numpy as np
import pytest
from server_harness import exchange, max_error, reference_pictures, stream

from server.protocol import ProtocolError, StartMessage, negotiate
from server.settings import Settings

RATE = 22050.0
# The float32 pool against a float32 offline run differs by float32 rounding, which the AGC loop and the
# SAI's running blend carry on: measured 1.6e-5 (lag profile), 1.9e-6 (vowel) and 6.0e-5 (SAI) of peak.
PICTURE_TOLERANCE = 3e-4


def harmonic_complex(f0: float, seconds: float) -> np.ndarray:
  t = np.arange(round(seconds * RATE)) / RATE
  return (0.01 * sum(np.sin(2 * np.pi * k * f0 * t) for k in range(1, 21)))[:, None].astype(np.float32)


def test_pitchogram_and_sai_rows_equal_the_offline_pipeline(main_server) -> None:
  audio = harmonic_complex(220.0, 0.8)
  session = asyncio.run(
    stream(main_server.ws, audio, RATE, outputs=["frames", "pitchogram", "sai"], sai_interval_ms=50)
  )
  session.check()
  ready = session.ready
  pictures = ready["pictures"]
  every = math.ceil(50 / (1000 * 256 / RATE))  # 5 blocks of 11.6 ms
  assert pictures["lags"] == 148 and pictures["sai_width"] == 1103 and pictures["sai_every_blocks"] == every
  assert ready["kinds"] == {"frames": 1, "pitchogram": 4, "sai": 5}
  assert ready["layouts"]["pitchogram"] == ["count", "lags + 2", "1"]
  expected = reference_pictures(audio, main_server.settings)
  blocks = len(audio) // 256  # the padded last block gives no picture
  rows = session.rows("pitchogram")[..., 0]
  assert rows.shape == (blocks, 150) == (len(expected), pictures["lags"] + 2)
  assert max_error(rows[:, :148], np.stack([f.lag_profile for f in expected])) <= PICTURE_TOLERANCE
  assert max_error(rows[:, 148:], np.stack([f.vowel_coords for f in expected])) <= PICTURE_TOLERANCE
  sai = session.rows("sai")
  taken = [k for k in range(blocks) if (k + 1) % every == 0]
  assert sai.shape == (len(taken), 71, 1103)
  assert max_error(sai, np.stack([expected[k].sai_frame for k in taken])) <= PICTURE_TOLERANCE
  lags = np.asarray(pictures["lags_s"])
  strongest = lags[np.argmax(rows[-1, :148])]
  assert abs(np.log(strongest * 220.0)) < np.log(2) / 36 * 1.5  # the period, within a cell and a half


def _start(**fields) -> str:
  return json.dumps({"type": "start", "sample_rate": RATE, "channels": 1, "format": "f32le", **fields})


@pytest.mark.parametrize(
  "fields, code, close, message",
  [
    (dict(channels=2, outputs=["pitchogram"]), "unsupported", 1003, "the pitchogram and sai outputs are mono"),
    (dict(outputs=["frames"], sai_interval_ms=50.0), "invalid_message", 1007, "sai_interval_ms is only for the sai"),
    (dict(outputs=["sai"], sai_interval_ms=10.0), "invalid_message", 1007, r"sai_interval_ms must be within \[20"),
    (dict(outputs=["sai"], sai_interval_ms="fast"), "invalid_message", 1007, "sai_interval_ms"),
  ],
)
def test_bad_picture_requests_get_their_documented_errors(main_server, fields, code, close, message) -> None:
  session = asyncio.run(exchange(main_server.ws, [_start(**fields)]))
  assert session.error["code"] == code and session.close_code == close
  assert re.search(message, session.error["message"]), session.error


def test_a_server_without_pitchogram_does_not_offer_it() -> None:
  start = StartMessage.model_validate(json.loads(_start(outputs=["frames", "pitchogram"])))
  with pytest.raises(ProtocolError, match=r"choose from \['frames'\]") as caught:
    negotiate(start, Settings(pitchogram=False))
  assert caught.value.kind.code == "unsupported"
