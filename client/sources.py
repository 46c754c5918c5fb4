"""Audio for the streaming client, as async iterables of (n, channels) float32 chunks.

Files and microphones are blocking iterables (``engine.file_source.FileSource``,
``engine.microphone.MicrophoneSource``); ``in_thread`` reads them on a
worker thread so the event loop keeps receiving frames meanwhile, and stops
when a ``threading.Event`` is set (Ctrl-C, a time limit, a closing window).
``realtime`` paces any of them like a microphone; without it a file goes
as fast as the server reads it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import numpy as np

_DONE = object()


async def in_thread(source: Iterable[np.ndarray], stop: threading.Event) -> AsyncIterator[np.ndarray]:
  """The chunks of a blocking iterable, each read on a worker thread, until it ends or ``stop`` is set."""
  chunks = iter(source)
  while not stop.is_set():
    chunk = await asyncio.to_thread(next, chunks, _DONE)
    if chunk is _DONE:
      return
    yield chunk


async def realtime(chunks: AsyncIterable[np.ndarray], sample_rate: float) -> AsyncIterator[np.ndarray]:
  """Passes each chunk on when its last sample would have been recorded, as a microphone would."""
  loop = asyncio.get_running_loop()
  start, frames = loop.time(), 0
  async for chunk in chunks:
    frames += len(chunk)
    await asyncio.sleep(max(0.0, start + frames / sample_rate - loop.time()))
    yield chunk
