"""uvicorn's HTTP and WebSocket protocols, with the deadlines and closes this service needs.

``HeadDeadlineProtocol`` (HTTP): uvicorn closes an idle keep-alive
connection, but not one that never completes a request: a client that
connects and sends nothing, or a request head a byte at a time, would hold a
socket (a file descriptor) for ever. It closes a connection whose request
head is not complete within ``head_timeout_s`` of its connection (or of the
previous response); the app's own idle timeout takes over once a WebSocket
is open.

``LingeringCloseProtocol`` (WebSocket): when the WebSocket layer itself fails
a connection (a frame over ``ws_max_size``: 1009; text that is not UTF-8:
1007), uvicorn writes the close frame and closes the socket at once. If the
client is still sending, its data lies unread in the kernel's receive buffer,
and closing a socket with unread data sends a TCP reset (RFC 1122 4.2.2.13),
on which the client's kernel discards what the client has not read yet, the
close frame included: the client sees 1006 instead of the documented code.
This protocol instead half-closes (a FIN after the close frame), reads and
discards until the client closes its side, and drops the connection only
after ``LINGER_S`` if it never does.
"""

from __future__ import annotations

import asyncio

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

LINGER_S = 2.0  # longest wait for a failed client to close its side


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


class LingeringCloseProtocol(WebSocketsSansIOProtocol):
  """uvicorn's websockets-sansio protocol, whose own failures deliver their close frame."""

  _failed = False  # the WebSocket layer failed the connection: lingering until the client closes

  def handle_parser_exception(self) -> None:
    if self._failed:
      return  # websockets' parser now discards whatever the client still sends
    self._failed = True
    close = self.conn.close_sent
    self.queue.put_nowait({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
    self.transport.write(b"".join(self.conn.data_to_send()))  # the close frame
    self.close_sent = True
    self.transport.write_eof()  # FIN once the close frame is out; reading goes on
    if self.read_paused:
      self.read_paused = False
      self.transport.resume_reading()
    # The client's FIN ends the connection (``eof_received`` returns None: the
    # transport closes); this deadline ends it if the FIN never comes.
    self.close_timer = self.loop.call_later(LINGER_S, self.transport.close)

  async def send(self, message: ASGISendEvent) -> None:
    if self._failed:
      raise ClientDisconnected()  # as after a lost connection: the app's frames have nowhere to go
    await super().send(message)
