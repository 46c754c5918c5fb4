"""uvicorn, configured from ``Settings``, with streams finished before it closes them.

On SIGTERM/SIGINT uvicorn closes every open WebSocket with 1012 before the
app's lifespan hears of the shutdown. ``DrainingServer`` first lets the app
drain (each stream is finished or handed over, its frames sent, then closed
with 1001).

The HTTP and WebSocket protocols are uvicorn's, with a deadline on request
heads and closes that reach the client (``server.transports``).
"""

from __future__ import annotations

import functools
import math
import socket

import uvicorn

from server.app import create_app
from server.service import StreamService
from server.settings import Settings
from server.transports import HeadDeadlineProtocol, LingeringCloseProtocol


class DrainingServer(uvicorn.Server):
  """A uvicorn server whose shutdown starts with ``service.drain()``."""

  def __init__(self, config: uvicorn.Config, service: StreamService):
    super().__init__(config)
    self.service = service

  async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
    await self.service.drain()
    await super().shutdown(sockets)


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
    ws=LingeringCloseProtocol,
    # Above the app's own limit, so the app sees an oversized message and
    # answers with a JSON error; beyond this the WebSocket layer closes 1009 itself.
    ws_max_size=2 * settings.max_message_bytes,
    ws_per_message_deflate=False,  # float32 frames do not compress; deflate costs CPU
    timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
  )
  return DrainingServer(config, app.state.service)
