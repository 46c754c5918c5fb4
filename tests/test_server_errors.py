"""Every error class: its JSON error and close code, while an honest client streams alongside."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from server_harness import AUTH, TOKEN, alongside_honest_client, exchange, honest_audio, make_audio, stream

from server.stream_session import StreamSession


def _start(**fields) -> str:
  return json.dumps({"type": "start", "sample_rate": 22050, "channels": 1, "format": "f32le", **fields})


_NAN = np.array([0.1, np.nan, 0.2], "<f4").tobytes()
_INF = np.array([0.1, 0.2, -np.inf, 0.3], "<f4").tobytes()

CASES = {
  # name: (messages, expected code, expected close code)
  "format": ([_start(format="f64le")], "unsupported", 1003),
  "channel count": ([_start(channels=3)], "unsupported", 1003),
  "output": ([_start(outputs=["spikes"])], "unsupported", 1003),
  "bad JSON": (["{not json"], "invalid_json", 1007),
  "JSON not an object": (["[1, 2]"], "invalid_message", 1007),
  "wrong field type": ([_start(channels="1")], "invalid_message", 1007),
  "bool for a number": ([_start(sample_rate=True)], "invalid_message", 1007),
  "unknown field": ([_start(volume=11)], "invalid_message", 1007),
  "missing field": ([json.dumps({"type": "start", "channels": 1, "format": "f32le"})], "invalid_message", 1007),
  "sample rate out of range": ([_start(sample_rate=10)], "invalid_message", 1007),
  "hop below the minimum": ([_start(hop_ms=0.5)], "invalid_message", 1007),
  "stop before start": ([json.dumps({"type": "stop"})], "invalid_message", 1007),
  "unknown message after start": ([_start(), json.dumps({"type": "pause"})], "invalid_message", 1007),
  "binary before start": ([b"\0\0\0\0"], "binary_before_start", 1007),
  "odd byte count (s16le)": ([_start(format="s16le"), b"\0\0\0"], "invalid_audio", 1007),
  "half a stereo frame (f32le)": ([_start(channels=2), b"\0" * 12], "invalid_audio", 1007),
  "NaN": ([_start(), _NAN], "non_finite", 1007),
  "Inf": ([_start(), _INF], "non_finite", 1007),
  "message too big": ([_start(), b"\0" * (65536 + 4)], "message_too_big", 1009),
}


@pytest.mark.parametrize("case", CASES)
def test_an_error_gets_its_message_and_close_code(main_server, case: str) -> None:
  messages, code, close_code = CASES[case]
  session = asyncio.run(alongside_honest_client(main_server, exchange(main_server.ws, messages)))
  assert session.error is not None and session.error["code"] == code, session.texts
  assert isinstance(session.error["message"], str) and session.close_code == close_code
  assert session.end is None and not session.headers


@pytest.mark.parametrize(
  "headers, code",
  [
    ({}, "unauthorized"),
    ({"Authorization": "Bearer wrong"}, "unauthorized"),
    ({**AUTH, "Origin": "http://evil.example"}, "origin_not_allowed"),
  ],
)
def test_token_and_origin_are_checked(main_server, headers: dict[str, str], code: str) -> None:
  session = asyncio.run(alongside_honest_client(main_server, exchange(main_server.ws, [_start()], headers=headers)))
  assert session.error["code"] == code and session.close_code == 1008 and session.ready is None


@pytest.mark.parametrize(
  "url_suffix, headers",
  [("?token=" + TOKEN, {}), ("", {**AUTH, "Origin": "http://allowed.example"})],
  ids=["token in the query", "allowed origin"],
)
def test_a_valid_token_and_an_allowed_origin_pass(main_server, url_suffix: str, headers: dict[str, str]) -> None:
  audio = make_audio(0.05, 22050.0, 1, seed=8)
  session = asyncio.run(stream(main_server.ws + url_suffix, audio, 22050.0, headers=headers))
  assert session.close_code == 1000 and session.end["rows"]["frames"] == 5


def test_an_internal_error_closes_1011_and_spares_the_others(main_server, monkeypatch) -> None:
  fault_size = 40000  # no honest chunk is this long
  push = StreamSession.push

  def faulty_push(self: StreamSession, data: bytes) -> None:
    if len(data) == fault_size:
      raise RuntimeError("injected fault")
    push(self, data)

  monkeypatch.setattr(StreamSession, "push", faulty_push)
  messages = [_start(), b"\0" * fault_size]
  session = asyncio.run(alongside_honest_client(main_server, exchange(main_server.ws, messages)))
  assert session.error["code"] == "internal" and session.close_code == 1011
  assert len(honest_audio()) * 4 > fault_size  # (the honest client did send more than that, in pieces)
