"""Server load: N clients stream real-time audio for T seconds; prints JSON.

Starts ``python -m server`` (one pool of N streams for ``--channels``-channel
clients) unless ``--url`` is given, then runs N protocol-v1 clients in this
process (uvloop), started ``--ramp-s`` apart in all. Each sends ``--chunk-ms``
chunks of s16le audio at ``--rate`` on a real-time schedule and reads its
frames as they come. ``--clients capacity``: the server runs at its defaults
(``--capacity auto``, both ear counts) and N is the real-time capacity it
measured for ``--channels`` (``/v1/info``); once all N stream, one more
client tries to start, and the report says what it was told (it should be
``pool_full``).

Frame latency: from the moment the chunk that completed a frame's hop was
sent to the moment the frame arrived (so it includes the chunk's own
duration, the block size, the resampler's delay, batching and the step).
Frames lost: frames the audio sent should give (model samples // hop) minus
frames received. CPU: the server process's and this process's CPU seconds
per wall second, over the streaming window.

    python bench/bench_server.py --clients 64 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import uvloop
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe  # noqa: E402

from server.protocol import HEADER, HEADER_FIELDS

_FIRST_INDEX, _COUNT = HEADER_FIELDS.index("first_index"), HEADER_FIELDS.index("count")


def _cpu_seconds(pid: int) -> float:
  """User + system CPU time of process ``pid`` (Linux /proc)."""
  fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _start_server(clients: int | None, channels: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
  """``python -m server`` with one pool of ``clients`` streams (None: the defaults); returns it and its URL."""
  port = _free_port()
  env = {**os.environ, "CARFAC_PORT": str(port), "CARFAC_LOG_LEVEL": "warning"}
  if clients is not None:
    env |= {"CARFAC_EARS": f"[{channels}]", "CARFAC_CAPACITY": str(clients), "CARFAC_MAX_CONNECTIONS": str(clients + 8)}
  process = subprocess.Popen([sys.executable, "-m", "server", *extra], env=env, stdout=subprocess.DEVNULL)
  return process, f"http://127.0.0.1:{port}"


async def _wait_ready(http: str, timeout: float = 120.0) -> None:
  deadline = time.monotonic() + timeout
  async with httpx.AsyncClient(trust_env=False) as client:
    while True:
      try:
        if (await client.get(f"{http}/readyz")).status_code == 200:
          return
      except httpx.TransportError:
        pass  # not listening yet
      if time.monotonic() > deadline:
        raise RuntimeError("the server did not become ready")
      await asyncio.sleep(0.1)


def _audio(rate: float, chunk_samples: int, channels: int, seed: int) -> bytes:
  """About 1 s of tones and noise per channel as interleaved s16le, a whole number of chunks (looped)."""
  rng = np.random.default_rng(seed)
  t = np.arange(chunk_samples * math.ceil(rate / chunk_samples)) / rate
  x = np.stack(
      [sum(0.1 * np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 4000, 3)) + 0.03 * rng.standard_normal(len(t))
       for _ in range(channels)],
      axis=1,
  )  # fmt: skip
  return np.round(x * 32767).astype("<i2").tobytes()


class Client:
  """One real-time client: sends on schedule, records each frame's latency."""

  def __init__(self, args: argparse.Namespace, index: int):
    self.args, self.index = args, index
    self.chunk_samples = round(args.rate * args.chunk_ms / 1000)
    self.send_times: list[float] = []  # wall time each chunk was sent
    self.latencies: list[float] = []
    self.stopped_at = math.inf  # when stop was sent: later frames are the flush, not timed
    self.frames = 0
    self.dropped = 0
    self.end: dict | None = None
    self.error: str | None = None  # the code of an error the server ended the stream with
    self.close_code: int | None = None

  async def run(self, url: str, start_at: float, stop_at: float) -> None:
    args = self.args
    audio = _audio(args.rate, self.chunk_samples, args.channels, self.index)
    chunk_bytes = 2 * args.channels * self.chunk_samples
    start = {"type": "start", "sample_rate": args.rate, "channels": args.channels, "format": "s16le",
             "hop_ms": args.hop_ms}  # fmt: skip
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    async with connect(url, proxy=None, max_size=None, compression=None) as ws:
      await ws.send(json.dumps(start))
      ready = json.loads(await ws.recv())
      if ready["type"] != "ready":
        self.error = ready["code"]  # refused (e.g. pool_full)
        return
      self.hop_samples = ready["hop_samples"]
      self.hop_s = ready["hop_samples"] / ready["model_rate"]
      reader = asyncio.create_task(self._read(ws))
      begin, k = time.monotonic(), 0
      while (due := begin + k * args.chunk_ms / 1000) < stop_at:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        offset = (k * chunk_bytes) % len(audio)
        self.send_times.append(time.monotonic())
        try:
          await ws.send(audio[offset : offset + chunk_bytes])
        except ConnectionClosed:
          break  # ended by the server (e.g. overloaded): the reader has its error
        k += 1
      self.stopped_at = time.monotonic()
      with contextlib.suppress(ConnectionClosed):
        await ws.send(json.dumps({"type": "stop"}))
      await reader
      self.close_code = ws.close_code

  async def _read(self, ws) -> None:
    with contextlib.suppress(ConnectionClosed):
      await self._read_until_closed(ws)

  async def _read_until_closed(self, ws) -> None:
    chunk_s = self.chunk_samples / self.args.rate
    async for message in ws:
      if isinstance(message, str):
        text = json.loads(message)
        if text["type"] == "error":
          self.error = text["code"]
        else:
          self.end = text
        continue
      now = time.monotonic()
      header = HEADER.unpack_from(message)
      self.dropped += header[-1]
      first, count = header[_FIRST_INDEX], header[_COUNT]
      self.frames += count
      if now < self.stopped_at:
        for frame in range(first, first + count):
          chunk = min(math.ceil((frame + 1) * self.hop_s / chunk_s - 1e-9) - 1, len(self.send_times) - 1)
          self.latencies.append(now - self.send_times[chunk])


async def _step_stats(http: str, channels: int) -> dict[str, float]:
  """Engine steps so far and their mean duration, from the server's /metrics."""
  async with httpx.AsyncClient(trust_env=False) as client:
    text = (await client.get(f"{http}/metrics")).text
  values = {}
  for name in ("count", "sum"):
    series = f'carfac_step_seconds_{name}{{ears="{channels}"}} '
    values[name] = next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(series)), 0.0)
  return values


async def _one_more(url: str, args: argparse.Namespace, at: float) -> str:
  """One more client's start, once the others all stream: the type or error code of its answer."""
  await asyncio.sleep(max(0.0, at - time.monotonic()))
  start = {"type": "start", "sample_rate": args.rate, "channels": args.channels, "format": "s16le"}
  async with connect(url, proxy=None) as ws:
    await ws.send(json.dumps(start))
    answer = json.loads(await ws.recv())
  return answer.get("code", answer["type"])


async def _measured_capacity(http: str, channels: int) -> int:
  async with httpx.AsyncClient(trust_env=False) as client:
    return (await client.get(f"{http}/v1/info")).json()["realtime_capacity"][str(channels)]


async def _bench(args: argparse.Namespace, url: str) -> dict:
  clients = [Client(args, i) for i in range(args.clients)]
  t0 = time.monotonic() + 0.5
  stop_at = t0 + args.ramp_s + args.seconds
  cpu_self = time.process_time()
  cpu_server = _cpu_seconds(args.server_pid) if args.server_pid else None
  http = url.replace("ws", "http", 1).removesuffix("/v1/stream")
  steps_before = await _step_stats(http, args.channels)
  load_before = os.getloadavg()[0]
  wall = time.monotonic()
  runs = [asyncio.create_task(c.run(url, t0 + args.ramp_s * i / args.clients, stop_at)) for i, c in enumerate(clients)]
  one_more = asyncio.create_task(_one_more(url, args, t0 + args.ramp_s + 1.0)) if args.try_one_more else None
  await asyncio.gather(*runs)
  wall = time.monotonic() - wall
  steps_after = await _step_stats(http, args.channels)
  steps = steps_after["count"] - steps_before["count"]
  latencies = np.concatenate([c.latencies for c in clients]) * 1000
  ended = [c for c in clients if c.end is not None]
  expected = sum(c.end["model_samples"] // c.hop_samples for c in ended)
  received = sum(c.frames for c in ended)
  errors = collections.Counter(c.error for c in clients if c.error is not None)
  return {
      "clients": args.clients,
      "seconds": args.seconds,
      "rate_hz": args.rate,
      "chunk_ms": args.chunk_ms,
      "hop_ms": args.hop_ms,
      "server_args": args.server_args,
      "streams_ended_with_error": dict(errors),
      "frames_received": received,
      "frames_expected": expected,
      "frames_lost": expected - received,
      "dropped_reported": sum(c.dropped for c in clients),
      "latency_ms": {
          "p50": float(np.percentile(latencies, 50)),
          "p90": float(np.percentile(latencies, 90)),
          "p99": float(np.percentile(latencies, 99)),
          "max": float(latencies.max()),
      },
      "engine_steps_per_s": steps / wall,
      "engine_step_mean_ms": 1000 * (steps_after["sum"] - steps_before["sum"]) / steps,
      "cpu_cores": {
          "server": None if cpu_server is None else (_cpu_seconds(args.server_pid) - cpu_server) / wall,
          "clients": (time.process_time() - cpu_self) / wall,
      },
      "one_more_client": None if one_more is None else await one_more,
      "machine": describe(),
      "load_average_1m": [load_before, os.getloadavg()[0]],  # other work on the machine shows here
  }


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--clients", default="64", help="a number, or 'capacity' (see above)")
  parser.add_argument("--channels", type=int, default=1, choices=(1, 2), help="1: mono, 2: binaural clients")
  parser.add_argument("--seconds", type=float, default=60.0, help="streaming time after the ramp")
  parser.add_argument("--ramp-s", type=float, default=1.0, help="clients start spread over this long")
  parser.add_argument("--rate", type=float, default=48000.0, help="client sample rate, Hz")
  parser.add_argument("--chunk-ms", type=float, default=20.0, help="audio per client message")
  parser.add_argument("--hop-ms", type=float, default=10.0)
  parser.add_argument("--url", help="ws://host:port/v1/stream of a running server (default: start one)")
  parser.add_argument("--server-pid", type=int, help="that server's pid, for its CPU time")
  parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra carfac-server flags")
  args = parser.parse_args(argv)
  args.try_one_more = args.clients == "capacity"
  process = None
  if args.url is None:
    process, http = _start_server(None if args.try_one_more else int(args.clients), args.channels, args.server_args)
    args.server_pid, url = process.pid, http.replace("http", "ws") + "/v1/stream"
    uvloop.run(_wait_ready(http))
  else:
    url, http = args.url, args.url.replace("ws", "http", 1).removesuffix("/v1/stream")
  args.clients = uvloop.run(_measured_capacity(http, args.channels)) if args.try_one_more else int(args.clients)
  try:
    print(json.dumps(uvloop.run(_bench(args, url)), indent=2))
  finally:
    if process is not None:
      process.terminate()
      process.wait(30)
  return 0


if __name__ == "__main__":
  sys.exit(main())
