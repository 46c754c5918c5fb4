"""Shared by the reliability tests: a server process to watch, and a client that keeps raw bytes.

- ``ServerProcess``: ``python -m server`` configured by ``CARFAC_*`` variables
  on an ephemeral 127.0.0.1 port, with what a test needs to watch it from the
  outside: its listening addresses, open file descriptors and resident memory
  (Linux ``/proc``), its metrics, and every line it logged.
- ``record``: one protocol-v1 stream keeping every binary message exactly as
  received, so two runs of the same audio can be compared byte for byte.
- ``abort``: drops a client's TCP connection without a WebSocket close (RST);
  ``small_buffer_socket``: a connection for a client that stops reading.
- ``compile_cache``: a JAX compilation cache shared by the session's server
  processes, so pools of one shape compile once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest
from server_harness import AUTH, TIMEOUT_S
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def listening_addresses(pid: int) -> list[tuple[str, int]]:
  """(IP, port) of every TCP socket process ``pid`` listens on (IPv4 and IPv6)."""
  fd_dir = f"/proc/{pid}/fd"
  inodes = set()
  for fd in os.listdir(fd_dir):
    try:
      target = os.readlink(f"{fd_dir}/{fd}")
    except FileNotFoundError:
      continue  # closed meanwhile
    if target.startswith("socket:["):
      inodes.add(target[8:-1])
  addresses = []
  for table, size in (("tcp", 4), ("tcp6", 16)):
    with open(f"/proc/{pid}/net/{table}") as rows:
      for row in list(rows)[1:]:
        fields = row.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == _LISTEN and inode in inodes:
          hex_ip, hex_port = local.split(":")
          # /proc prints the address as 32-bit words in host (little-endian) order.
          words = struct.unpack(f"<{size // 4}I", bytes.fromhex(hex_ip))
          ip = socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, struct.pack(f">{size // 4}I", *words))
          addresses.append((ip, int(hex_port, 16)))
  return addresses


def metric(text: str, series: str) -> float:
  """The value of one series (e.g. ``carfac_connections``) in Prometheus text; 0 if absent."""
  return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(series + " ")), 0.0)


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
    self.log: list[str] = []  # every line so far
    threading.Thread(target=self._read, daemon=True).start()

  @classmethod
  def serving(cls, **settings: Any) -> ServerProcess:
    """A server on an ephemeral port (``CARFAC_<NAME>`` for each setting), once it is ready.

    Without the pool with pictures unless asked for (``pitchogram=True``): it
    costs start-up time that these servers' tests do not need.
    """
    env = {"CARFAC_PORT": "0", "CARFAC_LOG_LEVEL": "warning", "CARFAC_PITCHOGRAM": "false"}
    for name, value in settings.items():
      env[f"CARFAC_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    server = cls(env)
    try:
      server.wait_listening()
      server.wait_ready()
    except BaseException:
      server.process.kill()
      raise
    return server

  def _read(self) -> None:
    for line in self.process.stdout:
      self.log.append(line)
      self.lines.put(line)

  def wait_for_line(self, pattern: str) -> re.Match:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
      line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
      if match := re.search(pattern, line):
        return match

  def wait_listening(self) -> None:
    """Waits until the process listens; sets ``http`` and ``ws`` from its (only) address."""
    deadline = time.monotonic() + TIMEOUT_S
    while not (addresses := listening_addresses(self.pid)):
      assert self.process.poll() is None, "".join(self.log)
      assert time.monotonic() < deadline, "the server did not listen"
      time.sleep(0.02)
    [(ip, port)] = addresses
    self.http, self.ws = f"http://{ip}:{port}", f"ws://{ip}:{port}/v1/stream"

  def wait_ready(self) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    with httpx.Client(trust_env=False, timeout=5) as client:
      while client.get(f"{self.http}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.05)

  @property
  def pid(self) -> int:
    return self.process.pid

  def open_fds(self) -> int:
    return len(os.listdir(f"/proc/{self.pid}/fd"))

  def rss_bytes(self) -> int:
    """Resident memory (VmRSS)."""
    with open(f"/proc/{self.pid}/status") as status:
      kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib * 1024

  def metrics(self) -> str:
    return httpx.get(f"{self.http}/metrics", trust_env=False, timeout=5).text

  def faults(self) -> list[str]:
    """Logged tracebacks and errors (a server fault, even one a client never saw)."""
    return [line for line in self.log if "Traceback" in line or line.startswith("ERROR")]

  def stop(self, timeout: float = 10.0) -> int:
    """SIGTERM, then the exit status (killed if it does not exit within ``timeout``)."""
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)
    try:
      return self.process.wait(timeout)
    finally:
      self.process.kill()


@dataclasses.dataclass
class Recording:
  """One stream as received: the ready message, every binary message verbatim, the texts, the close code."""

  ready: dict[str, Any] | None = None
  binary: list[bytes] = dataclasses.field(default_factory=list)
  texts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  close_code: int | None = None


async def receive_all(ws: ClientConnection, recording: Recording, on_ready: asyncio.Event | None = None) -> Recording:
  """Reads until the server closes: the ready message (then sets ``on_ready``), binary messages, other texts."""
  try:
    async for message in ws:
      if isinstance(message, bytes):
        recording.binary.append(message)
      elif (text := json.loads(message))["type"] == "ready":
        recording.ready = text
        if on_ready is not None:
          on_ready.set()
      else:
        recording.texts.append(text)
  except ConnectionClosed:
    pass  # an error close: recorded below
  recording.close_code = ws.close_code
  return recording


async def record(
  url: str,
  audio: np.ndarray,
  rate: float,
  *,
  chunk_frames: int = 960,
  pause_s: float = 0.0,
  before_stop: asyncio.Event | None = None,
  under_way: asyncio.Event | None = None,
  start: dict[str, Any] | None = None,
) -> Recording:
  """Streams f32le ``audio`` (n, channels) in chunks, ``pause_s`` apart; stops once ``before_stop`` is set.

  The frames depend only on the audio, not on when it was sent, so two runs
  of the same call give the same bytes however busy the server was.
  ``under_way`` is set once the ready message came (the stream holds a slot).
  """
  message = {"type": "start", "sample_rate": rate, "channels": audio.shape[1], "format": "f32le", **(start or {})}
  recording = Recording()
  async with asyncio.timeout(TIMEOUT_S), connect(url, additional_headers=AUTH, proxy=None) as ws:
    await ws.send(json.dumps(message))
    reader = asyncio.create_task(receive_all(ws, recording, under_way))
    try:
      for first in range(0, len(audio), chunk_frames):
        await ws.send(audio[first : first + chunk_frames].astype("<f4").tobytes())
        await asyncio.sleep(pause_s)
      if before_stop is not None:
        await before_stop.wait()
      await ws.send(json.dumps({"type": "stop"}))
    except ConnectionClosed:
      pass  # closed early by the server: the reader has its error or end
    await reader
  return recording


def small_buffer_socket(http: str, receive_buffer: int = 8192) -> socket.socket:
  """A client socket connected to ``http`` whose kernel receive buffer stays small (no autotuning)."""
  host, port = http.removeprefix("http://").split(":")
  sock = socket.socket()
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
  sock.connect((host, int(port)))
  return sock


def abort(ws: ClientConnection) -> None:
  """Ends the TCP connection at once with a reset: no WebSocket close frame, no FIN."""
  if ws.transport.is_closing():
    return  # the server closed it first
  sock = ws.transport.get_extra_info("socket")
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
  ws.transport.abort()


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory) -> str:
  """One JAX compilation cache for every server process of the session: equal pools compile once."""
  return str(tmp_path_factory.mktemp("xla-cache"))
