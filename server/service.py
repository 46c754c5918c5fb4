"""The app's long-lived state: engine, metrics, admitted connections, shutdown.

``StreamService`` is what the routes talk to. It starts the engine thread
(which compiles the pools in the background, so the HTTP endpoints answer
meanwhile), admits connections up to ``max_connections``, opens streams on
the engine, and on shutdown first lets every connection finish or hand over
its stream before the server closes them (``drain``), then ends the engine
thread (``shut_down``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

from engine.pool import PoolFullError
from server import hearing as stream_hearing
from server.engine_thread import Engine, NotReadyError, lane_key
from server.metrics import Metrics
from server.protocol import (
  MAX_HOP_MS,
  PROTOCOL_VERSION,
  SAMPLE_FORMATS,
  SAMPLE_RATE_RANGE,
  ErrorKind,
  ProtocolError,
  StreamSpec,
  offered_outputs,
)
from server.resume import Checkpoint, ResumeTokenError, ResumeTokenExpired, design_fingerprint, seal, unseal
from server.settings import Settings
from server.stream_session import StreamSession

logger = logging.getLogger(__name__)


class Drainable(Protocol):
  """A connection, as the service sees it: something to wind down when the server drains."""

  def drain(self) -> None: ...


class StreamService:
  """Shared by every request of one app."""

  def __init__(self, settings: Settings):
    self.settings = settings
    self.metrics = Metrics()
    self.engine = Engine(settings, self.metrics)
    self._connections: set[Drainable] = set()
    self._all_closed = asyncio.Event()
    self._all_closed.set()
    self._draining = False
    self._designs: dict[int, str] = {}  # ears -> design_fingerprint of its pool

  def start(self) -> None:
    """Starts the engine thread (call on the event loop)."""
    self.engine.start(asyncio.get_running_loop())

  def shut_down(self) -> None:
    """Ends the engine thread (after ``drain``, when the app stops)."""
    self.engine.shut_down()

  @property
  def ready(self) -> bool:
    return self.engine.ready and not self._draining

  @contextlib.contextmanager
  def admit(self, connection: Drainable) -> Iterator[None]:
    """Holds one of ``max_connections`` places while the connection runs."""
    if self._draining:
      raise ProtocolError(ErrorKind.SHUTTING_DOWN, "the server is shutting down")
    if not self.engine.ready:
      raise ProtocolError(ErrorKind.NOT_READY, "the engine is still starting; try again shortly")
    if len(self._connections) >= self.settings.max_connections:
      raise ProtocolError(ErrorKind.TOO_MANY_CONNECTIONS, f"{self.settings.max_connections} connections are open")
    self._connections.add(connection)
    self._all_closed.clear()
    self.metrics.connections.inc()
    try:
      yield
    finally:
      self._connections.discard(connection)
      self.metrics.connections.dec()
      if not self._connections:
        self._all_closed.set()

  async def open_session(self, spec: StreamSpec, resume_token: str | None = None) -> StreamSession:
    """A stream with a slot in the pool for its ear count; with ``resume_token``, the handed-over stream it names.

    The hop is rounded to the nearest multiple of the pool's frame granule
    (the pool sums the NAP in groups of that many samples).
    """
    try:
      key = lane_key(spec.ears, spec.pictures)
      pool = self.engine.pool(key)
    except NotReadyError as err:
      raise ProtocolError(ErrorKind.NOT_READY, str(err)) from None
    spec = dataclasses.replace(spec, hop=pool.nearest_hop(spec.hop))
    s = self.settings
    hearing = stream_hearing.resolve(spec.hearing, pool.centre_frequencies(), pool.n_ears, s.hearing_profiles)
    session = StreamSession(spec, pool, self.metrics, s.send_queue_messages, s.input_queue_blocks, hearing)
    checkpoint = None if resume_token is None else self._checkpoint(resume_token, spec)
    try:
      if checkpoint is not None:
        session.restore(checkpoint)
      resume = None if checkpoint is None else checkpoint.slot
      own = (
        {}
        if hearing is None or resume is not None
        else {  # a resumed slot keeps its own
          "weights": hearing.weights(pool.weights),
          "input_gain": hearing.input_gain,
        }
      )
      session.attach(await self.engine.join(key, spec.hop, session, resume, spec.sai_every, **own))
    except ValueError as err:  # a signed token whose state does not fit this server
      raise ProtocolError(ErrorKind.INVALID_RESUME_TOKEN, f"the resume token does not fit this server: {err}") from None
    except PoolFullError:
      capacity = self.engine.admitted_capacity(key)
      raise ProtocolError(ErrorKind.POOL_FULL, f"the server is serving all the {key}-ear streams it can "
                          f"in real time ({capacity} on their own)") from None  # fmt: skip
    return session

  @property
  def resumable(self) -> bool:
    """Whether a drain hands streams over with a resume token (a resume key is set)."""
    return self.settings.resume_key is not None

  def hands_over(self, session: StreamSession) -> bool:
    """Whether a drain hands ``session`` over with a resume token rather than finishing it.

    Streams with pictures are finished: their SAI state (about 1.2 MB a
    stream) would not fit in a start message.
    """
    return self.resumable and not session.spec.pictures

  def _key(self) -> bytes:
    return self.settings.resume_key.get_secret_value().encode()

  def _design(self, ears: int) -> str:
    if ears not in self._designs:
      self._designs[ears] = design_fingerprint(self.engine.pool(lane_key(ears)))
    return self._designs[ears]

  def _checkpoint(self, token: str, spec: StreamSpec) -> Checkpoint:
    """The checkpoint a start's ``resume_token`` carries, if this server may continue it for ``spec``."""
    if not self.resumable:
      raise ProtocolError(ErrorKind.INVALID_RESUME_TOKEN, "this server does not resume streams (no resume key)")
    try:
      checkpoint = unseal(token, self._key(), time.time())
    except ResumeTokenExpired as err:
      raise ProtocolError(ErrorKind.RESUME_TOKEN_EXPIRED, str(err)) from None
    except ResumeTokenError as err:
      raise ProtocolError(ErrorKind.INVALID_RESUME_TOKEN, str(err)) from None
    if checkpoint.design != self._design(spec.ears):
      raise ProtocolError(ErrorKind.INVALID_RESUME_TOKEN, "the resume token is for another model design")
    if checkpoint.start != spec.identity():
      raise ProtocolError(
        ErrorKind.INVALID_RESUME_TOKEN,
        f"the resume token is for a stream started with {checkpoint.start}; this start asks for {spec.identity()}",
      )
    return checkpoint

  async def resume_token(self, session: StreamSession) -> str:
    """A handed-over stream's signed token (its blocks must all be done, no padded last block queued)."""
    slot = await self.engine.export(session.stream)
    expires_at = time.time() + self.settings.resume_token_ttl_s
    return seal(session.checkpoint(slot, self._design(session.spec.ears), expires_at), self._key())

  async def drain(self) -> None:
    """Refuses new connections, lets every open one finish or hand over its stream and close (bounded)."""
    self._draining = True
    logger.info("shutdown: winding down %d connection(s)", len(self._connections))
    for connection in list(self._connections):
      connection.drain()
    try:
      await asyncio.wait_for(self._all_closed.wait(), self.settings.shutdown_timeout_s)
    except TimeoutError:
      logger.warning("shutdown: %d connection(s) did not finish in time", len(self._connections))

  def info(self) -> dict[str, Any]:
    """What ``GET /v1/info`` reports (raises ``NotReadyError`` while compiling)."""
    s = self.settings
    pool = self.engine.pool(lane_key(s.ears[0]))
    keys = self.engine.lane_keys
    return {
      "protocol": PROTOCOL_VERSION,
      "model_rate": pool.hypers.fs,
      "channels": pool.n_ch,
      "centre_frequencies_hz": [float(f) for f in pool.centre_frequencies()],
      "ears": s.ears,
      "ihc_style": s.ihc_style,
      "block_samples": s.block_size,
      "hop_ms": s.hop_ms,
      "hop_samples": pool.hop,
      "hop_granule_samples": pool.frame_granule,
      "min_hop_ms": s.min_hop_ms,
      "max_hop_ms": MAX_HOP_MS,
      "formats": sorted(SAMPLE_FORMATS),
      "outputs": offered_outputs(s),
      "sample_rate_range_hz": list(SAMPLE_RATE_RANGE),
      "token_required": s.token is not None,
      "hearing": stream_hearing.info(s.hearing_profiles),
      "realtime_capacity": {key: self.engine.lane(key).realtime_capacity for key in keys},
      "realtime_capacity_now": {
        key: self.engine.lane(key).costs.realtime_streams(self.engine.pool(key), s.realtime_margin, observed=True)
        for key in keys
      },
      "step_slowdown": {key: round(self.engine.lane(key).costs.slowdown, 3) for key in keys},
      "step_ms": {
        key: {str(size): round(1000 * t, 3) for size, t in self.engine.lane(key).costs.seconds.items()} for key in keys
      },
      "limits": {
        "streams_per_pool": {key: self.engine.admitted_capacity(key) for key in keys},
        "capacity": s.capacity,
        "realtime_margin": s.realtime_margin,
        "max_lag_s": s.max_lag_s,
        "max_connections": s.max_connections,
        "max_message_bytes": s.max_message_bytes,
        "idle_timeout_s": s.idle_timeout_s,
        "send_queue_messages": s.send_queue_messages,
        "input_queue_blocks": s.input_queue_blocks,
      },
    }
