"""WS /v1/stream end to end: streamed frames equal offline frames, alone and 16 at once."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from server_harness import (
  TOLERANCE,
  as_received,
  make_audio,
  max_error,
  reference,
  stream,
  to_model_rate,
)


def _check(session, audio, rate, fmt, settings) -> float:
  """Asserts a clean end and frames equal to the offline ones; returns the error."""
  assert session.error is None and session.close_code == 1000, session.texts
  received = as_received(audio, fmt)
  expected = reference(received, rate, settings, session.ready["hop_samples"])["frames"]
  end = session.end
  assert end["reason"] == "stop" and end["samples_received"] == len(audio) and end["dropped_rows"] == 0
  assert end["model_samples"] == len(to_model_rate(received, rate, settings.model_rate))
  assert end["rows"]["frames"] == len(expected)
  return max_error(session.rows("frames"), expected)


@pytest.mark.parametrize("fmt", ["f32le", "s16le"])
@pytest.mark.parametrize("ears", [1, 2])
@pytest.mark.parametrize("rate", [22050.0, 48000.0, 16000.0])
def test_streamed_frames_equal_offline_frames(main_server, rate: float, ears: int, fmt: str) -> None:
  audio = make_audio(0.4, rate, ears, seed=ears * 10 + int(rate) % 7)
  session = asyncio.run(stream(main_server.ws, audio, rate, fmt, seed=ears))
  assert _check(session, audio, rate, fmt, main_server.settings) <= TOLERANCE


def test_ready_describes_the_stream(main_server) -> None:
  audio = make_audio(0.05, 48000.0, 2, seed=3)
  session = asyncio.run(stream(main_server.ws, audio, 48000.0, hop_ms=5.0))
  ready, settings = session.ready, main_server.settings
  assert ready["protocol"] == 1 and ready["model_rate"] == settings.model_rate and ready["ears"] == 2
  assert ready["hop_samples"] == settings.model_samples(5.0) and ready["block_samples"] == settings.block_size
  assert len(ready["centre_frequencies_hz"]) == ready["channels"] == session.headers[0]["channels"]
  assert np.all(np.diff(ready["centre_frequencies_hz"]) < 0)  # channel 0 highest
  assert ready["header"] == {
    "struct": "<BBHHHQQII",
    "bytes": 32,
    "fields": ["version", "kind", "header_bytes", "channels", "ears", "sequence", "first_index", "count", "dropped"],
  }
  assert [h["sequence"] for h in session.headers] == list(range(len(session.headers)))


def test_raw_outputs_and_a_custom_hop(main_server) -> None:
  rate, hop_ms = 48000.0, 4.0
  audio = make_audio(0.3, rate, 2, seed=5)
  session = asyncio.run(stream(main_server.ws, audio, rate, hop_ms=hop_ms, outputs=["frames", "naps", "bm"]))
  assert session.ready["hop_samples"] == main_server.settings.model_samples(hop_ms)  # granule 1 with raw outputs
  assert _check(session, audio, rate, "f32le", main_server.settings) <= TOLERANCE
  expected = reference(audio, rate, main_server.settings, session.ready["hop_samples"])
  for name in ("naps", "bm"):
    assert max_error(session.rows(name), expected[name]) <= TOLERANCE, name
  assert session.end["rows"]["naps"] == session.end["model_samples"]


def test_sixteen_concurrent_clients_started_at_different_times(main_server) -> None:
  rates, formats = [22050.0, 48000.0, 16000.0], ["f32le", "s16le"]
  clients = [
    (make_audio(0.4, rates[i % 3], 2 if i % 4 == 3 else 1, seed=100 + i), rates[i % 3], formats[i % 2])
    for i in range(16)
  ]

  async def client(i: int):
    await asyncio.sleep(0.03 * i)
    audio, rate, fmt = clients[i]
    return await stream(main_server.ws, audio, rate, fmt, pause_s=0.003, seed=i)

  async def all_clients():
    return await asyncio.gather(*(client(i) for i in range(16)))

  sessions = asyncio.run(all_clients())
  for session, (audio, rate, fmt) in zip(sessions, clients):
    assert _check(session, audio, rate, fmt, main_server.settings) <= TOLERANCE
