"""Replicas behind HAProxy: ``deploy/haproxy/haproxy.cfg`` in front of three real servers on loopback.

Retries: each replica holds one stream (``capacity 1``). Two are filled by
clients connected to them directly; ``carfac-client`` streams a file through
the proxy twice. Round robin sends its tries to the replicas in turn, so
within the two runs at least one try reaches a full replica, is refused
with ``pool_full``, and is retried onto the free one. Both runs must then
write every frame, all served by the free replica.

Rolling restart: three replicas with a shared resume key serve three
``carfac-client --realtime`` streams through the proxy; one replica is sent
SIGTERM mid-stream. Its client resumes on another replica with the token
from its ``end`` message, and every client's ``.npz`` equals the offline
model's frames for its whole file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from reliability_harness import ServerProcess, metric
from server_harness import TIMEOUT_S, TOLERANCE, free_port, make_audio, max_error, reference
from websockets.asyncio.client import connect

from client.protocol import StreamRequest
from client.readiness import wait_ready
from server.settings import Settings

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "haproxy.cfg"
CLIENT = Path(sys.executable).with_name("carfac-client")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

pytestmark = pytest.mark.skipif(
  not os.path.exists(HAPROXY), reason="haproxy is not installed (scripts/install_system_packages.sh installs it)"
)


@pytest.fixture(scope="module")
def replicas(compile_cache: str) -> Iterator[list[ServerProcess]]:
  servers: list[ServerProcess] = []
  try:
    for _ in range(3):
      servers.append(
        ServerProcess.serving(ears=[1], capacity=1, shards=1, idle_timeout_s=60, compile_cache_dir=compile_cache)
      )
    yield servers
  finally:
    for server in servers:
      server.stop()


@contextlib.contextmanager
def load_balancer(replicas: list[ServerProcess]) -> Iterator[str]:
  """HAProxy with the project's config on a free loopback port; yields its stream URL once it serves."""
  port = free_port()
  env = {**os.environ, "CARFAC_LB_BIND": f"127.0.0.1:{port}"}
  for number, replica in enumerate(replicas, start=1):
    env[f"CARFAC_REPLICA_{number}"] = replica.http.removeprefix("http://")
  proxy = subprocess.Popen(
    [HAPROXY, "-db", "-f", str(CONFIG)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  try:
    try:
      wait_ready(f"http://127.0.0.1:{port}", TIMEOUT_S, alive=lambda: proxy.poll() is None)
    except RuntimeError as exited:
      raise AssertionError(proxy.stdout.read()) from exited
    yield f"ws://127.0.0.1:{port}/v1/stream"
  finally:
    proxy.terminate()
    proxy.wait(10)


@contextlib.asynccontextmanager
async def holding_the_slot(replica: ServerProcess):
  """A stream started directly on ``replica`` and kept open, silent, so its only slot is taken."""
  async with connect(replica.ws, proxy=None) as ws:
    await ws.send(StreamRequest(22050.0).start_message())
    assert '"ready"' in await ws.recv()
    yield


def frames_sent(replica: ServerProcess) -> float:
  text = httpx.get(f"{replica.http}/metrics", trust_env=False).text
  return metric(text, 'carfac_frames_sent_total{kind="frames"}')


def refusals(replica: ServerProcess) -> float:
  text = httpx.get(f"{replica.http}/metrics", trust_env=False).text
  return metric(text, 'carfac_errors_total{kind="pool_full"}')


async def client_runs_while_two_replicas_are_full(url: str, full: list[ServerProcess], wav: Path, outs: list[Path]):
  """``carfac-client stream`` through ``url`` once per path in ``outs``; returns (exit code, stderr) of each."""
  runs = []
  async with holding_the_slot(full[0]), holding_the_slot(full[1]):
    for out in outs:
      client = await asyncio.create_subprocess_exec(
        str(CLIENT),
        "stream",
        str(wav),
        "--url",
        url,
        "--out",
        str(out),
        "--retry-backoff-s",
        "0.05",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
      )
      async with asyncio.timeout(TIMEOUT_S):
        _, stderr = await client.communicate()
      runs.append((client.returncode, stderr.decode()))
  return runs


def test_the_client_retries_a_full_replica_onto_a_free_one_through_haproxy(
  replicas: list[ServerProcess], tmp_path: Path
) -> None:
  rate, seconds = 22050, 1.0
  n_frames = int(seconds * 1000 / 10)  # the server's 10-ms hop
  t = np.arange(int(rate * seconds)) / rate
  wav = tmp_path / "tone.wav"
  soundfile.write(wav, 0.3 * np.sin(2 * np.pi * 1000 * t), rate, subtype="FLOAT")
  full, free = replicas[:2], replicas[2]
  outs = [tmp_path / "run0.npz", tmp_path / "run1.npz"]
  with load_balancer(replicas) as url:
    runs = asyncio.run(client_runs_while_two_replicas_are_full(url, full, wav, outs))
  for (code, stderr), out in zip(runs, outs):
    assert code == 0, stderr
    with np.load(out) as saved:
      assert saved["nap"].shape[0] == n_frames
      assert np.all(np.isfinite(saved["nap"])) and saved["nap"].max() > 0
  said = "".join(stderr for _, stderr in runs)
  assert "pool_full: try 2" in said, said
  assert sum(refusals(replica) for replica in full) >= 1
  assert refusals(free) == 0
  assert all(frames_sent(replica) == 0 for replica in full)
  assert frames_sent(free) == 2 * n_frames


def active_streams(replica: ServerProcess) -> float:
  text = httpx.get(f"{replica.http}/metrics", trust_env=False).text
  return metric(text, 'carfac_active_streams{ears="1"}')


def test_a_rolling_restart_moves_streams_to_other_replicas_without_losing_a_frame(
  compile_cache: str, tmp_path: Path
) -> None:
  rate, seconds, key = 22050.0, 4.0, "shared by the replicas"
  replicas = [
    ServerProcess.serving(
      ears=[1], capacity=2, shards=1, idle_timeout_s=60, resume_key=key, compile_cache_dir=compile_cache
    )
    for _ in range(3)
  ]
  try:
    files = []
    for client in range(3):
      wav = tmp_path / f"client{client}.wav"
      soundfile.write(wav, make_audio(seconds, rate, 1, seed=40 + client)[:, 0], int(rate), subtype="FLOAT")
      files.append(wav)
    with load_balancer(replicas) as url:
      clients = [
        subprocess.Popen(
          [
            str(CLIENT),
            "stream",
            str(wav),
            "--realtime",
            "--url",
            url,
            "--out",
            str(wav.with_suffix(".npz")),
            "--retries",
            "8",
            "--retry-backoff-s",
            "0.1",
          ],
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
        )
        for wav in files
      ]
      deadline = time.monotonic() + TIMEOUT_S
      while sum(active_streams(replica) for replica in replicas) < 3 or active_streams(replicas[0]) < 1:
        assert time.monotonic() < deadline, "the streams did not all start, one on the first replica"
        time.sleep(0.05)
      assert replicas[0].stop() == 0  # SIGTERM mid-stream: drain, hand over, exit
      outcomes = [client.communicate(timeout=TIMEOUT_S) for client in clients]
  finally:
    for replica in replicas:
      replica.stop()
  for client, (_, stderr) in zip(clients, outcomes):
    assert client.returncode == 0, stderr
  said = "".join(stderr for _, stderr in outcomes)
  assert said.count("handed the stream over") >= 1, said
  settings = Settings(model_rate=rate)
  for wav in files:
    audio = soundfile.read(wav, dtype="float32", always_2d=True)[0]
    with np.load(wav.with_suffix(".npz")) as saved:
      expected = reference(audio, rate, settings, int(saved["hop_samples"]))["frames"]
      assert max_error(saved["nap"], expected) <= TOLERANCE, wav.name
