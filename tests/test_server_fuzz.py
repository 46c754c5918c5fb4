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
from collections.abc import Awaitable, Iterator

import pytest
from protocol_fuzz import Case, Outcome, Served, cases, expected, frames_are_finite
from reliability_harness import ServerProcess
from server_harness import (
  TIMEOUT_S,
  TOKEN,
  TOLERANCE,
  Pacing,
  Session,
  exchange,
  make_audio,
  max_error,
  reference,
  stream,
)

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
HONEST_CHUNK_FRAMES = SERVED.max_message_bytes // 4  # mono f32le: each chunk within the message limit


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
  got: Session
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
      return error is None and len(ends) == 1 and frames_are_finite(self.got.raw, self.got.ready)
    return not ends and (error["code"] if error else None) == self.want.code


async def converse(url: str, case: Case) -> Verdict:
  """Sends ``case``'s messages while reading everything the server sends, until it closes."""
  sent = 0

  def counted() -> Iterator[str | bytes]:
    """``case.messages``; the next one is asked for once the last was sent, so ``sent`` counts those sent."""
    nonlocal sent
    for message in case.messages:
      yield message
      sent += 1

  session = await exchange(url + case.query, counted(), case.headers, keep_raw=True)
  return Verdict(case, expected(case, SERVED), session, sent)


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

  def honest(pacing: Pacing) -> Awaitable[Session]:
    return stream(
      fuzz_server.ws, audio, HONEST_RATE, pacing=pacing, max_chunk_frames=HONEST_CHUNK_FRAMES, keep_raw=True
    )

  quiet = asyncio.run(honest(Pacing(0.01)))

  async def under_fuzz() -> tuple[Session, list[Verdict]]:
    pacing = Pacing(0.01, before_stop=asyncio.Event())
    loud = asyncio.create_task(honest(pacing))
    async with asyncio.timeout(TIMEOUT_S):
      await pacing.under_way.wait()
    try:
      verdicts = await fuzz(fuzz_server.ws, drawn)
    finally:
      pacing.before_stop.set()
    return await loud, verdicts

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
    "honest_messages": len(quiet.raw),
    "honest_identical": loud.raw == quiet.raw and loud.texts == quiet.texts,
  }
  print(json.dumps(summary), file=sys.stderr)
  assert summary["messages_generated"] >= MESSAGES and not crashed and not fuzz_server.faults()
  assert not mismatches, [(v.case.kind, v.want, v.got.close_code, v.error, v.case.messages[:3]) for v in mismatches[:5]]
  assert quiet.close_code == loud.close_code == 1000 and quiet.texts[-1]["type"] == "end"
  assert loud.raw == quiet.raw and loud.texts == quiet.texts  # bit-identical under fuzzing
  expected_frames = reference(audio, HONEST_RATE, Settings(), quiet.ready["hop_samples"])["frames"]
  assert max_error(quiet.rows("frames"), expected_frames) <= TOLERANCE  # and right
