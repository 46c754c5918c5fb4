"""``python -m server`` as a process: readiness during compilation, and SIGTERM.

On SIGTERM every in-flight stream is flushed (the frames of all the audio the
server took in are sent, then ``end``), its client is closed with 1001 (not
uvicorn's 1012), a connection without a stream gets the ``shutting_down``
error, and the process exits with status 0 within a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
from server_harness import TIMEOUT_S, TOLERANCE, Session, collect, make_audio, max_error, reference, stream
from websockets.asyncio.client import connect

from server.settings import Settings


class ServerProcess:
  """``python -m server`` with ``env`` settings; its output is read on a thread."""

  def __init__(self, env: dict[str, str]):
    self.process = subprocess.Popen(
        [sys.executable, "-m", "server"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    self.lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self) -> None:
    for line in self.process.stdout:
      self.lines.put(line)

  def wait_for_line(self, pattern: str) -> re.Match:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
      line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
      if match := re.search(pattern, line):
        return match


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

    async def without_stream() -> Session:
      session = Session()
      async with connect(ws_url, proxy=None) as ws:
        return await collect(ws, session)

    async def clients_then_sigterm() -> list[Session]:
      # Real-time pace: 4 s of audio in ~20 ms chunks each; the server stops long before the end.
      streams = [asyncio.create_task(stream(ws_url, a, r, pause_s=0.02, seed=i)) for i, (a, r) in enumerate(zip(audios, rates))]
      idle = asyncio.create_task(without_stream())
      await asyncio.sleep(0.8)
      server.process.send_signal(signal.SIGTERM)
      return await asyncio.gather(*streams, idle)

    sent_at = time.monotonic()
    *sessions, idle = asyncio.run(clients_then_sigterm())
    assert server.process.wait(timeout=10) == 0
    assert time.monotonic() - sent_at < 6
  finally:
    server.process.kill()
  assert idle.error["code"] == "shutting_down" and idle.close_code == 1001
  settings = Settings(ears=[1])
  for session, audio, rate in zip(sessions, audios, rates):
    end = session.end
    assert session.close_code == 1001 and end["reason"] == "shutdown", session.texts
    received = end["samples_received"]
    assert 0 < received < len(audio)  # cut short, then flushed
    expected = reference(audio[:received], rate, settings, session.ready["hop_samples"])["frames"]
    assert end["rows"]["frames"] == len(expected) and end["dropped_rows"] == 0
    assert max_error(session.rows("frames"), expected) <= TOLERANCE
