"""uvicorn, configured from ``Settings``, with streams flushed before it closes them.

On SIGTERM/SIGINT uvicorn closes every open WebSocket with 1012 before the
app's lifespan hears of the shutdown. ``DrainingServer`` first lets the app
drain (each stream is flushed, its frames sent, then closed with 1001).

uvicorn closes an idle keep-alive connection, but not one that never
completes a request: a client that connects and sends nothing, or a request
head a byte at a time, would hold a socket (a file descriptor) for ever.
``HeadDeadlineProtocol`` closes a connection whose request head is not
complete within ``idle_timeout_s`` of its connection (or of the previous
response); the app's own idle timeout takes over once a WebSocket is open.
"""

from __future__ import annotations

import asyncio
import functools
import math
import socket

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.app import create_app
from server.service import StreamService
from server.settings import Settings


class DrainingServer(uvicorn.Server):
  """A uvicorn server whose shutdown starts with ``service.drain()``."""

  def __init__(self, config: uvicorn.Config, service: StreamService):
    super().__init__(config)
    self.service = service

  async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
    await self.service.drain()
    await super().shutdown(sockets)


class HeadDeadlineProtocol(HttpToolsProtocol):
  """uvicorn's HTTP protocol (httptools), closing a connection whose request head is late."""

  def __init__(self, *args, head_timeout_s: float, **kwargs):
    super().__init__(*args, **kwargs)
    self._head_timeout_s = head_timeout_s
    self._head_deadline: asyncio.TimerHandle | None = None

  def connection_made(self, transport: asyncio.Transport) -> None:
    super().connection_made(transport)
    self._arm_head_deadline()

  def connection_lost(self, exc: Exception | None) -> None:
    self._disarm_head_deadline()
    super().connection_lost(exc)

  def on_headers_complete(self) -> None:
    self._disarm_head_deadline()
    super().on_headers_complete()

  def on_response_complete(self) -> None:
    super().on_response_complete()
    if not self.transport.is_closing() and not self.pipeline:
      self._arm_head_deadline()  # for the next request on this keep-alive connection

  def _arm_head_deadline(self) -> None:
    self._disarm_head_deadline()
    self._head_deadline = self.loop.call_later(self._head_timeout_s, self.transport.close)

  def _disarm_head_deadline(self) -> None:
    if self._head_deadline is not None:
      self._head_deadline.cancel()
      self._head_deadline = None


def build_server(settings: Settings) -> DrainingServer:
  """The app for ``settings`` in a uvicorn server (not started)."""
  app = create_app(settings)
  config = uvicorn.Config(
      app,
      host=settings.host,
      port=settings.port,
      log_level=settings.log_level,
      lifespan="on",
      http=functools.partial(HeadDeadlineProtocol, head_timeout_s=settings.idle_timeout_s),
      ws="websockets-sansio",
      # Above the app's own limit, so the app sees an oversized message and
      # answers with a JSON error; beyond this the WebSocket layer closes 1009 itself.
      ws_max_size=2 * settings.max_message_bytes,
      ws_per_message_deflate=False,  # float32 frames do not compress; deflate costs CPU
      timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
  )
  return DrainingServer(config, app.state.service)
