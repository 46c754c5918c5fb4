"""Admission control and the lag policy: the server admits only the streams it measured it can serve in
real time, and ends a stream it falls too far behind (``overloaded``, 1013).

Neither test depends on the machine's speed: the first reads the capacity the server measured and
checks that exactly that many streams are admitted; the second slows the engine down on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from server_harness import TIMEOUT_S, InProcessServer, Pacing, make_audio, stream
from websockets.asyncio.client import connect

from server.settings import Settings

START = json.dumps({"type": "start", "sample_rate": 22050, "channels": 1, "format": "f32le"})


@pytest.fixture()
def auto_server() -> Iterator[InProcessServer]:
  """Capacity measured at start-up (the default), 8 slots in one shard."""
  settings = Settings(port=0, log_level="warning", ears=[1], pool_slots=8, shards=1, max_lag_s=0.3, pitchogram=False)
  assert settings.capacity == "auto"
  server = InProcessServer(settings).start()
  yield server
  server.stop()


def test_the_server_admits_exactly_its_measured_realtime_capacity(auto_server) -> None:
  info = httpx.get(f"{auto_server.http}/v1/info", trust_env=False, timeout=5).json()
  capacity = info["realtime_capacity"]["1"]
  assert info["limits"]["streams_per_pool"]["1"] == capacity <= 8
  assert set(info["step_ms"]["1"]) == {"1", "2", "4", "8"}  # every compiled batch size was timed
  assert info["step_slowdown"]["1"] >= 1 and info["realtime_capacity_now"]["1"] <= capacity
  margin_ms = info["limits"]["realtime_margin"] * 1000 * 256 / 22050
  fitting = [int(size) for size, ms in info["step_ms"]["1"].items() if ms <= margin_ms]
  assert capacity == max(fitting, default=0)

  async def fill_then_one_more() -> list[str]:
    async with contextlib.AsyncExitStack() as stack, asyncio.timeout(TIMEOUT_S):
      answers = []
      for _ in range(capacity + 1):
        ws = await stack.enter_async_context(connect(auto_server.ws, proxy=None))
        await ws.send(START)
        answer = json.loads(await ws.recv())
        answers.append(answer["type"] if answer["type"] == "ready" else answer["code"])
      return answers

  assert asyncio.run(fill_then_one_more()) == ["ready"] * capacity + ["pool_full"]
  metrics = httpx.get(f"{auto_server.http}/metrics", trust_env=False, timeout=5).text
  assert f'carfac_realtime_capacity{{ears="1"}} {float(capacity)}' in metrics


def test_a_stream_the_engine_falls_behind_is_ended_as_overloaded(auto_server) -> None:
  """Each step is made to take 50 ms for 11.6 ms of audio: a real-time client falls 0.3 s behind
  within a few steps and gets ``overloaded`` (1013), not an ever-growing delay."""
  pool = auto_server.server.service.engine.pool("1")
  step = pool.step

  def slow_step(blocks, sai_frames=()):
    time.sleep(0.05)
    return step(blocks, sai_frames)

  pool.step = slow_step
  audio = make_audio(4.0, 22050.0, 1, seed=3)
  session = asyncio.run(stream(auto_server.ws, audio, 22050.0, pacing=Pacing(pause_s=0.01)))
  assert session.error is not None and session.error["code"] == "overloaded", session.texts
  assert session.close_code == 1013
