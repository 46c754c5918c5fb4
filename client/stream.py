"""An asyncio protocol-v1 client (``websockets``): one stream from start to the server's close.

``stream`` sends the start message, waits for ready, sends the audio chunks
an async iterable yields (paced by that iterable: real time, or as fast as
the server reads), sends stop, and reads until the server closes, while a
reader task collects everything into a ``Session`` as it arrives (and hands
frames to ``on_frames``, for pictures drawn as they come).

    session = await stream("ws://127.0.0.1:8000/v1/stream", StreamRequest(48000.0), chunks)
    frames = session.rows("frames")          # (n_frames, channels, ears)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from client.protocol import STOP_MESSAGE, FrameDecoder, StreamRequest

OnReady = Callable[[dict[str, Any]], None]
OnFrames = Callable[[dict[str, int], np.ndarray], None]

REPLY_TIMEOUT_S = 30.0  # longest wait for ready after start, and for the close after stop

#: Error codes with which a server refuses a start that another try (or another
#: replica behind a load balancer) may accept: its pool or its connections are
#: full, it is still compiling, or it is draining.
RETRYABLE_ERRORS = frozenset({"pool_full", "too_many_connections", "not_ready", "shutting_down"})


class MissingRowsError(ValueError):
  """Rows of an output never arrived (the server dropped them for a slow reader)."""


class StreamFailed(Exception):
  """The server refused the stream, or ended it without an end message."""


@dataclasses.dataclass
class Session:
  """Everything one stream received: ready, frame headers and rows, other JSON, the close code.

  With ``keep_raw``, also every binary message exactly as it came (``raw``):
  two runs of the same audio can then be compared byte for byte.
  """

  ready: dict[str, Any] | None = None
  headers: list[dict[str, int]] = dataclasses.field(default_factory=list)
  payloads: list[np.ndarray] = dataclasses.field(default_factory=list)
  texts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  close_code: int | None = None
  keep_raw: bool = False
  raw: list[bytes] = dataclasses.field(default_factory=list)  # the binary messages verbatim, with keep_raw
  _decoder: FrameDecoder | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

  @property
  def end(self) -> dict[str, Any] | None:
    return next((t for t in self.texts if t["type"] == "end"), None)

  @property
  def error(self) -> dict[str, Any] | None:
    return next((t for t in self.texts if t["type"] == "error"), None)

  def check(self) -> None:
    """Raises ``StreamFailed`` unless the stream ended with an end message."""
    if self.error is not None:
      raise StreamFailed(f"the server reported {self.error['code']}: {self.error['message']}")
    if self.end is None:
      raise StreamFailed(f"the server closed the stream (code {self.close_code}) without an end message")

  def row_shape(self, kind: str) -> tuple[int, ...]:
    """The shape of one row of output ``kind``, from the ready message (see README, "Protocol v1")."""
    ready = self.ready
    if kind == "pitchogram":
      return (ready["pictures"]["lags"] + 2, 1)
    if kind == "sai":
      return (ready["channels"], ready["pictures"]["sai_width"])
    return (ready["channels"], ready["ears"])

  def rows(self, kind: str, fill: float | None = None) -> np.ndarray:
    """Every row of output ``kind`` (``frames``, ``naps``, ``bm``, ``pitchogram``, ``sai``) in stream order.

    Each row sits at its stream index (the headers' ``first_index``), so rows
    the server dropped for a slow reader leave gaps: with ``fill`` None a gap
    raises ``MissingRowsError``, otherwise its rows are ``fill``. The total
    comes from the end message when there is one (a dropped tail is a gap too).
    """
    if self.ready is None:
      return np.zeros((0,), np.float32)
    number = self.ready["kinds"][kind]
    parts = [(h["first_index"], p) for h, p in zip(self.headers, self.payloads) if h["kind"] == number]
    received = parts[-1][0] + len(parts[-1][1]) if parts else 0
    total = self.end["rows"][kind] if self.end is not None else received
    out = np.full((total, *self.row_shape(kind)), np.nan if fill is None else fill, np.float32)
    present = np.zeros(total, bool)
    for first, rows in parts:
      out[first : first + len(rows)] = rows
      present[first : first + len(rows)] = True
    if fill is None and not present.all():
      missing = np.flatnonzero(~present)
      raise MissingRowsError(f"{kind}: {len(missing)} of {total} rows missing, the first at index {missing[0]}")
    return out

  def take_frames(self, data: bytes) -> tuple[dict[str, int], np.ndarray]:
    """Files a binary frame message (decoded as the ready message says); returns (header, rows)."""
    if self.ready is None:
      raise ValueError("a frame message came before the ready message")
    if self._decoder is None:
      self._decoder = FrameDecoder.from_ready(self.ready)
    header, rows = self._decoder.decode(data)
    if self.keep_raw:
      self.raw.append(data)
    self.headers.append(header)
    self.payloads.append(rows)
    return header, rows

  def take_text(self, message: str) -> dict[str, Any]:
    """Files a JSON message (ready, end, error); returns it."""
    text = json.loads(message)
    if text["type"] == "ready":
      self.ready = text
    else:
      self.texts.append(text)
    return text


async def collect(
  ws: ClientConnection, session: Session, on_ready: OnReady | None = None, on_frames: OnFrames | None = None
) -> Session:
  """Reads until the server closes, filing every message into ``session``; records the close code."""
  try:
    async for message in ws:
      if isinstance(message, bytes):
        header, rows = session.take_frames(message)
        if on_frames is not None:
          on_frames(header, rows)
      elif (text := session.take_text(message))["type"] == "ready" and on_ready is not None:
        on_ready(text)
  except ConnectionClosed:
    pass  # closed with an error code: recorded below
  session.close_code = ws.close_code
  return session


async def stream(
  url: str,
  request: StreamRequest,
  audio: AsyncIterable[np.ndarray],
  *,
  headers: Mapping[str, str] | None = None,
  on_ready: OnReady | None = None,
  on_frames: OnFrames | None = None,
  reply_timeout_s: float = REPLY_TIMEOUT_S,
  keep_raw: bool = False,
  **connect_args: Any,
) -> Session:
  """One stream of ``audio`` chunks ((n, channels) float) through protocol v1; returns all that came back.

  No audio is sent unless the server answers start with ready (an error
  answer is in ``session.error``). A server that closes early (an error, a
  shutdown) ends the sending; what it sent is in the session. ``headers``
  are extra handshake headers (``Authorization: Bearer <token>``);
  ``keep_raw`` keeps the binary messages verbatim (``Session.raw``);
  ``connect_args`` go to ``websockets.connect`` (no proxy, no compression
  unless given).
  """
  session = Session(keep_raw=keep_raw)
  ready = asyncio.Event()

  def take_ready(message: dict[str, Any]) -> None:
    ready.set()
    if on_ready is not None:
      on_ready(message)

  options = {"proxy": None, "compression": None, **connect_args}
  async with connect(url, additional_headers=headers, **options) as ws:
    reader = asyncio.create_task(collect(ws, session, take_ready, on_frames))
    try:
      with contextlib.suppress(ConnectionClosed):  # refused at once (a token, an origin): the reader has why
        await ws.send(request.start_message())
      if await _ready_or_closed(ready, reader, reply_timeout_s):
        await _send(ws, request, audio, reader)
      async with asyncio.timeout(reply_timeout_s):
        await reader
    finally:
      reader.cancel()  # a no-op once it has finished
  return session


def joined(sessions: list[Session]) -> Session:
  """One stream carried by several connections (resumed after drains): all their rows, the last end.

  Rows keep their stream indices, so ``rows`` of the result reads them in
  order; the ready message is the first connection's.
  """
  whole = Session(ready=sessions[0].ready, close_code=sessions[-1].close_code)
  for session in sessions:
    whole.headers += session.headers
    whole.payloads += session.payloads
  whole.texts = [t for s in sessions[:-1] for t in s.texts if t["type"] != "end"] + sessions[-1].texts
  return whole


def resume_token_of(session: Session) -> str | None:
  """The token to continue ``session`` with, if a draining server handed it over."""
  end = session.end
  return end.get("resume_token") if end is not None and end["reason"] == "shutdown" else None


def refused_for_now(session: Session) -> bool:
  """Whether the server refused the start (no ready) with an error worth another try."""
  return session.ready is None and session.error is not None and session.error["code"] in RETRYABLE_ERRORS


OnRetry = Callable[[int, dict[str, Any], float], None]


async def with_retries(
  attempt: Callable[[], Awaitable[Session]],
  retries: int,
  backoff_s: float,
  on_retry: OnRetry | None = None,
) -> Session:
  """``attempt()`` again while the server refuses it for now, at most ``retries`` more times.

  Try n + 1 waits ``backoff_s * 2**(n - 1)`` after a refusal: 0.5, 1, 2 s for
  a ``backoff_s`` of 0.5. Nothing was streamed on a refused try (audio flows
  only after ready), so the same audio source serves the next one. Returns
  the last try's session; ``on_retry(try number, error, delay)`` is told
  before each wait.
  """
  tries = 0
  while True:
    session = await attempt()
    if tries == retries or not refused_for_now(session):
      return session
    delay = backoff_s * 2**tries
    tries += 1
    if on_retry is not None:
      on_retry(tries, session.error, delay)
    await asyncio.sleep(delay)


async def _ready_or_closed(ready: asyncio.Event, reader: asyncio.Task, timeout_s: float) -> bool:
  """True once ready came, False if the server closed first; ``TimeoutError`` if neither happened in time."""
  waiting = asyncio.create_task(ready.wait())
  try:
    await asyncio.wait([waiting, reader], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
  finally:
    waiting.cancel()
  if not ready.is_set() and not reader.done():
    raise TimeoutError(f"the server did not answer the start message within {timeout_s:g} s")
  return ready.is_set()


async def _send(
  ws: ClientConnection, request: StreamRequest, audio: AsyncIterable[np.ndarray], reader: asyncio.Task
) -> None:
  """The audio chunks, then stop; ends early, quietly, if the server closes or the reader failed."""
  try:
    async for chunk in audio:
      if reader.done():
        return  # awaiting the reader tells why
      await ws.send(request.encode(chunk))
    await ws.send(STOP_MESSAGE)
  except ConnectionClosed:
    pass  # the server ended the stream (an error, a shutdown): the reader has the rest
