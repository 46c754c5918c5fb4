"""Shared by the reliability tests: a server process to watch from the outside, and rude clients.

- ``ServerProcess``: ``python -m server`` configured by ``CARFAC_*`` variables
  on an ephemeral 127.0.0.1 port, with what a test needs to watch it from the
  outside: its listening addresses, open file descriptors and resident memory
  (``psutil``), its metrics, and every line it logged. Its streams go through
  ``server_harness.stream`` (``keep_raw`` to compare two runs byte for byte).
- ``abort``: drops a client's TCP connection without a WebSocket close (RST);
  ``small_buffer_socket``: a connection for a client that stops reading.
- ``compile_cache``: a JAX compilation cache shared by the session's server
  processes, so pools of one shape compile once.
"""

from __future__ import annotations

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
import psutil
import pytest
from server_harness import TIMEOUT_S
from websockets.asyncio.client import ClientConnection

from client import readiness


def listening_addresses(pid: int) -> list[tuple[str, int]]:
  """(IP, port) of every TCP socket process ``pid`` listens on (IPv4 and IPv6)."""
  sockets = psutil.Process(pid).net_connections(kind="tcp")
  return [(s.laddr.ip, s.laddr.port) for s in sockets if s.status == psutil.CONN_LISTEN]


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
    self.watched = psutil.Process(self.process.pid)
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
    """Waits until ``/readyz`` answers 200; fails with the log if the process exits first."""
    try:
      readiness.wait_ready(self.http, TIMEOUT_S, alive=lambda: self.process.poll() is None)
    except RuntimeError as exited:
      raise AssertionError("".join(self.log)) from exited

  @property
  def pid(self) -> int:
    return self.process.pid

  def open_fds(self) -> int:
    return self.watched.num_fds()

  def rss_bytes(self) -> int:
    """Resident memory (Linux: VmRSS)."""
    return self.watched.memory_info().rss

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
