"""The server's plain parts without a server: protocol, outbox, access, settings, batching."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from server_harness import TIMEOUT_S

from engine.pool import RAW_OUTPUTS, BlockResult, PoolFullError
from server.access import check_access
from server.engine_thread import Engine
from server.metrics import Metrics
from server.outbox import Outbox
from server.protocol import (
  HEADER,
  LAYOUTS,
  OUTPUT_KINDS,
  FrameMessage,
  ProtocolError,
  StreamSpec,
  decode_audio,
  offered_outputs,
)
from server.settings import Settings


def _message(sequence: int, rows: int) -> FrameMessage:
  return FrameMessage(
    kind=1, sequence=sequence, first_index=10 * sequence, rows=np.full((rows, 3, 2), sequence, np.float32)
  )


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
    outbox.end()
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
  "headers, query, refusal",
  [
    ({"authorization": "Bearer s3cret"}, {}, None),
    ({"authorization": "bearer s3cret"}, {}, None),
    ({}, {"token": "s3cret"}, None),
    ({}, {}, "a valid bearer token is required"),
    ({"authorization": "Basic s3cret"}, {}, "a valid bearer token is required"),
    ({"authorization": "Bearer s3cret", "origin": "http://a.example"}, {}, None),
    (
      {"authorization": "Bearer s3cret", "origin": "http://b.example"},
      {},
      r"origin 'http://b\.example' is not allowed",
    ),
  ],
  ids=[
    "bearer-header",
    "lowercase-bearer-header",
    "token-query",
    "no-token",
    "basic-scheme-is-no-token",
    "allowed-origin",
    "foreign-origin",
  ],
)
def test_token_and_origin(headers: dict, query: dict, refusal: str | None) -> None:
  settings = Settings(token="s3cret", allowed_origins=["http://a.example"])
  if refusal is None:
    check_access(headers, query, settings)
  else:
    with pytest.raises(ProtocolError, match=refusal) as error:
      check_access(headers, query, settings)
    assert error.value.kind.close_code == 1008


def test_any_origin_with_a_star_and_no_token_needed() -> None:
  check_access({"origin": "http://anywhere.example"}, {}, Settings(allowed_origins=["*"]))


def test_every_output_the_engine_offers_has_one_wire_kind_and_layout() -> None:
  assert set(RAW_OUTPUTS) <= set(OUTPUT_KINDS) and set(LAYOUTS) == set(OUTPUT_KINDS)
  assert len(set(OUTPUT_KINDS.values())) == len(OUTPUT_KINDS)  # one code per name
  assert offered_outputs(Settings(raw_outputs=list(RAW_OUTPUTS), pitchogram=False)) == ["frames", *RAW_OUTPUTS]
  with pytest.raises(ValueError, match="raw_outputs.0\n  Input should be 'naps' or 'bm'"):
    Settings(raw_outputs=["seg_ohc"])


def test_settings_from_environment_and_command_line(monkeypatch) -> None:
  monkeypatch.setenv("CARFAC_CAPACITY", "8")
  monkeypatch.setenv("CARFAC_EARS", "[2]")
  settings = Settings(_cli_parse_args=["--port", "9001", "--raw-outputs", "naps,bm"])
  assert (settings.capacity, settings.ears, settings.port, settings.raw_outputs) == (8, [2], 9001, ["naps", "bm"])
  with pytest.raises(ValueError, match="min_hop_ms"):
    Settings(hop_ms=1.0, min_hop_ms=2.0)


def test_shards_must_divide_the_slots_of_an_automatic_capacity() -> None:
  with pytest.raises(ValueError, match=r"shards \(2\) must divide the pool's slots \(3\)"):
    Settings(pool_slots=3, shards=2)


@pytest.mark.parametrize(("capacity", "shards", "slots"), [(1, 2, 2), ("3", "2", 4), (4, 4, 4), (5, 1, 5)])
def test_a_numeric_capacity_takes_whole_shards_of_slots(capacity, shards, slots) -> None:
  settings = Settings(capacity=capacity, shards=shards)
  assert (settings.capacity, settings.shards, settings.pool_slots) == (int(capacity), int(shards), slots)


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
  settings = Settings(ears=[1], capacity=1, shards=1, join_wait_s=0.5, pitchogram=False)
  engine = Engine(settings, Metrics())
  block = np.zeros((settings.block_size, 1), np.float32)

  async def timed_refusal() -> float:
    started = time.monotonic()
    with pytest.raises(PoolFullError, match="the 1-ear pool has its --capacity of 1 streams"):
      await engine.join("1", engine.pool("1").hop, _Results())
    return time.monotonic() - started

  async def scenario() -> None:
    engine.start(asyncio.get_running_loop())
    await _until(lambda: engine.ready)
    hop, results = engine.pool("1").hop, _Results()
    first = await engine.join("1", hop, results)
    assert await timed_refusal() < settings.join_wait_s  # nobody is finishing: refused at once
    first.submit([block] * 3, final=True)  # finishing: it will give its slot back
    joining = asyncio.create_task(engine.join("1", hop, _Results()))
    await _until(lambda: results.count == 3)
    assert not joining.done()  # waiting for the slot, not refused
    first.leave()
    second = await joining
    assert second.slot == first.slot
    second.submit([block], final=True)  # finishing, but it never leaves
    assert settings.join_wait_s <= await timed_refusal() < TIMEOUT_S

  try:
    asyncio.run(scenario())
  finally:
    engine.shut_down()
