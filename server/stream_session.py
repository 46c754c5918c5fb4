"""One client's stream: audio messages in, frame messages out (on the event loop).

    bytes -> decode_audio (format, whole samples, NaN/Inf rejected)
          -> BlockFeed (resampled to the model rate, re-blocked)
          -> EngineStream (queued for the engine thread)
    BlockResult -> frames / raw rows / pictures over real samples only -> Outbox

A stream's tail is computed by ``finish``: the resampler's tail and a
zero-padded last block (the words for a stream's ends: ``server``). As in
``engine.runner``, frames whose hop reaches into that padding are not sent,
raw rows stop at the last real sample, and a block's pitchogram row and SAI
frame are sent only if the whole block is real audio, so every row sent is
computed from the client's audio alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from engine.block_feed import BlockFeed
from engine.pool import BlockResult, SlotState, StreamPool
from server.engine_thread import EngineStream, LagError
from server.hearing import StreamHearing
from server.metrics import Metrics
from server.outbox import Outbox
from server.protocol import (
  KIND_NAMES,
  OUTPUT_KINDS,
  ErrorKind,
  FrameMessage,
  ProtocolError,
  StreamSpec,
  decode_audio,
  end_message,
  pictures_description,
  ready_message,
)
from server.resume import Checkpoint


class ClientGone(Exception):
  """The client disconnected."""


def _pitchogram_rows(result: BlockResult) -> np.ndarray:
  """A block's pitchogram row (1, lags + 2, 1): the lag profile, then the F2 and F1 coordinates."""
  pictures = result.pictures
  return np.concatenate([pictures.lag_profile, pictures.vowel_coords])[None, :, None]


class StreamSession:
  """The audio path and bookkeeping of one started stream."""

  def __init__(
    self,
    spec: StreamSpec,
    pool: StreamPool,
    metrics: Metrics,
    send_queue: int,
    input_queue: int,
    hearing: StreamHearing | None = None,
  ):
    self.spec = spec
    self.hearing = hearing
    self._pool = pool  # read only here: its design and sizes
    self._metrics = metrics
    self._block_size = pool.block_size
    self._input_queue = input_queue
    self.feed = BlockFeed(spec.sample_rate, pool.hypers.fs, spec.ears, pool.block_size)
    self.outbox = Outbox(send_queue, on_drop=self._count_drop)
    self.stream: EngineStream | None = None
    self.samples_received = 0  # per ear, at the client's rate
    self.rows = {name: 0 for name in spec.outputs}  # rows produced (sent or dropped), by kind
    self._sequence = 0
    self._submitted = 0  # blocks handed to the engine
    self._done = 0  # blocks whose results came back
    self._progress = asyncio.Event()
    self._error: Exception | None = None
    self._abandoned = False  # the client is gone

  def checkpoint(self, slot: SlotState, design: str, expires_at: float) -> Checkpoint:
    """This stream, handed over between blocks, as a ``Checkpoint`` (``slot``: its pool state, exported then)."""
    return Checkpoint(
      design=design,
      start=self.spec.identity(),
      slot=slot,
      pending=self.feed.held_samples(),
      samples_received=self.samples_received,
      blocks_done=self._done,
      rows=dict(self.rows),
      messages=self._sequence,
      expires_at=expires_at,
    )

  def restore(self, checkpoint: Checkpoint) -> None:
    """Continues the counters and the input of the checkpointed stream (before any audio of this connection)."""
    if set(checkpoint.rows) != set(self.rows):
      raise ValueError("the checkpoint's outputs are not this stream's")
    self.feed.restore(checkpoint.blocks_done, checkpoint.pending)
    self.samples_received = checkpoint.samples_received
    self.rows = dict(checkpoint.rows)
    self._sequence = checkpoint.messages
    self._submitted = self._done = checkpoint.blocks_done

  def attach(self, stream: EngineStream) -> None:
    """Binds the engine slot this stream was given."""
    self.stream = stream
    self._metrics.active_streams.labels(str(self.spec.ears)).inc()

  def leave_engine(self) -> None:
    """Gives the engine slot back (idempotent); results still in flight are ignored."""
    if self.stream is not None and not self.stream.left:
      self.stream.leave()
      self._metrics.active_streams.labels(str(self.spec.ears)).dec()

  def push(self, data: bytes) -> None:
    """One binary audio message; raises ``ProtocolError`` for bad audio."""
    samples = decode_audio(data, self.spec)
    self.samples_received += len(samples)
    self._submit(self.feed.push(samples), final=False)

  def finish(self) -> None:
    """No more audio: queues the resampler's tail and the padded last block."""
    self._submit(self.feed.finish(), final=True)

  def hand_over(self) -> None:
    """No more audio here, the stream goes on elsewhere: queues the resampler's tail, no padded block."""
    self._submit(self.feed.flush_resampler(), final=False)

  def _submit(self, blocks: list[np.ndarray], final: bool) -> None:
    self._submitted += len(blocks)
    self.stream.submit(blocks, final)

  async def wait_for_room(self) -> None:
    """Waits while more than ``input_queue`` blocks await the engine (back-pressure)."""
    await self._wait_until(lambda: self._submitted - self._done <= self._input_queue)

  async def wait_done(self) -> None:
    """Waits until every submitted block's result has been queued for sending."""
    await self._wait_until(lambda: self._done == self._submitted)

  def abandon(self) -> None:
    """The client is gone: every wait on this stream ends at once with ``ClientGone``."""
    self._abandoned = True
    self._progress.set()

  async def _wait_until(self, condition) -> None:
    """Waits for ``condition``; first raises what ended the stream meanwhile (checked at every call)."""
    while True:
      if self._abandoned:
        raise ClientGone()
      if isinstance(self._error, LagError):
        raise ProtocolError(ErrorKind.OVERLOADED, f"the server fell {self._error}") from None
      if self._error is not None:
        raise ProtocolError(ErrorKind.INTERNAL, "the engine failed on this stream") from self._error
      if condition():
        return
      self._progress.clear()
      await self._progress.wait()

  def on_result(self, result: BlockResult) -> None:
    """An engine result (on the loop): queues the rows that real samples cover."""
    block = self._done
    block_start = block * self._block_size
    self._done += 1
    for name in self.spec.outputs:
      if name == "frames":
        first, rows = result.first_frame, self.feed.over_real_samples(result.frames, result.first_frame, self.spec.hop)
      elif name == "pitchogram":
        first, rows = block, self.feed.over_real_samples(_pitchogram_rows(result), block, self._block_size)
      elif name == "sai":  # numbered by SAI frame: frame i is block (i + 1) * sai_every - 1's
        first = (block + 1) // self.spec.sai_every - 1
        taken = result.pictures.sai_frame
        rows = self.feed.over_real_samples(
          np.empty((0, 0, 0)) if taken is None else taken[None], block, self._block_size
        )
      else:
        first, rows = block_start, self.feed.over_real_samples(result.raw[name], block_start, 1)
      if len(rows):
        self._queue(name, first, rows)
    self._progress.set()

  def on_error(self, error: Exception) -> None:
    self._error = error
    self._progress.set()

  def _queue(self, name: str, first: int, rows: np.ndarray) -> None:
    # A copy: ``rows`` is a view into the whole batch's output, which a queued
    # message must not keep alive (a slow reader's queue would pin one batch per message).
    self.outbox.put(FrameMessage(OUTPUT_KINDS[name], self._sequence, first, rows.copy()))
    self._sequence += 1
    self.rows[name] += len(rows)

  def _count_drop(self, message: FrameMessage) -> None:
    self._metrics.frames_dropped.labels(KIND_NAMES[message.kind]).inc(len(message.rows))

  def ready_message(self) -> dict[str, Any]:
    pool = self._pool
    pictures = None
    if self.spec.pictures:
      sai, pitchogram = pool.picture_hypers
      pictures = pictures_description(self.spec, pitchogram.lags_s, sai.sai_width, pool.block_size, pool.hypers.fs)
    hearing = None if self.hearing is None else self.hearing.describe()
    return ready_message(
      self.spec, pool.hypers.fs, pool.centre_frequencies(), pool.block_size, self.outbox.limit, pictures, hearing
    )

  def end_message(self, reason: str, resume_token: str | None = None) -> dict[str, Any]:
    return end_message(
      reason,
      samples_received=self.samples_received,
      model_samples=self.feed.model_samples,
      rows=self.rows,
      dropped_rows=self.outbox.dropped_rows,
      messages=self._sequence,
      resume_token=resume_token,
    )
