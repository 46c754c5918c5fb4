"""``python -m server`` as a process: readiness during compilation, and SIGTERM.

On SIGTERM every in-flight stream is flushed (the frames of all the audio the
server took in are sent, then ``end``), its client is closed with 1001 (not
uvicorn's 1012), a connection without a stream gets the ``shutting_down``
error, and the process exits with status 0 within a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import httpx
import numpy as np
from reliability_harness import ServerProcess
from server_harness import (
  TIMEOUT_S,
  TOLERANCE,
  Pacing,
  Session,
  as_received,
  collect,
  make_audio,
  max_error,
  reference,
  stream,
)
from websockets.asyncio.client import connect

from server.settings import Settings


def test_sigterm_flushes_streams_closes_1001_and_exits_0(tmp_path) -> None:
  cache = tmp_path / "xla-cache"
  env = {"CARFAC_PORT": "0", "CARFAC_EARS": "[1]", "CARFAC_CAPACITY": "4", "CARFAC_COMPILE_CACHE_DIR": str(cache)}
  server = ServerProcess(env)
  try:
    port = int(server.wait_for_line(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")[1])
    http, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/stream"
    readiness = []
    with httpx.Client(trust_env=False, timeout=5) as client:
      while not readiness or readiness[-1] != 200:
        assert client.get(f"{http}/healthz").status_code == 200  # alive while compiling
        readiness.append(client.get(f"{http}/readyz").status_code)
        assert len(readiness) < 1000, "never ready"
        time.sleep(0.02)
    assert readiness[0] == 503, "ready before the engine compiled?"
    assert any(cache.iterdir()), "nothing in the compile cache"

    rates = [22050.0, 48000.0, 22050.0]
    audios = [make_audio(4.0, rate, 1, seed=40 + i) for i, rate in enumerate(rates)]

    connected = asyncio.Event()

    async def without_stream() -> Session:
      session = Session()
      async with connect(ws_url, proxy=None) as ws:  # (accepted once the handshake is done)
        connected.set()
        return await collect(ws, session)

    async def clients_then_sigterm() -> list[Session]:
      # Real-time pace: 4 s of audio in ~20 ms chunks each; the server stops long before the end.
      pacings = [Pacing(pause_s=0.02) for _ in rates]
      streams = [
        asyncio.create_task(stream(ws_url, a, r, pacing=p, seed=i))
        for i, (a, r, p) in enumerate(zip(audios, rates, pacings))
      ]
      idle = asyncio.create_task(without_stream())
      await _all_under_way(pacings)
      async with asyncio.timeout(TIMEOUT_S):
        await connected.wait()
      signalled.append(time.monotonic())
      server.process.send_signal(signal.SIGTERM)
      return await asyncio.gather(*streams, idle)

    signalled: list[float] = []
    *sessions, idle = asyncio.run(clients_then_sigterm())
    assert server.process.wait(timeout=10) == 0
    assert time.monotonic() - signalled[0] < Settings().shutdown_timeout_s + 1
  finally:
    server.process.kill()
  assert idle.error["code"] == "shutting_down" and idle.close_code == 1001
  for session, audio, rate in zip(sessions, audios, rates):
    _assert_flushed(session, audio, rate)


async def _all_under_way(pacings: list[Pacing]) -> None:
  """Waits until frames came back to every stream (each has a slot and sent audio)."""
  async with asyncio.timeout(TIMEOUT_S):
    await asyncio.gather(*(pacing.under_way.wait() for pacing in pacings))


def _assert_flushed(session: Session, audio: np.ndarray, rate: float) -> None:
  """A stream cut short by SIGTERM: every frame of the audio the server took in, then end and 1001."""
  end = session.end
  assert session.close_code == 1001 and end["reason"] == "shutdown", session.texts
  received = end["samples_received"]
  assert 0 < received < len(audio)  # cut short, then flushed
  expected = reference(audio[:received], rate, Settings(ears=[1]), session.ready["hop_samples"])["frames"]
  assert end["rows"]["frames"] == len(expected) and end["dropped_rows"] == 0
  assert max_error(session.rows("frames"), expected) <= TOLERANCE


def test_sigterm_under_load_flushes_32_streams(compile_cache: str) -> None:
  """32 clients streaming in real time, at three rates and both formats, when SIGTERM comes."""
  clients = 32
  rates = [(22050.0, 48000.0, 16000.0)[i % 3] for i in range(clients)]
  formats = [("f32le", "s16le")[i % 2] for i in range(clients)]
  audios = [make_audio(4.0, rate, 1, seed=60 + i) for i, rate in enumerate(rates)]
  server = ServerProcess.serving(ears=[1], capacity=clients, shards=2, compile_cache_dir=compile_cache)

  async def clients_then_sigterm() -> list[Session]:
    pacings = [Pacing(pause_s=0.02) for _ in rates]
    streams = [
      asyncio.create_task(stream(server.ws, audio, rate, fmt, pacing=pacing, seed=i))
      for i, (audio, rate, fmt, pacing) in enumerate(zip(audios, rates, formats, pacings))
    ]
    await _all_under_way(pacings)
    signalled.append(time.monotonic())
    server.process.send_signal(signal.SIGTERM)
    return await asyncio.gather(*streams)

  signalled: list[float] = []
  try:
    sessions = asyncio.run(clients_then_sigterm())
    status = server.process.wait(timeout=10)
    exit_s = time.monotonic() - signalled[0]
  finally:
    server.process.kill()
  figures = {"clients": clients, "exit_status": status, "exit_after_sigterm_s": round(exit_s, 2)}
  figures["frames_flushed"] = sum(session.end["rows"]["frames"] for session in sessions)
  print(json.dumps(figures), file=sys.stderr)
  assert status == 0 and exit_s < Settings().shutdown_timeout_s + 1 and not server.faults()
  for session, audio, rate, fmt in zip(sessions, audios, rates, formats):
    _assert_flushed(session, as_received(audio, fmt), rate)
