"""One client of ``WS /v1/stream``, from accept to close: protocol v1's state machine.

    accept -> access checks -> admission -> start -> ready
           -> audio ... (frames flow back from a sender task) -> stop
           -> finish -> end -> close 1000

A start with ``resume_token`` continues a stream another replica handed over.
Every failure becomes a JSON ``error`` and its close code (``ProtocolError``);
anything unexpected is reported as ``internal`` (1011). When the server
drains, the conversation is cancelled where it waits, the stream is finished
as after a stop (with a resume key: handed over, its ``end`` carrying a
resume token, see ``server.resume``), and the connection closes with 1001.
The words for a stream's ends: ``server``.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from server.access import check_access
from server.protocol import KIND_NAMES, ErrorKind, ProtocolError, StartMessage, negotiate, parse_json, parse_start
from server.service import StreamService
from server.stream_session import ClientGone, StreamSession

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 2.0  # longest wait to deliver an error and close to an unresponsive client


class Connection:
  """Runs one WebSocket conversation."""

  def __init__(self, websocket: WebSocket, service: StreamService):
    self._ws, self._service = websocket, service
    self._settings = service.settings
    self._session: StreamSession | None = None
    self._sender: asyncio.Task | None = None
    self._conversation: asyncio.Task | None = None
    self._client_gone = False  # a send failed: the client disconnected

  async def run(self) -> None:
    try:
      await self._ws.accept()
      check_access(self._ws.headers, self._ws.query_params, self._settings)
      with self._service.admit(self):
        await self._converse_and_end()
    except ProtocolError as err:
      self._leave_engine()  # the slot is free before the (up to 2 s) farewell
      await self._fail(err)
    except (ClientGone, WebSocketDisconnect):
      pass
    except Exception:
      logger.exception("connection failed")
      self._leave_engine()
      await self._fail(ProtocolError(ErrorKind.INTERNAL, "internal server error"))
    finally:
      for task in (self._conversation, self._sender):
        if task is not None:
          task.cancel()
      self._leave_engine()

  def _leave_engine(self) -> None:
    if self._session is not None:
      self._session.leave_engine()

  def drain(self) -> None:
    """The server drains: stop listening to the client, finish or hand over the stream, close 1001."""
    if self._conversation is not None:
      self._conversation.cancel()

  async def _converse_and_end(self) -> None:
    self._conversation = asyncio.create_task(self._converse())
    await asyncio.wait([self._conversation])
    if not self._conversation.cancelled():
      self._conversation.result()  # raises what ended it
      await self._end("stop", 1000)
    elif self._session is not None:
      await self._end("shutdown", ErrorKind.SHUTTING_DOWN.close_code, hand_over=self._service.hands_over(self._session))
    else:
      raise ProtocolError(ErrorKind.SHUTTING_DOWN, "the server is shutting down")

  async def _converse(self) -> None:
    """start -> ready -> audio until stop (returns at stop)."""
    start = await self._receive_start()
    spec = negotiate(start, self._settings)
    self._session = session = await self._service.open_session(spec, start.resume_token)
    await self._ws.send_json(session.ready_message())
    self._sender = asyncio.create_task(self._send_frames(session))
    while True:
      message = await self._receive()
      if isinstance(message, bytes):
        session.push(message)
        await session.wait_for_room()
      elif parse_json(message)["type"] == "stop":
        return
      else:
        raise ProtocolError(ErrorKind.INVALID_MESSAGE, 'only audio or {"type": "stop"} may follow start')

  async def _receive_start(self) -> StartMessage:
    message = await self._receive()
    if isinstance(message, bytes):
      raise ProtocolError(ErrorKind.BINARY_BEFORE_START, "audio was sent before the start message")
    start = parse_json(message)
    if start["type"] != "start":
      raise ProtocolError(ErrorKind.INVALID_MESSAGE, 'the first message must be {"type": "start", ...}')
    return parse_start(start)

  async def _receive(self) -> bytes | str:
    """The next message (binary or text), within the idle timeout and the size limit."""
    idle = self._settings.idle_timeout_s
    try:
      async with asyncio.timeout(idle):
        message = await self._ws.receive()
    except TimeoutError:
      raise ProtocolError(ErrorKind.IDLE_TIMEOUT, f"no message for {idle:g} s") from None
    if message["type"] == "websocket.disconnect":
      raise ClientGone()
    data = message.get("bytes")
    data = message["text"] if data is None else data
    size = len(data) if isinstance(data, bytes) else len(data.encode())
    limit = self._settings.max_message_bytes
    if size > limit:
      raise ProtocolError(ErrorKind.MESSAGE_TOO_BIG, f"a {size}-byte message is over the limit of {limit} bytes")
    return data

  async def _send_frames(self, session: StreamSession) -> None:
    """The sender task: the outbox, in order, until it has ended and is empty."""
    sent = self._service.metrics.frames_sent
    try:
      while (item := await session.outbox.get()) is not None:
        message, encoded = item
        await self._ws.send_bytes(encoded)
        sent.labels(KIND_NAMES[message.kind]).inc(len(message.rows))
    except WebSocketDisconnect:
      # Whatever the conversation waits for (the engine's results of a
      # finishing stream, room in the input queue) ends now with
      # ``ClientGone``, so the slot is given back within one step of the
      # disconnect being noticed.
      self._client_gone = True
      session.abandon()

  async def _end(self, reason: str, close_code: int, hand_over: bool = False) -> None:
    """Finishes the stream, sends what is left, then ``end`` and the close.

    ``hand_over`` (a drain with a resume key): hands the stream over instead
    of finishing it; the rows of the full blocks, then ``end`` with a resume
    token. The samples of the unfinished block travel in the token instead
    of being zero-padded, so the stream continues elsewhere as if never
    stopped, and no row is sent twice.
    """
    session = self._session
    if hand_over:
      session.hand_over()
    else:
      session.finish()
    idle = self._settings.idle_timeout_s
    token = None
    try:
      async with asyncio.timeout(idle):
        await session.wait_done()
        if hand_over:
          token = await self._service.resume_token(session)
        self._leave_engine()  # the engine's part is over: the slot is free while the client reads
        session.outbox.end()
        if self._sender is not None:
          await self._sender
    except TimeoutError:
      raise ProtocolError(ErrorKind.IDLE_TIMEOUT, f"the client did not read its frames within {idle:g} s") from None
    if self._client_gone:
      raise ClientGone()  # (the WebSocket is closed: no end message to send)
    await self._ws.send_json(session.end_message(reason, token))
    await self._ws.close(close_code)

  async def _fail(self, error: ProtocolError) -> None:
    """Reports ``error`` to the client (if it still listens) and closes with its code."""
    self._service.metrics.errors.labels(error.kind.code).inc()
    if self._sender is not None:
      self._sender.cancel()
    try:
      async with asyncio.timeout(_CLOSE_TIMEOUT_S):
        await self._ws.send_json(error.to_json())
        await self._ws.close(error.kind.close_code)
    except (TimeoutError, WebSocketDisconnect, RuntimeError):
      pass  # the client is gone or not reading: nothing more to tell it
