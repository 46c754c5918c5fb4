"""The server's plain parts without a server: protocol, outbox, access, settings, batching."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from server_harness import TIMEOUT_S

from engine.pool import BlockResult, PoolFullError
from server.access import check_access
from engine.scheduler import ScheduledStream, Scheduler
from server.engine_thread import Engine
from server.metrics import Metrics
from server.outbox import Outbox
from server.protocol import HEADER, FrameMessage, ProtocolError, StreamSpec, decode_audio
from server.settings import Settings


def _message(sequence: int, rows: int) -> FrameMessage:
  return FrameMessage(kind=1, sequence=sequence, first_index=10 * sequence, rows=np.full((rows, 3, 2), sequence, np.float32))


def test_frame_message_encoding() -> None:
  data = _message(7, 2).encode(dropped=5)
  header = HEADER.unpack_from(data)
  assert header == (1, 1, 32, 3, 2, 7, 70, 2, 5)
  np.testing.assert_array_equal(np.frombuffer(data, "<f4", offset=32).reshape(2, 3, 2), 7)


def test_the_outbox_drops_the_oldest_and_reports_the_rows_once() -> None:
  async def scenario() -> list[tuple[int, int]]:
    dropped = []
    outbox = Outbox(limit=2, on_drop=dropped.append)
    for sequence, rows in enumerate([1, 2, 3, 4]):
      outbox.put(_message(sequence, rows))
    outbox.close()
    assert [m.sequence for m in dropped] == [0, 1] and outbox.dropped_rows == 3
    got = []
    while (item := await outbox.get()) is not None:
      header = HEADER.unpack_from(item[1])
      got.append((header[5], header[8]))  # sequence, dropped
    return got

  assert asyncio.run(scenario()) == [(2, 3), (3, 0)]


@pytest.mark.parametrize("channels", [1, 2])
def test_decode_audio(channels: int) -> None:
  s16 = StreamSpec(48000.0, channels, np.dtype("<i2"), 220, ("frames",))
  pcm = np.array([-32768, 16384, 0, 32767] * channels, "<i2")
  np.testing.assert_array_equal(decode_audio(pcm.tobytes(), s16).ravel(), pcm / np.float32(32768))
  f32 = StreamSpec(48000.0, channels, np.dtype("<f4"), 220, ("frames",))
  assert decode_audio(np.zeros(4 * channels, "<f4").tobytes(), f32).shape == (4, channels)
  with pytest.raises(ProtocolError, match="whole number") as error:
    decode_audio(b"\0" * (4 * channels + 2), f32)
  assert error.value.kind.close_code == 1007
  with pytest.raises(ProtocolError, match="NaN or Inf"):
    decode_audio(np.array([np.inf] * channels, "<f4").tobytes(), f32)


@pytest.mark.parametrize(
    "headers, query, allowed",
    [
        ({"authorization": "Bearer s3cret"}, {}, True),
        ({"authorization": "bearer s3cret"}, {}, True),
        ({}, {"token": "s3cret"}, True),
        ({}, {}, False),
        ({"authorization": "Basic s3cret"}, {}, False),
        ({"authorization": "Bearer s3cret", "origin": "http://a.example"}, {}, True),
        ({"authorization": "Bearer s3cret", "origin": "http://b.example"}, {}, False),
    ],
)
def test_token_and_origin(headers: dict, query: dict, allowed: bool) -> None:
  settings = Settings(token="s3cret", allowed_origins=["http://a.example"])
  if allowed:
    check_access(headers, query, settings)
  else:
    with pytest.raises(ProtocolError) as error:
      check_access(headers, query, settings)
    assert error.value.kind.close_code == 1008


def test_any_origin_with_a_star_and_no_token_needed() -> None:
  check_access({"origin": "http://anywhere.example"}, {}, Settings(allowed_origins=["*"]))


def test_settings_from_environment_and_command_line(monkeypatch) -> None:
  monkeypatch.setenv("CARFAC_CAPACITY", "8")
  monkeypatch.setenv("CARFAC_EARS", "[2]")
  settings = Settings(_cli_parse_args=["--port", "9001", "--raw-outputs", "naps,bm"])
  assert (settings.capacity, settings.ears, settings.port, settings.raw_outputs) == (8, [2], 9001, ["naps", "bm"])
  with pytest.raises(ValueError, match="min_hop_ms"):
    Settings(hop_ms=1.0, min_hop_ms=2.0)
  with pytest.raises(ValueError, match="shards"):
    Settings(capacity=3, shards=2)


def test_a_scheduler_steps_when_every_sending_stream_has_a_block_or_an_interval_passed() -> None:
  scheduler = Scheduler(block_seconds=0.01, interval_s=0.01)
  a, b = ScheduledStream(), ScheduledStream()
  scheduler.add(a)
  scheduler.add(b)
  block = np.zeros((4, 1), np.float32)
  slots = lambda batch: [{id(a): 0, id(b): 1}[id(stream)] for stream, _ in batch.blocks]
  assert scheduler.push(a, [block], final=False, now=1.0)  # the first ready stream: the engine looks
  assert slots(scheduler.take(now=1.0)) == [0]  # no step for a long time: go
  assert scheduler.push(a, [block], final=False, now=1.002)
  assert scheduler.take(now=1.002).wake_at == 1.01  # b has nothing yet: wait for it ...
  assert scheduler.push(b, [block, block], final=False, now=1.003)  # ... until everyone has a block
  assert slots(scheduler.take(now=1.003)) == [0, 1]
  assert scheduler.take(now=1.004).wake_at == 1.013  # b's second block waits for a ...
  assert slots(scheduler.take(now=1.013)) == [1]  # ... one interval at most
  scheduler.push(a, [], final=True)  # a finished: nobody else to wait for
  assert scheduler.missing == 1 and scheduler.take(now=1.02).wake_at == math.inf
  assert scheduler.finishing == 1
  scheduler.remove(b)
  scheduler.remove(a)
  assert scheduler.missing == 0 and scheduler.finishing == 0 and not scheduler.ready


def test_a_stream_more_than_a_block_late_steps_without_waiting_for_the_interval() -> None:
  """A hiccup leaves a backlog; stepping it one block per interval would keep the stream behind for good."""
  scheduler = Scheduler(block_seconds=0.01, interval_s=0.01)
  late, idle = ScheduledStream(), ScheduledStream()
  scheduler.add(late)
  scheduler.add(idle)  # still sending, but nothing queued: normally the pool would wait for it
  block = np.zeros((4, 1), np.float32)
  scheduler.push(late, [block] * 5, final=False, now=0.0)  # five blocks arrived at once, at 0.0
  assert len(scheduler.take(now=0.0).blocks) == 1  # the first step (no step for a long time)
  assert scheduler.take(now=0.001).wake_at == 0.01  # 0.001 s - 0.01 s stepped: early, so it waits
  assert len(scheduler.take(now=0.03).blocks) == 1  # due anyway; now 0.03 - 0.02 stepped: on time
  assert len(scheduler.take(now=0.045).blocks) == 1  # before the interval, but 0.045 - 0.02 > one block late
  assert len(scheduler.take(now=0.046).blocks) == 1  # 0.046 - 0.03: still more than a block behind
  assert scheduler.take(now=0.047).wake_at == pytest.approx(0.056)  # 0.047 - 0.04: within a block: the interval again


def test_a_stream_is_late_only_while_its_queue_never_empties() -> None:
  """Lateness: wall time since the queue last ran empty minus the audio stepped since then."""
  scheduler = Scheduler(block_seconds=0.01, interval_s=0.01, max_lag_s=0.05)
  fast, paused = ScheduledStream(), ScheduledStream()
  scheduler.add(fast)
  block = np.zeros((4, 1), np.float32)
  scheduler.push(fast, [block] * 100, final=False, now=0.0)  # a file sent at once: early, not late
  for step in range(10):
    assert scheduler.take(now=step * 0.001).overdue == []
  assert scheduler.lateness(fast, now=0.01) < 0
  assert scheduler.take(now=0.2).overdue == [fast]  # 0.2 s after its start only 0.1 s stepped: 0.1 s late
  assert fast.overdue and not scheduler.push(fast, [block], final=False)  # no more blocks for it
  scheduler.remove(fast)
  scheduler.add(paused)
  scheduler.push(paused, [block], final=False, now=1.0)
  assert len(scheduler.take(now=1.0).blocks) == 1  # its queue ran empty ...
  scheduler.push(paused, [block], final=False, now=5.0)  # ... so a pause of 4 s is not lateness
  batch = scheduler.take(now=5.0)
  assert len(batch.blocks) == 1 and batch.overdue == []
  scheduler.remove(paused)
  assert scheduler.missing == 0 and not scheduler.ready


class _Results:
  """A stream listener that counts its results."""

  def __init__(self):
    self.count = 0

  def on_result(self, result: BlockResult) -> None:
    self.count += 1

  def on_error(self, error: Exception) -> None:
    raise AssertionError(error)


async def _until(condition) -> None:
  async with asyncio.timeout(TIMEOUT_S):
    while not condition():
      await asyncio.sleep(0.005)


def test_a_join_waits_for_a_finishing_streams_slot_but_no_longer_than_join_wait() -> None:
  """A full pool refuses at once, unless a stream is finishing: then its slot goes to the waiting join."""
  settings = Settings(ears=[1], capacity=1, shards=1, join_wait_s=0.5)
  engine = Engine(settings, Metrics())
  block = np.zeros((settings.block_size, 1), np.float32)

  async def timed_refusal() -> float:
    started = time.monotonic()
    with pytest.raises(PoolFullError):
      await engine.join(1, engine.pool(1).hop, _Results())
    return time.monotonic() - started

  async def scenario() -> None:
    engine.start(asyncio.get_running_loop())
    await _until(lambda: engine.ready)
    hop, results = engine.pool(1).hop, _Results()
    first = await engine.join(1, hop, results)
    assert await timed_refusal() < settings.join_wait_s  # nobody is finishing: refused at once
    first.submit([block] * 3, final=True)  # finishing: it will give its slot back
    joining = asyncio.create_task(engine.join(1, hop, _Results()))
    await _until(lambda: results.count == 3)
    assert not joining.done()  # waiting for the slot, not refused
    first.close()
    second = await joining
    assert second.slot == first.slot
    second.submit([block], final=True)  # finishing, but never closed
    assert settings.join_wait_s <= await timed_refusal() < TIMEOUT_S

  try:
    asyncio.run(scenario())
  finally:
    engine.stop()
