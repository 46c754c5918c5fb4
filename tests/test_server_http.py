"""The HTTP endpoints: liveness, readiness, Prometheus metrics, /v1/info."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from server_harness import exchange, make_audio, stream


@pytest.fixture(scope="module")
def http(main_server) -> httpx.Client:
  with httpx.Client(base_url=main_server.http, trust_env=False, timeout=10) as client:
    yield client


def test_health_and_readiness(http) -> None:
  assert http.get("/healthz").json() == {"status": "ok"}
  response = http.get("/readyz")
  assert response.status_code == 200 and response.json() == {"ready": True}


def test_info_describes_model_protocol_and_limits(http, main_server) -> None:
  info, settings = http.get("/v1/info").json(), main_server.settings
  assert info["protocol"] == 1 and info["model_rate"] == settings.model_rate
  assert len(info["centre_frequencies_hz"]) == info["channels"] == 71
  assert info["ears"] == [1, 2] and info["block_samples"] == settings.block_size
  assert info["hop_samples"] == settings.model_samples(settings.hop_ms)
  assert info["formats"] == ["f32le", "s16le"] and info["outputs"] == ["frames", "naps", "bm", "pitchogram", "sai"]
  assert set(info["realtime_capacity"]) == set(info["limits"]["streams_per_pool"]) == {"1", "2", "1+pictures"}
  assert info["token_required"] is True
  assert info["limits"]["max_message_bytes"] == settings.max_message_bytes


def _value(text: str, series: str) -> float:
  return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(series + " ")), 0.0)


def test_metrics_count_streams_frames_steps_and_errors(http, main_server) -> None:
  before = http.get("/metrics").text
  audio = make_audio(0.2, 22050.0, 1, seed=4)
  session = asyncio.run(stream(main_server.ws, audio, 22050.0))
  unsupported = {"type": "start", "sample_rate": 22050, "channels": 1, "format": "f64le"}
  asyncio.run(exchange(main_server.ws, [json.dumps(unsupported)]))
  response = http.get("/metrics")
  after = response.text
  assert response.headers["content-type"].startswith("text/plain")
  sent = 'carfac_frames_sent_total{kind="frames"}'
  assert _value(after, sent) - _value(before, sent) == session.end["rows"]["frames"] == 20
  errors = 'carfac_errors_total{kind="unsupported"}'
  assert _value(after, errors) - _value(before, errors) == 1
  steps = 'carfac_step_seconds_count{ears="1"}'
  assert _value(after, steps) > _value(before, steps)
  assert _value(after, 'carfac_active_streams{ears="1"}') == 0
  assert "# TYPE carfac_frames_dropped_total counter" in after
