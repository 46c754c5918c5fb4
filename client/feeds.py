"""Where ``carfac-live`` gets its frames: the engine run locally, or a CARFAC server.

Both feeds turn a running microphone into NAP frames, handed to
``on_frames`` ((n, channels, ears) float32) from a thread of their own as
they come; inside ``streaming`` both know what the frames are
(``centre_frequencies``, channel 0 highest, and ``hop_s``). Built with
``pitchogram=True`` they also hand pitchogram rows ((n, lags + 2): the lag
profile, then the F2 and F1 coordinates; one per block) to
``on_pitchogram``, and know ``lags_s`` and ``block_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import carfac
from client.protocol import StreamRequest, auth_headers
from client.sources import in_thread
from client.stream import REPLY_TIMEOUT_S, Session, stream
from engine.frames import samples_for_ms
from engine.microphone import MicrophoneSource
from engine.pool import StreamPool
from engine.runner import EngineRunner

OnFrames = Callable[[np.ndarray], None]
OnPitchogram = Callable[[np.ndarray], None]


class LocalFeed:
  """A one-slot ``StreamPool`` stepped on the engine's thread: no server needed."""

  def __init__(self, model_rate: float, hop_ms: float, block: int, pitchogram: bool = False):
    hop = samples_for_ms(hop_ms, model_rate)
    pictures = carfac.PitchogramPipelineParams(num_samples_per_segment=block) if pitchogram else None
    self._pool = StreamPool(
      carfac.CarfacDesignParameters(fs=model_rate), capacity=1, block_size=block, hop=hop, pitchogram=pictures
    )
    self.centre_frequencies = self._pool.centre_frequencies()
    self.hop_s = hop / model_rate
    self.block_s = block / model_rate
    self.lags_s = None if pictures is None else self._pool.picture_hypers[1].lags_s

  @contextlib.contextmanager
  def streaming(
    self, mic: MicrophoneSource, on_frames: OnFrames, on_pitchogram: OnPitchogram | None = None
  ) -> Iterator[None]:
    def on_result(result) -> None:
      on_frames(result.frames)
      if result.pictures is not None and on_pitchogram is not None:
        on_pitchogram(np.concatenate([result.pictures.lag_profile, result.pictures.vowel_coords])[None])

    runner = EngineRunner(self._pool, mic, on_result)
    runner.start()
    try:
      yield
    finally:
      runner.stop()


class RemoteFeed:
  """The microphone streamed to a server over protocol v1, by an event loop on a thread of its own.

  ``streaming`` returns once the server's ready message has come (raising
  what went wrong if it does not); on leaving, the audio stops, the server
  flushes the stream, and its last frames arrive before it returns.
  """

  def __init__(self, url: str, token: str | None = None, hop_ms: float | None = None, pitchogram: bool = False):
    self.url, self.headers, self.hop_ms = url, auth_headers(token), hop_ms
    self.outputs = ("frames", "pitchogram") if pitchogram else None
    self.centre_frequencies: np.ndarray | None = None
    self.hop_s: float | None = None
    self.block_s: float | None = None
    self.lags_s: np.ndarray | None = None
    self.session: Session | None = None

  @contextlib.contextmanager
  def streaming(
    self, mic: MicrophoneSource, on_frames: OnFrames, on_pitchogram: OnPitchogram | None = None
  ) -> Iterator[None]:
    stop, answered = threading.Event(), threading.Event()
    failures: list[Exception] = []
    kinds: dict[str, int] = {}

    def on_ready(ready: dict[str, Any]) -> None:
      self.centre_frequencies = np.asarray(ready["centre_frequencies_hz"])
      self.hop_s = ready["hop_samples"] / ready["model_rate"]
      self.block_s = ready["block_samples"] / ready["model_rate"]
      if "pictures" in ready:
        self.lags_s = np.asarray(ready["pictures"]["lags_s"])
      kinds.update(ready["kinds"])
      answered.set()

    def on_rows(header: dict[str, int], rows: np.ndarray) -> None:
      if header["kind"] == kinds["frames"]:
        on_frames(rows)
      elif header["kind"] == kinds.get("pitchogram") and on_pitchogram is not None:
        on_pitchogram(rows[..., 0])

    def run() -> None:
      request = StreamRequest(mic.sample_rate, mic.channels, hop_ms=self.hop_ms, outputs=self.outputs)
      chunks = in_thread(mic, stop)
      try:
        self.session = asyncio.run(
          stream(self.url, request, chunks, headers=self.headers, on_ready=on_ready, on_frames=on_rows)
        )
      except Exception as err:  # handed to the caller's thread below
        failures.append(err)
      finally:
        answered.set()

    thread = threading.Thread(target=run, name="carfac-remote-feed", daemon=True)
    thread.start()
    answered.wait()  # bounded: stream() gives up on a silent server after REPLY_TIMEOUT_S
    try:
      if self.centre_frequencies is not None:
        yield
    finally:
      stop.set()
      thread.join(2 * REPLY_TIMEOUT_S)
    if thread.is_alive():
      raise TimeoutError(f"{self.url} did not end the stream within {2 * REPLY_TIMEOUT_S:g} s")
    if failures:
      raise failures[0]
    self.session.check()
