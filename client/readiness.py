"""Waiting for a server (or a proxy in front of replicas) to serve streams: ``GET /readyz`` until 200.

A server answers ``/readyz`` with 503 while its pools compile and once it
drains (README, "Endpoints"); before it listens, connections are refused. Both
mean "not yet", so ``wait_ready`` polls through them, with the standard
library and no HTTP proxy from the environment (the address is the server's
own, usually loopback).
"""

from __future__ import annotations

import http.client
import time
import urllib.request
from collections.abc import Callable

READY_TIMEOUT_S = 60.0
POLL_S = 0.05

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def is_ready(http_url: str) -> bool:
  """Whether ``http_url`` (``http://host:port``) answers ``/readyz`` with 200 now."""
  try:
    with _DIRECT.open(f"{http_url}/readyz", timeout=5) as response:
      return response.status == 200
  except (OSError, http.client.HTTPException):  # refused, reset, timed out, or an error status such as 503
    return False


def wait_ready(http_url: str, timeout_s: float = READY_TIMEOUT_S, alive: Callable[[], bool] | None = None) -> None:
  """Returns once ``http_url`` is ready; ``TimeoutError`` after ``timeout_s``.

  ``alive`` (e.g. "the server process has not exited") is asked between
  polls: ``RuntimeError`` as soon as it says no, rather than waiting out the
  timeout for a server that will never answer.
  """
  deadline = time.monotonic() + timeout_s
  while not is_ready(http_url):
    if alive is not None and not alive():
      raise RuntimeError(f"{http_url} stopped before it was ready")
    if time.monotonic() > deadline:
      raise TimeoutError(f"{http_url} was not ready within {timeout_s:g} s")
    time.sleep(POLL_S)
