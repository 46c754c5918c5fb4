"""Server load: N clients stream real-time audio for T seconds; prints JSON.

Starts ``python -m server`` (one pool of N streams for ``--channels``-channel
clients) unless ``--url`` is given, then runs N protocol-v1 clients
(``client.stream``) in this process (uvloop), started ``--ramp-s`` apart in
all. Each sends ``--chunk-ms`` chunks of s16le audio at ``--rate`` on a
real-time schedule and reads its frames as they come. ``--clients capacity``: the server runs at its defaults
(``--capacity auto``, both ear counts) and N is the real-time capacity it
measured for ``--channels`` (``/v1/info``), the pool alone; the server
admits as many as its admission control allows with the steps as slow as
they are in the busy process, refuses the others (not retried, so the
admitted set streams undisturbed after the ramp), and once all have started
one more client tries to start: the report says what it was told (it should
be ``pool_full``).

Rolling restart (``--replicas 3 --restart-at-s T``): three servers with a
shared resume key behind HAProxy (``deploy/haproxy/haproxy.cfg``); the
clients connect through it, and T s into the streaming one replica is sent
SIGTERM (each replica admits clients / 2 streams, so the two left can take
them all). Its clients are handed over and resume on the others (start again
with the resume token, from the server's ``samples_received``, retrying a
start refused for now). The report adds the resumed streams, frames lost or
received twice (by frame index), and the latency of the frames that arrived
in the 5 s after the signal.

``--fast``: each client sends ``--seconds`` of audio as fast as the server
reads it (no pacing) and the report adds each stream's speed
in x real time (``x_real_time``: audio seconds over the time from its start
to its end message):

    python bench/bench_server.py --clients 1 --fast --seconds 30 --chunk-ms 100

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
import bisect
import collections
import gc
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx
import numpy as np
import psutil
import uvloop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe  # noqa: E402

from client.protocol import StreamRequest
from client.readiness import wait_ready
from client.stream import Session, resume_token_of, stream, with_retries


def _cpu_seconds(pid: int) -> float:
  """User + system CPU time of process ``pid``."""
  times = psutil.Process(pid).cpu_times()
  return times.user + times.system


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESUME_KEY = "bench-rolling-restart"


def _start_server(
  clients: int | None, channels: int, extra: list[str], env_extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
  """``python -m server`` with one pool of ``clients`` streams (None: the defaults); returns it and its URL."""
  port = _free_port()
  env = {**os.environ, "CARFAC_PORT": str(port), "CARFAC_LOG_LEVEL": "warning", **(env_extra or {})}
  if clients is not None:
    env |= {"CARFAC_EARS": f"[{channels}]", "CARFAC_CAPACITY": str(clients), "CARFAC_MAX_CONNECTIONS": str(clients + 8)}
  process = subprocess.Popen([sys.executable, "-m", "server", *extra], env=env, stdout=subprocess.DEVNULL)
  return process, f"http://127.0.0.1:{port}"


READY_TIMEOUT_S = 120.0  # a server compiling its pools on a busy machine


def _audio(rate: float, chunk_samples: int, channels: int, seed: int) -> np.ndarray:
  """About 1 s of tones and noise, (n, channels) float32, a whole number of chunks (looped)."""
  rng = np.random.default_rng(seed)
  t = np.arange(chunk_samples * math.ceil(rate / chunk_samples)) / rate
  x = np.stack(
      [sum(0.1 * np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 4000, 3)) + 0.03 * rng.standard_normal(len(t))
       for _ in range(channels)],
      axis=1,
  )  # fmt: skip
  return x.astype(np.float32)


class Client:
  """One real-time client: sends on schedule, records each frame's latency; resumes a handed-over stream."""

  def __init__(self, args: argparse.Namespace, index: int):
    self.args, self.index = args, index
    self.chunk_samples = round(args.rate * args.chunk_ms / 1000)
    self.audio = _audio(args.rate, self.chunk_samples, args.channels, index)
    self.sent_until: list[int] = []  # client samples sent so far, after each chunk
    self.send_times: list[float] = []  # wall time each of those chunks was sent
    self.latencies: list[tuple[float, float]] = []  # (arrival time, latency)
    self.stopped_at = math.inf  # when the audio ended (stop is sent next): later frames are the flush, not timed
    self.started_at = self.ended_at = math.nan  # the first try's start, the last connection's end message
    self.frames = 0
    self.indices: set[int] = set()
    self.repeated = 0  # frames received twice (by index)
    self.dropped = 0
    self.resumed = 0
    self.end: dict | None = None
    self.error: str | None = None  # the code of an error the server ended the stream with (or refused it with)

  async def run(self, url: str, start_at: float, stop_at: float) -> None:
    """Streams until ``stop_at``, over as many connections as hand-overs need."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    begin, token, position = time.monotonic(), None, 0
    self.started_at = begin
    while True:
      token = await self._connection(url, begin, stop_at, token, position)
      if token is None:
        return
      self.resumed += 1
      position = self.end["samples_received"]

  async def _connection(self, url: str, begin: float, stop_at: float, token: str | None, position: int) -> str | None:
    """One stream from sample ``position`` on (refusals for now retried); the resume token it ends with."""
    args = self.args
    request = StreamRequest(args.rate, args.channels, "s16le", args.hop_ms, resume_token=token)

    def attempt() -> Awaitable[Session]:
      audio = self._chunks(begin, stop_at, position)
      return stream(url, request, audio, on_ready=self._take_ready, on_frames=self._take_frames, max_size=None)

    session = await with_retries(attempt, args.retries, backoff_s=0.1)
    self.error = None if session.error is None else session.error["code"]
    self.end = session.end
    self.ended_at = time.monotonic()
    return resume_token_of(session)

  async def _chunks(self, begin: float, stop_at: float, position: int) -> AsyncIterator[np.ndarray]:
    """The looped audio from client sample ``position`` on, each chunk when real time reaches it, until ``stop_at``."""
    cut = bisect.bisect_right(self.sent_until, position)  # re-sent audio: its new send times count
    del self.sent_until[cut:], self.send_times[cut:]
    sample, rate, looped = position, self.args.rate, len(self.audio)
    fast_until = round(self.args.seconds * rate)  # --fast: this much audio, unpaced
    while sample < fast_until if self.args.fast else begin + sample / rate < stop_at:
      if not self.args.fast:  # each chunk when real time reaches it
        await asyncio.sleep(max(0.0, begin + sample / rate - time.monotonic()))
      offset = sample % looped
      chunk = min(self.chunk_samples - sample % self.chunk_samples, looped - offset)
      self.send_times.append(time.monotonic())
      self.sent_until.append(sample + chunk)
      yield self.audio[offset : offset + chunk]
      sample += chunk
    self.stopped_at = time.monotonic()

  def _take_ready(self, ready: dict[str, Any]) -> None:
    self.hop_samples = ready["hop_samples"]
    self.hop_s = ready["hop_samples"] / ready["model_rate"]

  def _take_frames(self, header: dict[str, int], rows: np.ndarray) -> None:
    """Counts a frame message's rows and times each against the chunk that completed its hop."""
    now = time.monotonic()
    self.dropped += header["dropped"]
    first, count = header["first_index"], header["count"]
    self.frames += count
    for frame in range(first, first + count):
      self.repeated += frame in self.indices
      self.indices.add(frame)
      if now < self.stopped_at:
        needed = (frame + 1) * self.hop_s * self.args.rate - 1e-6  # client samples that complete it
        chunk = min(bisect.bisect_left(self.sent_until, needed), len(self.send_times) - 1)
        self.latencies.append((now, now - self.send_times[chunk]))


async def _step_stats(http: str, channels: int) -> dict[str, float]:
  """Engine steps so far and their mean duration, from the server's /metrics."""
  async with httpx.AsyncClient(trust_env=False) as client:
    text = (await client.get(f"{http}/metrics")).text
  values = {}
  for name in ("count", "sum"):
    series = f'carfac_step_seconds_{name}{{ears="{channels}"}} '
    values[name] = next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(series)), 0.0)
  return values


async def _no_audio() -> AsyncIterator[np.ndarray]:
  """An audio source that ends at once: a stream admitted with it is stopped straight away."""
  for chunk in ():
    yield chunk


async def _one_more(url: str, args: argparse.Namespace, at: float) -> str:
  """One more client's start, once the others all stream: the error code it is refused with, or "ready"."""
  await asyncio.sleep(max(0.0, at - time.monotonic()))
  session = await stream(url, StreamRequest(args.rate, args.channels, "s16le"), _no_audio())
  return "ready" if session.error is None else session.error["code"]


async def _restart(args: argparse.Namespace, at: float) -> float:
  """SIGTERMs the first replica at ``at`` (monotonic); returns when it did."""
  await asyncio.sleep(max(0.0, at - time.monotonic()))
  args.replica_processes[0].send_signal(signal.SIGTERM)
  return time.monotonic()


def _start_haproxy(https: list[str]) -> tuple[subprocess.Popen, str]:
  """HAProxy with the project's config in front of three replicas; returns it and its stream URL."""
  port = _free_port()
  env = {**os.environ, "CARFAC_LB_BIND": f"127.0.0.1:{port}"}
  for number, http in enumerate(https, start=1):
    env[f"CARFAC_REPLICA_{number}"] = http.removeprefix("http://")
  haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
  config = os.path.join(ROOT, "deploy", "haproxy", "haproxy.cfg")
  process = subprocess.Popen([haproxy, "-db", "-f", config], env=env, stdout=subprocess.DEVNULL)
  return process, f"http://127.0.0.1:{port}"


async def _measured_capacity(http: str, channels: int) -> int:
  async with httpx.AsyncClient(trust_env=False) as client:
    return (await client.get(f"{http}/v1/info")).json()["realtime_capacity"][str(channels)]


def _percentiles(latencies: np.ndarray) -> dict[str, float]:
  if not len(latencies):
    return {"frames": 0}
  return {
    "frames": int(len(latencies)),
    "p50": float(np.percentile(latencies, 50)),
    "p90": float(np.percentile(latencies, 90)),
    "p99": float(np.percentile(latencies, 99)),
    "max": float(latencies.max()),
  }


async def _bench(args: argparse.Namespace, url: str) -> dict:
  clients = [Client(args, i) for i in range(args.clients)]
  t0 = time.monotonic() + 0.5
  stop_at = t0 + args.ramp_s + args.seconds
  cpu_self = time.process_time()
  cpu_server = _cpu_seconds(args.server_pid) if args.server_pid else None
  http = getattr(args, "metrics_http", None) or url.replace("ws", "http", 1).removesuffix("/v1/stream")
  steps_before = await _step_stats(http, args.channels)
  load_before = os.getloadavg()[0]
  wall = time.monotonic()
  runs = [asyncio.create_task(c.run(url, t0 + args.ramp_s * i / args.clients, stop_at)) for i, c in enumerate(clients)]
  one_more = asyncio.create_task(_one_more(url, args, t0 + args.ramp_s + 1.0)) if args.try_one_more else None
  restart = asyncio.create_task(_restart(args, t0 + args.ramp_s + args.restart_at_s)) if args.restart_at_s else None
  await asyncio.gather(*runs)
  wall = time.monotonic() - wall
  steps_after = await _step_stats(http, args.channels)
  steps = steps_after["count"] - steps_before["count"]
  timed = np.array([pair for c in clients for pair in c.latencies]).reshape(-1, 2)
  if args.dump_latencies:
    owner = np.concatenate([np.full(len(c.latencies), c.index) for c in clients])
    np.savez(args.dump_latencies, t0_monotonic=t0, arrival_s=timed[:, 0] - t0, latency_s=timed[:, 1], client=owner)
  latencies = timed[:, 1] * 1000
  ended = [c for c in clients if c.end is not None]
  expected = sum(c.end["model_samples"] // c.hop_samples for c in ended)
  received = sum(len(c.indices) for c in ended)
  errors = collections.Counter(c.error for c in clients if c.error is not None)
  report_restart = None
  if restart is not None:
    signalled = await restart
    after = latencies[(timed[:, 0] >= signalled) & (timed[:, 0] < signalled + 5.0)]
    report_restart = {
      "at_s": round(signalled - t0, 2),
      "streams_resumed": sum(c.resumed for c in clients),
      "frames_received_twice": sum(c.repeated for c in clients),
      "latency_ms_in_5_s_after": {
        "frames": int(len(after)),
        "p50": float(np.percentile(after, 50)),
        "p99": float(np.percentile(after, 99)),
        "max": float(after.max()),
      },
    }
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
    "latency_ms": _percentiles(latencies),
    # Once every client has started (and those over the capacity have been refused): the steady state.
    "latency_ms_after_ramp": _percentiles(latencies[timed[:, 0] >= t0 + args.ramp_s + 1.0]),
    "engine_steps_per_s": steps / wall,
    "engine_step_mean_ms": 1000 * (steps_after["sum"] - steps_before["sum"]) / steps,
    "cpu_cores": {
      "server": None if cpu_server is None else (_cpu_seconds(args.server_pid) - cpu_server) / wall,
      "clients": (time.process_time() - cpu_self) / wall,
    },
    # --fast: each stream's audio over the time from its start to its end message (compilation is done).
    "x_real_time": [round(args.seconds / (c.ended_at - c.started_at), 2) for c in ended] if args.fast else None,
    "one_more_client": None if one_more is None else await one_more,
    "rolling_restart": report_restart,
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
  parser.add_argument("--replicas", type=int, default=1, choices=(1, 3), help="3: behind HAProxy, see above")
  parser.add_argument("--restart-at-s", type=float, help="with --replicas 3: SIGTERM one replica this far in")
  parser.add_argument(
    "--retries",
    type=int,
    help="tries again a start refused for now (default 8; 0 with --clients capacity, whose refusals are the point)",
  )
  parser.add_argument(
    "--fast", action="store_true", help="each client sends --seconds of audio as fast as the server reads it"
  )
  parser.add_argument("--dump-latencies", help="also save every timed frame (arrival s, latency s, client) to this npz")
  parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra carfac-server flags")
  args = parser.parse_args(argv)
  if args.restart_at_s is not None and args.replicas != 3:
    parser.error("--restart-at-s needs --replicas 3")
  args.try_one_more = args.clients == "capacity" and args.replicas == 1
  if args.retries is None:
    args.retries = 0 if args.clients == "capacity" else 8
  processes = []
  if args.url is None:
    # With a restart, each replica holds enough for the survivors to take every stream.
    serving = args.replicas - (args.restart_at_s is not None)
    per_replica = None if args.clients == "capacity" else math.ceil(int(args.clients) / serving)
    resume = {"CARFAC_RESUME_KEY": RESUME_KEY} if args.replicas > 1 else {}
    replicas = [_start_server(per_replica, args.channels, args.server_args, resume) for _ in range(args.replicas)]
    processes = [process for process, _ in replicas]
    args.replica_processes = processes
    for process, replica_http in replicas:
      wait_ready(replica_http, READY_TIMEOUT_S, alive=lambda process=process: process.poll() is None)
    args.server_pid, http = processes[-1].pid, replicas[-1][1]  # the last replica: it is never restarted
    args.metrics_http = http
    capacity = sum(uvloop.run(_measured_capacity(h, args.channels)) for _, h in replicas)
    if args.replicas > 1:
      proxy, proxy_http = _start_haproxy([h for _, h in replicas])
      processes.append(proxy)
      wait_ready(proxy_http, READY_TIMEOUT_S, alive=lambda: proxy.poll() is None)
      http = proxy_http
    url = http.replace("http", "ws") + "/v1/stream"
  else:
    url, http = args.url, args.url.replace("ws", "http", 1).removesuffix("/v1/stream")
    capacity = uvloop.run(_measured_capacity(http, args.channels))
  args.clients = capacity if args.clients == "capacity" else int(args.clients)
  gc.collect()
  gc.freeze()  # this process's start-up objects out of the collector's walks, which would delay the clients
  try:
    print(json.dumps(uvloop.run(_bench(args, url)), indent=2))
  finally:
    for process in processes:
      process.terminate()
      process.wait(30)
  return 0


if __name__ == "__main__":
  sys.exit(main())
