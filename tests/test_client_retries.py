"""``client.stream.with_retries``: which refusals are tried again, how often, and how long it waits."""

from __future__ import annotations

import asyncio

import pytest

from client.stream import Session, with_retries


def refused(code: str) -> Session:
  return Session(texts=[{"type": "error", "code": code, "message": "..."}], close_code=1013)


def served() -> Session:
  return Session(ready={"type": "ready"}, texts=[{"type": "end", "reason": "stop"}], close_code=1000)


def run(answers: list[Session], retries: int, backoff_s: float = 0.01) -> tuple[Session, int, list]:
  """Plays ``answers`` in turn to ``with_retries``; returns (its session, tries made, (try, code, delay) told)."""
  tries, told = [], []

  async def attempt() -> Session:
    tries.append(1)
    return answers[len(tries) - 1]

  session = asyncio.run(
    with_retries(attempt, retries, backoff_s, lambda n, error, delay: told.append((n, error["code"], delay)))
  )
  return session, len(tries), told


@pytest.mark.parametrize("code", ["pool_full", "too_many_connections", "not_ready", "shutting_down"])
def test_a_full_busy_or_draining_server_is_tried_again_with_doubling_waits(code: str) -> None:
  session, tries, told = run([refused(code), refused(code), served()], retries=3)
  assert session.ready is not None and tries == 3
  assert told == [(1, code, 0.01), (2, code, 0.02)]


def test_retries_stop_at_the_limit_and_return_the_last_refusal() -> None:
  session, tries, told = run([refused("pool_full")] * 3, retries=2)
  assert tries == 3 and session.error["code"] == "pool_full" and len(told) == 2


@pytest.mark.parametrize("code", ["unauthorized", "invalid_message", "unsupported"])
def test_other_refusals_are_final(code: str) -> None:
  session, tries, told = run([refused(code), served()], retries=3)
  assert tries == 1 and session.error["code"] == code and told == []


def test_a_stream_that_started_is_never_repeated() -> None:
  """Ready came, then the server drained: the audio was consumed, so no second try."""
  started_then_drained = Session(
    ready={"type": "ready"}, texts=[{"type": "error", "code": "shutting_down", "message": "..."}], close_code=1001
  )
  session, tries, _ = run([started_then_drained, served()], retries=3)
  assert tries == 1 and session is started_then_drained
