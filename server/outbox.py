"""A client's bounded queue of outgoing frame messages (the slow-reader policy).

The engine produces frames at the pace of the audio; a client that reads
slower than that (or not at all) must not make the server buffer without
bound. Past ``limit`` queued messages the oldest is dropped, and the number
of rows it held is reported in the ``dropped`` field of the next message
that is sent, so the client knows exactly what it missed.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from server.protocol import FrameMessage


class Outbox:
  """FIFO of frame messages for one connection; drops the oldest past ``limit``."""

  def __init__(self, limit: int, on_drop: Callable[[FrameMessage], None]):
    self.limit = limit
    self._on_drop = on_drop
    self._queue: collections.deque[FrameMessage] = collections.deque()
    self._nonempty = asyncio.Event()
    self._ended = False
    self._dropped_since_sent = 0
    self.dropped_rows = 0  # rows dropped over the connection's life

  def put(self, message: FrameMessage) -> None:
    """Queues ``message``; drops the oldest queued message if over the limit."""
    self._queue.append(message)
    if len(self._queue) > self.limit:
      oldest = self._queue.popleft()
      rows = len(oldest.rows)
      self._dropped_since_sent += rows
      self.dropped_rows += rows
      self._on_drop(oldest)
    self._nonempty.set()

  def end(self) -> None:
    """No more messages: ``get`` returns None once the queue is empty (the stream's ``end`` message follows)."""
    self._ended = True
    self._nonempty.set()

  async def get(self) -> tuple[FrameMessage, bytes] | None:
    """The next message and its encoding (reporting the drops since the last one)."""
    while not self._queue:
      if self._ended:
        return None
      self._nonempty.clear()
      await self._nonempty.wait()
    message = self._queue.popleft()
    encoded = message.encode(self._dropped_since_sent)
    self._dropped_since_sent = 0
    return message, encoded
