"""Protocol v1 of ``WS /v1/stream``: the messages, their checks and encodings.

Client -> server: a JSON ``start``, binary audio (interleaved samples in the
negotiated format), a JSON ``stop``. Server -> client: a JSON ``ready``,
binary frame messages (``HEADER`` then float32 rows), a JSON ``end``, or a
JSON ``error`` followed by the close code of its kind. The README documents
every field; this module is the single place that defines them.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import struct
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carfac.finite import count_non_finite
from server.settings import Settings

PROTOCOL_VERSION = 1

# The outputs a client may ask for, once: each name's kind code in binary frame messages and what a
# payload's dimensions are (the header's channels and ears fields are the 2nd and 3rd). frames: mean NAP per
# hop; naps, bm: per sample, the engine's RAW_OUTPUTS, offered with --raw-outputs; pitchogram:
# per block, the lag profile and the two vowel coordinates; sai: whole SAI frames, one every sai_every blocks
# (row i is block (i + 1) * sai_every - 1's). The pictures are mono, from the engine's pool with pictures
# (--pitchogram). The codes are protocol v1's: fixed, whatever the engine offers.
PICTURE_OUTPUTS = ("pitchogram", "sai")
_OUTPUT_TABLE = {  # name: (kind code, layout)
  "frames": (1, ["count", "channels", "ears"]),
  "naps": (2, ["count", "channels", "ears"]),
  "bm": (3, ["count", "channels", "ears"]),
  "pitchogram": (4, ["count", "lags + 2", "1"]),
  "sai": (5, ["count", "channels", "lags"]),
}
OUTPUT_KINDS = {name: kind for name, (kind, _) in _OUTPUT_TABLE.items()}
KIND_NAMES = {kind: name for name, kind in OUTPUT_KINDS.items()}
LAYOUTS = {name: layout for name, (_, layout) in _OUTPUT_TABLE.items()}
SAI_INTERVAL_MS = (20.0, 10000.0)  # the range a client may ask for; default below
DEFAULT_SAI_INTERVAL_MS = 100.0
SAMPLE_FORMATS = {"f32le": np.dtype("<f4"), "s16le": np.dtype("<i2")}
SAMPLE_RATE_RANGE = (1000.0, 384000.0)
MAX_HOP_MS = 1000.0

# version, kind, header bytes, channels, ears, sequence, first index, rows, dropped rows
HEADER = struct.Struct("<BBHHHQQII")
HEADER_FIELDS = ("version", "kind", "header_bytes", "channels", "ears", "sequence", "first_index", "count", "dropped")
PAYLOAD_DTYPE = "<f4"
_MAX_UINT32 = 2**32 - 1


class ErrorKind(enum.Enum):
  """Every error the server reports: (code in the JSON error, WebSocket close code)."""

  UNSUPPORTED = ("unsupported", 1003)  # sample format, channel count or output not offered
  INVALID_JSON = ("invalid_json", 1007)
  INVALID_MESSAGE = ("invalid_message", 1007)  # wrong type, fields, field types or values
  BINARY_BEFORE_START = ("binary_before_start", 1007)
  INVALID_AUDIO = ("invalid_audio", 1007)  # not a whole number of samples x channels
  NON_FINITE = ("non_finite", 1007)  # NaN or Inf samples
  UNAUTHORIZED = ("unauthorized", 1008)
  ORIGIN_NOT_ALLOWED = ("origin_not_allowed", 1008)
  IDLE_TIMEOUT = ("idle_timeout", 1008)
  MESSAGE_TOO_BIG = ("message_too_big", 1009)
  INTERNAL = ("internal", 1011)
  POOL_FULL = ("pool_full", 1013)
  OVERLOADED = ("overloaded", 1013)  # the engine fell more than --max-lag-s behind the stream
  TOO_MANY_CONNECTIONS = ("too_many_connections", 1013)
  NOT_READY = ("not_ready", 1013)
  SHUTTING_DOWN = ("shutting_down", 1001)
  INVALID_RESUME_TOKEN = ("invalid_resume_token", 1008)  # malformed, not ours, another stream or design
  RESUME_TOKEN_EXPIRED = ("resume_token_expired", 1008)

  @property
  def code(self) -> str:
    return self.value[0]

  @property
  def close_code(self) -> int:
    return self.value[1]


class ProtocolError(Exception):
  """Ends a connection with a JSON error of ``kind`` and its close code."""

  def __init__(self, kind: ErrorKind, message: str):
    super().__init__(message)
    self.kind, self.message = kind, message

  def to_json(self) -> dict[str, Any]:
    return {"type": "error", "code": self.kind.code, "message": self.message}


class AudiogramMessage(BaseModel):
  """An audiogram in a start's ``hearing``: hearing loss (dB HL) at increasing frequencies."""

  model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

  frequencies_hz: list[float]
  loss_db: list[float]


class HearingMessage(BaseModel):
  """A start's optional ``hearing``: one of profile, audiogram, ohc_health, and a level (``server.hearing``)."""

  model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

  profile: str | None = None
  audiogram: AudiogramMessage | None = None
  ohc_health: list[float] | list[list[float]] | None = None
  level_db_spl: float | None = None


class StartMessage(BaseModel):
  """The client's first message. Types are checked strictly; values by ``negotiate``."""

  model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

  type: Literal["start"]
  sample_rate: float
  channels: int  # audio channels: the stream's ears (StreamSpec.ears)
  format: str
  hop_ms: float | None = None
  outputs: list[str] = Field(default_factory=lambda: ["frames"], min_length=1)
  sai_interval_ms: float | None = None  # with the sai output: least time between two SAI frames
  resume_token: str | None = None  # from the end message of a stream a server handed over
  hearing: HearingMessage | None = None  # this stream's hearing profile and input level


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """A negotiated stream: what the audio is and what to send back."""

  sample_rate: float
  ears: int  # the start's ``channels``: audio channels, one per ear of the model
  sample_dtype: np.dtype
  hop: int  # model samples per frame
  outputs: tuple[str, ...]
  sai_every: int = 0  # with the sai output: one SAI frame every this many blocks
  hearing: HearingMessage | None = None  # as the start gave it; resolved against the pool (server.hearing)

  @property
  def pictures(self) -> bool:
    """Whether the stream needs the engine's pool with pictures (it asked for pitchogram or sai)."""
    return any(name in PICTURE_OUTPUTS for name in self.outputs)

  def identity(self) -> dict[str, Any]:
    """What a resumed stream must be started with again, in the start message's names: audio, hop, outputs, hearing."""
    identity = {
      "sample_rate": self.sample_rate,
      "channels": self.ears,
      "format": next(name for name, dtype in SAMPLE_FORMATS.items() if dtype == self.sample_dtype),
      "hop": self.hop,
      "outputs": list(self.outputs),
    }
    if self.hearing is not None:
      identity["hearing"] = self.hearing.model_dump(exclude_none=True)
    return identity


def parse_json(text: str) -> dict[str, Any]:
  """A client text message as a JSON object with a string ``type``."""
  try:
    message = json.loads(text)
  except json.JSONDecodeError as err:
    raise ProtocolError(ErrorKind.INVALID_JSON, f"not JSON: {err}") from None
  except RecursionError:  # e.g. "[[[[...": Python's parser gives up past ~1000 levels
    raise ProtocolError(ErrorKind.INVALID_JSON, "not JSON: nested too deeply") from None
  if not isinstance(message, dict) or not isinstance(message.get("type"), str):
    raise ProtocolError(ErrorKind.INVALID_MESSAGE, 'a JSON object with a string "type" was expected')
  return message


def parse_start(message: dict[str, Any]) -> StartMessage:
  """Validates the fields and their JSON types of a ``start`` message."""
  try:
    return StartMessage.model_validate(message)
  except ValidationError as err:
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in err.errors())
    raise ProtocolError(ErrorKind.INVALID_MESSAGE, f"invalid start message: {problems}") from None


def offered_outputs(settings: Settings) -> list[str]:
  """The output names this server offers."""
  pictures = list(PICTURE_OUTPUTS) if settings.pitchogram and 1 in settings.ears else []
  return ["frames", *settings.raw_outputs, *pictures]


def _sai_every(start: StartMessage, settings: Settings) -> int:
  """Blocks between two SAI frames: the fewest that span ``sai_interval_ms``."""
  if "sai" not in start.outputs:
    if start.sai_interval_ms is not None:
      raise ProtocolError(ErrorKind.INVALID_MESSAGE, "sai_interval_ms is only for the sai output")
    return 0
  interval = DEFAULT_SAI_INTERVAL_MS if start.sai_interval_ms is None else start.sai_interval_ms
  low, high = SAI_INTERVAL_MS
  if not low <= interval <= high:
    raise ProtocolError(ErrorKind.INVALID_MESSAGE, f"sai_interval_ms must be within [{low:g}, {high:g}]")
  block_ms = 1000 * settings.block_size / settings.model_rate
  return max(1, math.ceil(interval / block_ms - 1e-9))


def negotiate(start: StartMessage, settings: Settings) -> StreamSpec:
  """Checks a start message's values against what this server offers."""
  low, high = SAMPLE_RATE_RANGE
  if not low <= start.sample_rate <= high:
    raise ProtocolError(ErrorKind.INVALID_MESSAGE, f"sample_rate must be within [{low:g}, {high:g}] Hz")
  if start.format not in SAMPLE_FORMATS:
    raise ProtocolError(ErrorKind.UNSUPPORTED, f"format {start.format!r}: choose from {sorted(SAMPLE_FORMATS)}")
  if start.channels not in settings.ears:
    raise ProtocolError(ErrorKind.UNSUPPORTED, f"channels {start.channels}: this server serves {settings.ears}")
  offered = offered_outputs(settings)
  if any(name not in offered for name in start.outputs):
    raise ProtocolError(ErrorKind.UNSUPPORTED, f"outputs {start.outputs}: choose from {offered}")
  if len(set(start.outputs)) != len(start.outputs):  # offered names, but a wrong value
    raise ProtocolError(ErrorKind.INVALID_MESSAGE, f"outputs {start.outputs}: the names must be distinct")
  if start.channels != 1 and any(name in PICTURE_OUTPUTS for name in start.outputs):
    raise ProtocolError(ErrorKind.UNSUPPORTED, "the pitchogram and sai outputs are mono: channels must be 1")
  sai_every = _sai_every(start, settings)
  hop_ms = settings.hop_ms if start.hop_ms is None else start.hop_ms
  if not settings.min_hop_ms <= hop_ms <= MAX_HOP_MS:
    raise ProtocolError(ErrorKind.INVALID_MESSAGE, f"hop_ms must be within [{settings.min_hop_ms}, {MAX_HOP_MS}]")
  hop = settings.model_samples(hop_ms)
  return StreamSpec(
    start.sample_rate,
    start.channels,
    SAMPLE_FORMATS[start.format],
    hop,
    tuple(start.outputs),
    sai_every,
    start.hearing,
  )


def decode_audio(data: bytes, spec: StreamSpec) -> np.ndarray:
  """A binary audio message as float32 (n, ears) in [-1, 1] (s16le / 32768).

  ``f32le`` audio with a NaN or Inf sample is rejected (``non_finite``): the
  wire's part of the NaN/Inf policy (every layer's part: README, "Bad input").
  """
  frame_bytes = spec.sample_dtype.itemsize * spec.ears
  if len(data) % frame_bytes:
    raise ProtocolError(
      ErrorKind.INVALID_AUDIO,
      f"{len(data)} bytes is not a whole number of {spec.ears}-channel {spec.sample_dtype.str} samples",
    )
  samples = np.frombuffer(data, spec.sample_dtype).reshape(-1, spec.ears)
  if spec.sample_dtype.kind == "i":
    return samples.astype(np.float32) / np.float32(32768)
  if count_non_finite(samples):
    raise ProtocolError(ErrorKind.NON_FINITE, "audio has NaN or Inf samples")
  return samples.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FrameMessage:
  """One binary server message: ``rows`` (count, channels, ears) of one kind."""

  kind: int
  sequence: int
  first_index: int  # index of rows[0] in the stream (frame index, or sample index for raw kinds)
  rows: np.ndarray

  def encode(self, dropped: int) -> bytes:
    """Header (with the rows dropped since the previous message) + float32 payload."""
    count, channels, ears = self.rows.shape
    header = HEADER.pack(
      PROTOCOL_VERSION,
      self.kind,
      HEADER.size,
      channels,
      ears,
      self.sequence,
      self.first_index,
      count,
      min(dropped, _MAX_UINT32),
    )
    return header + np.ascontiguousarray(self.rows, PAYLOAD_DTYPE).tobytes()


def pictures_description(spec: StreamSpec, lags_s: np.ndarray, sai_width: int, block_size: int, model_rate: float):
  """The ready message's ``pictures`` entry: how to read pitchogram and sai rows."""
  return {
    "segment_samples": block_size,
    "lags": len(lags_s),
    "lags_s": [float(lag) for lag in lags_s],
    "sai_width": sai_width,
    "sai_every_blocks": spec.sai_every,
    "sai_interval_ms": 1000 * spec.sai_every * block_size / model_rate,
  }


def ready_message(
  spec: StreamSpec,
  model_rate: float,
  centre_frequencies: np.ndarray,
  block_size: int,
  send_queue: int,
  pictures: dict[str, Any] | None = None,
  hearing: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """The server's answer to ``start``: everything needed to read frame messages.

  ``pictures``: ``pictures_description(...)``, for a stream with pictures;
  ``hearing``: ``StreamHearing.describe()``, for a stream with a hearing profile.
  """
  message = {
    "type": "ready",
    "protocol": PROTOCOL_VERSION,
    "model_rate": model_rate,
    "channels": len(centre_frequencies),
    "ears": spec.ears,
    "centre_frequencies_hz": [float(f) for f in centre_frequencies],
    "hop_samples": spec.hop,
    "hop_ms": 1000 * spec.hop / model_rate,
    "block_samples": block_size,
    "outputs": list(spec.outputs),
    "kinds": {name: OUTPUT_KINDS[name] for name in spec.outputs},
    "payload": {"dtype": PAYLOAD_DTYPE, "layout": ["count", "channels", "ears"], "order": "C"},
    "layouts": {name: LAYOUTS[name] for name in spec.outputs},
    "header": {"struct": HEADER.format, "bytes": HEADER.size, "fields": list(HEADER_FIELDS)},
    "send_queue_messages": send_queue,
  }
  if pictures is not None:
    message["pictures"] = pictures
  if hearing is not None:
    message["hearing"] = hearing
  return message


def end_message(
  reason: Literal["stop", "shutdown"],
  samples_received: int,
  model_samples: int,
  rows: dict[str, int],
  dropped_rows: int,
  messages: int,
  resume_token: str | None = None,
) -> dict[str, Any]:
  """The last message of a stream: what was received and produced (and, handed over, how to resume it)."""
  message = {
    "type": "end",
    "reason": reason,
    "samples_received": samples_received,
    "model_samples": model_samples,
    "rows": rows,
    "dropped_rows": dropped_rows,
    "messages": messages,
  }
  if resume_token is not None:
    message["resume_token"] = resume_token
  return message
