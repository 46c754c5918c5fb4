"""Shared by the server tests: real servers on loopback, a protocol-v1 client, offline references.

- ``InProcessServer``: uvicorn (``DrainingServer``) on an ephemeral 127.0.0.1
  port, in a thread of the test process, once ``/readyz`` says so.
- ``stream``: one session of the project's protocol client (``client.stream``:
  start, audio in chunks at random boundaries, stop), collecting every
  message until the server closes (and, asked to, keeping the binary ones
  verbatim); ``exchange`` sends arbitrary messages.
- ``reference``: the offline answer for the same audio: the whole audio
  resampled in one shot (``StreamResampler`` + flush), one ``run_segment``
  of a float32 design, the mean NAP per complete hop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import carfac
from client.protocol import SAMPLE_FORMATS, StreamRequest, encode_audio
from client.readiness import wait_ready
from client.stream import Session, collect
from client.stream import stream as client_stream
from engine.resample import StreamResampler
from server.engine_thread import design
from server.serve import DrainingServer, build_server
from server.settings import Settings

TIMEOUT_S = 60.0  # bound on any single wait in a test
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class InProcessServer:
  """A ``DrainingServer`` for ``settings`` on its own thread and event loop."""

  def __init__(self, settings: Settings):
    self.settings = settings
    self.server: DrainingServer = build_server(settings)
    self._thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)

  def start(self) -> InProcessServer:
    self._thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not self.server.started:
      assert time.monotonic() < deadline and self._thread.is_alive(), "uvicorn did not start"
      time.sleep(0.02)
    port = self.server.servers[0].sockets[0].getsockname()[1]
    self.http = f"http://127.0.0.1:{port}"
    self.ws = f"ws://127.0.0.1:{port}/v1/stream"
    wait_ready(self.http, TIMEOUT_S, alive=self._thread.is_alive)
    return self

  def stop(self) -> None:
    self.server.should_exit = True
    self._thread.join(TIMEOUT_S)


def free_port() -> int:
  """A TCP port on 127.0.0.1 that was free a moment ago (for a process that cannot take port 0)."""
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def as_received(audio: np.ndarray, fmt: str) -> np.ndarray:
  """What the server decodes from ``audio`` sent in format ``fmt``."""
  return np.frombuffer(encode_audio(audio, fmt), SAMPLE_FORMATS[fmt]).reshape(audio.shape).astype(np.float32) / (
    np.float32(32768) if fmt == "s16le" else np.float32(1)
  )


def make_audio(seconds: float, rate: float, channels: int, seed: int) -> np.ndarray:
  """A reproducible mix of tones and noise, (n, channels) float32 within +-0.5."""
  rng = np.random.default_rng(seed)
  t = np.arange(round(seconds * rate)) / rate
  columns = []
  for _ in range(channels):
    tones = sum(
      0.1 * np.sin(2 * np.pi * rng.uniform(200, min(4000, rate / 3)) * t + rng.uniform(0, 6)) for _ in range(3)
    )
    columns.append(tones + 0.05 * rng.standard_normal(len(t)))
  return np.stack(columns, axis=1).astype(np.float32)


MAX_CHUNK_FRAMES = 1999  # frames in the longest random chunk


def chunks(audio: np.ndarray, seed: int, max_frames: int = MAX_CHUNK_FRAMES) -> list[np.ndarray]:
  """``audio`` split at random frame boundaries (1 to ``max_frames`` frames a chunk)."""
  rng = np.random.default_rng(seed)
  out, start = [], 0
  while start < len(audio):
    size = int(rng.integers(1, max_frames + 1))
    out.append(audio[start : start + size])
    start += size
  return out


@dataclasses.dataclass
class Pacing:
  """When a test's stream sends: ``pause_s`` between chunks; the stop waits for ``before_stop``.
  ``under_way`` is set when the first frames come back: the server holds the stream's slot and has
  taken audio in."""

  pause_s: float = 0.0
  under_way: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
  before_stop: asyncio.Event | None = None


async def _paced(parts: list[np.ndarray], pacing: Pacing) -> AsyncIterator[np.ndarray]:
  for part in parts:
    yield part
    await asyncio.sleep(pacing.pause_s)
  if pacing.before_stop is not None:
    await pacing.before_stop.wait()


async def stream(
  url: str,
  audio: np.ndarray,
  rate: float,
  fmt: str = "f32le",
  *,
  hop_ms: float | None = None,
  outputs: list[str] | None = None,
  sai_interval_ms: float | None = None,
  hearing: dict | None = None,
  pause_s: float = 0.0,
  pacing: Pacing | None = None,
  seed: int = 0,
  max_chunk_frames: int = MAX_CHUNK_FRAMES,
  headers: dict[str, str] | None = None,
  keep_raw: bool = False,
  **connect_args,
) -> Session:
  """Streams ``audio`` (n, channels) in random chunks ``pause_s`` apart (or as ``pacing`` says); returns all
  that came back. The chunks depend on ``seed`` only, so two calls send the same messages; with
  ``keep_raw`` the session keeps the binary messages it received verbatim, to compare two calls byte
  for byte."""
  request = StreamRequest(
    rate,
    audio.shape[1],
    fmt,
    hop_ms,
    None if outputs is None else tuple(outputs),
    sai_interval_ms=sai_interval_ms,
    hearing=hearing,
  )
  async with asyncio.timeout(TIMEOUT_S):
    pacing = pacing or Pacing(pause_s)
    audio_chunks = _paced(chunks(audio, seed, max_chunk_frames), pacing)
    return await client_stream(
      url,
      request,
      audio_chunks,
      headers=AUTH if headers is None else headers,
      on_frames=lambda header, rows: pacing.under_way.set(),
      keep_raw=keep_raw,
      **connect_args,
    )


async def exchange(
  url: str,
  messages: Iterable[str | bytes],
  headers: dict[str, str] | None = None,
  *,
  keep_raw: bool = False,
  **connect_args,
) -> Session:
  """Sends ``messages`` (raw: any text or bytes, valid or not) and reads until the server closes; returns what
  came back (with ``keep_raw``, the binary messages verbatim too). Sending stops when the server closes."""
  session = Session(keep_raw=keep_raw)
  async with asyncio.timeout(TIMEOUT_S):
    async with connect(url, additional_headers=AUTH if headers is None else headers, proxy=None, **connect_args) as ws:
      reader = asyncio.create_task(collect(ws, session))
      try:
        for message in messages:
          await ws.send(message)
      except ConnectionClosed:
        pass  # closed by the server before the last message: what is tested
      await reader
  return session


def to_model_rate(audio: np.ndarray, rate: float, model_rate: float) -> np.ndarray:
  resampler = StreamResampler(rate, model_rate, audio.shape[1])
  return np.concatenate([resampler.process(audio), resampler.flush()])


@functools.cache
def _offline_model(ears: int, model_rate: float, ihc_style: str):
  """(naps, bm) of one float32 ``run_segment_jit`` from the designed initial state."""
  params = design(Settings(model_rate=model_rate, ihc_style=ihc_style), ears)
  hypers, weights, _ = carfac.design_and_init_carfac(params, np.float32)

  def run(x: np.ndarray, ohc_health: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    state = carfac.design_and_init_carfac(params, np.float32)[2]
    padded = np.zeros((-(-len(x) // 8192) * 8192, ears), np.float32)  # few shapes, few compilations
    padded[: len(x)] = x
    own = weights if ohc_health is None else carfac.with_ohc_health(weights, ohc_health)
    out = carfac.run_segment_jit(padded, hypers, own, state)
    return np.asarray(out.naps)[: len(x)], np.asarray(out.bm)[: len(x)]

  return run


def reference(
  audio: np.ndarray,
  rate: float,
  settings: Settings,
  hop: int,
  ohc_health: np.ndarray | None = None,
  input_gain: float = 1.0,
) -> dict[str, np.ndarray]:
  """Offline frames (of ``hop`` model samples) / naps / bm of the server's model for ``audio`` at ``rate``.

  ``ohc_health`` (n_ch,) or (ears, n_ch), ``input_gain``: a stream's hearing profile and level (applied,
  as the engine does, to the model-rate samples).
  """
  x = to_model_rate(audio, rate, settings.model_rate) * np.float32(input_gain)
  naps, bm = _offline_model(audio.shape[1], settings.model_rate, settings.ihc_style)(x, ohc_health)
  n = len(x) // hop
  frames = naps[: n * hop].astype(np.float64).reshape(n, hop, *naps.shape[1:]).mean(axis=1)
  return {"frames": frames, "naps": naps, "bm": bm}


@functools.cache
def _reference_pictures(
  audio_bytes: bytes, model_rate: float, ihc_style: str, block: int
) -> list[carfac.PipelineFrame]:
  audio = np.frombuffer(audio_bytes, np.float32)
  params = design(Settings(model_rate=model_rate, ihc_style=ihc_style), 1)
  pipeline = carfac.PitchogramPipeline(
    model_rate, carfac.PitchogramPipelineParams(num_samples_per_segment=block), carfac_params=params, dtype=np.float32
  )
  return [pipeline.process_samples(audio[k * block : (k + 1) * block]) for k in range(len(audio) // block)]


def reference_pictures(audio: np.ndarray, settings: Settings) -> list[carfac.PipelineFrame]:
  """The library's offline pipeline with the server's design on mono model-rate ``audio``, block by block."""
  mono = np.ascontiguousarray(np.asarray(audio, np.float32).reshape(len(audio), -1)[:, 0])
  return _reference_pictures(mono.tobytes(), settings.model_rate, settings.ihc_style, settings.block_size)


def max_error(got: np.ndarray, expected: np.ndarray) -> float:
  """Largest absolute difference, relative to the reference's peak."""
  assert got.shape == expected.shape, (got.shape, expected.shape)
  return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


# Of the reference's peak: float32 rounding. Resampling in chunks is bit-identical to one shot;
# the pool's block-by-block float32 run differs from one run_segment by up to ~1e-5 of the peak
# (measured; the same with a one-slot pool), which the AGC loop accumulates over the stream.
TOLERANCE = 5e-5


def main_settings() -> Settings:
  """The shared test server: both ear counts, raw outputs, a token, an allowed origin, small queues."""
  return Settings(
    port=0,
    log_level="warning",
    ears=[1, 2],
    capacity=16,
    raw_outputs=["naps", "bm"],
    token=TOKEN,
    allowed_origins=["http://allowed.example"],
    max_message_bytes=65536,
    idle_timeout_s=5.0,
    send_queue_messages=64,
  )


@pytest.fixture(scope="session")
def main_server() -> Iterator[InProcessServer]:
  server = InProcessServer(main_settings()).start()
  yield server
  server.stop()


HONEST_RATE = 48000.0


@functools.lru_cache(maxsize=1)
def honest_audio() -> np.ndarray:
  return make_audio(0.5, HONEST_RATE, 1, seed=99)


async def alongside_honest_client(server: InProcessServer, misbehaving: Awaitable[Session]) -> Session:
  """Runs ``misbehaving`` while an honest client streams (from before it starts until after it
  ends); checks the honest client's frames."""
  pacing = Pacing(pause_s=0.02, before_stop=asyncio.Event())
  honest = asyncio.create_task(stream(server.ws, honest_audio(), HONEST_RATE, pacing=pacing, seed=99))
  async with asyncio.timeout(TIMEOUT_S):
    await pacing.under_way.wait()
  try:
    result = await misbehaving
  finally:
    pacing.before_stop.set()
    session = await honest
  assert session.close_code == 1000 and session.error is None, session.texts
  expected = reference(honest_audio(), HONEST_RATE, server.settings, session.ready["hop_samples"])["frames"]
  assert max_error(session.rows("frames"), expected) <= TOLERANCE
  return result
