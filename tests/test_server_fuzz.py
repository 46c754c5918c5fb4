"""Fuzz: over 1,000 hostile messages from a seeded generator against a ``python -m server`` process.

Each generated conversation (``protocol_fuzz``) must end as the README says
(the error code and close code of its defect, or ``end`` and 1000, with
finite frames); the process must not crash or log a fault; and an honest
client streaming meanwhile must receive exactly the bytes it receives from
the same server when nothing else runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from protocol_fuzz import Case, Outcome, Served, cases, expected, frames_are_finite
from reliability_harness import Recording, ServerProcess, receive_all, record
from server_harness import TIMEOUT_S, TOKEN, TOLERANCE, make_audio, max_error, reference
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server.settings import Settings

SEED = 20240611
MESSAGES = 1000  # at least this many generated messages
CONCURRENCY = 8  # conversations at once
SERVED = Served(
  ears=(1, 2),
  raw_outputs=("naps",),
  min_hop_ms=2.0,
  max_message_bytes=4096,
  token=TOKEN,
  allowed_origin="http://allowed.example",
)
HONEST_RATE = 48000.0


@pytest.fixture(scope="module")
def fuzz_server(compile_cache: str) -> Iterator[ServerProcess]:
  server = ServerProcess.serving(
    ears=list(SERVED.ears),
    capacity=16,
    shards=1,
    raw_outputs=list(SERVED.raw_outputs),
    min_hop_ms=SERVED.min_hop_ms,
    max_message_bytes=SERVED.max_message_bytes,
    token=SERVED.token,
    allowed_origins=[SERVED.allowed_origin],
    idle_timeout_s=10,
    compile_cache_dir=compile_cache,
  )
  yield server
  assert server.stop() == 0


@dataclasses.dataclass
class Verdict:
  """What one conversation got, against what the README promises."""

  case: Case
  want: Outcome
  got: Recording
  sent: int  # messages the server could still take

  @property
  def error(self) -> dict | None:
    return next((t for t in self.got.texts if t["type"] == "error"), None)

  @property
  def matches(self) -> bool:
    error, ends = self.error, [t for t in self.got.texts if t["type"] == "end"]
    if self.got.close_code != self.want.close:
      return False
    if self.want.clean:
      return error is None and len(ends) == 1 and frames_are_finite(self.got.binary, self.got.ready)
    return not ends and (error["code"] if error else None) == self.want.code


async def converse(url: str, case: Case) -> Verdict:
  """Sends ``case``'s messages while reading everything the server sends, until it closes."""
  recording, sent = Recording(), 0
  async with asyncio.timeout(TIMEOUT_S):
    async with connect(url + case.query, additional_headers=case.headers, proxy=None) as ws:
      reader = asyncio.create_task(receive_all(ws, recording))
      try:
        for message in case.messages:
          await ws.send(message)
          sent += 1
      except ConnectionClosed:
        pass  # closed by the server after a defect: the reader has its answer
      await reader
  return Verdict(case, expected(case, SERVED), recording, sent)


async def fuzz(url: str, drawn: list[Case]) -> list[Verdict]:
  """Every case, ``CONCURRENCY`` at a time."""
  gate = asyncio.Semaphore(CONCURRENCY)

  async def one(case: Case) -> Verdict:
    async with gate:
      return await converse(url, case)

  return await asyncio.gather(*(one(case) for case in drawn))


def test_hostile_messages_get_their_documented_answers_and_spare_an_honest_stream(fuzz_server) -> None:
  drawn = cases(SEED, SERVED, MESSAGES)
  audio = make_audio(3.0, HONEST_RATE, 1, seed=7)

  def honest(**events: asyncio.Event):
    return record(fuzz_server.ws, audio, HONEST_RATE, pause_s=0.01, **events)

  quiet = asyncio.run(honest())

  async def under_fuzz() -> tuple[Recording, list[Verdict]]:
    fuzz_done, under_way = asyncio.Event(), asyncio.Event()
    stream = asyncio.create_task(honest(before_stop=fuzz_done, under_way=under_way))
    async with asyncio.timeout(TIMEOUT_S):
      await under_way.wait()
    try:
      verdicts = await fuzz(fuzz_server.ws, drawn)
    finally:
      fuzz_done.set()
    return await stream, verdicts

  loud, verdicts = asyncio.run(under_fuzz())
  mismatches = [v for v in verdicts if not v.matches]
  crashed = fuzz_server.process.poll() is not None
  summary = {
    "conversations": len(drawn),
    "messages_generated": sum(len(c.messages) for c in drawn),
    "messages_sent": sum(v.sent for v in verdicts),
    "crashes": int(crashed),
    "faults_logged": len(fuzz_server.faults()),
    "mismatches": len(mismatches),
    "honest_messages": len(quiet.binary),
    "honest_identical": loud.binary == quiet.binary and loud.texts == quiet.texts,
  }
  print(json.dumps(summary), file=sys.stderr)
  assert summary["messages_generated"] >= MESSAGES and not crashed and not fuzz_server.faults()
  assert not mismatches, [(v.case.kind, v.want, v.got.close_code, v.error, v.case.messages[:3]) for v in mismatches[:5]]
  assert quiet.close_code == loud.close_code == 1000 and quiet.texts[-1]["type"] == "end"
  assert loud.binary == quiet.binary and loud.texts == quiet.texts  # bit-identical under fuzzing
  frames = _frames(quiet)
  expected_frames = reference(audio, HONEST_RATE, Settings(), quiet.ready["hop_samples"])["frames"]
  assert max_error(frames, expected_frames) <= TOLERANCE  # and right


def _frames(recording: Recording) -> np.ndarray:
  """The frame rows of a recording, (n, channels, ears)."""
  header = recording.ready["header"]["bytes"]
  shape = (-1, recording.ready["channels"], recording.ready["ears"])
  return np.concatenate([np.frombuffer(m, "<f4", offset=header).reshape(shape) for m in recording.binary])
