"""Protocol v1 of ``WS /v1/stream`` from the client's side: what goes on the wire.

A client sends a JSON start message (``StreamRequest.start_message``), audio
in the negotiated sample format (``encode_audio``) and a JSON stop. Binary
server messages are decoded with ``FrameDecoder``, which reads the header's
struct, its field names and the payload's dtype and layout from the server's
ready message rather than from server code, so this package needs nothing
of ``server`` (README, "Protocol v1").
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

import numpy as np

#: Sample formats of binary audio messages: little-endian float32, or int16 read as value / 32768.
SAMPLE_FORMATS = {"f32le": np.dtype("<f4"), "s16le": np.dtype("<i2")}
STOP_MESSAGE = json.dumps({"type": "stop"})


def auth_headers(token: str | None) -> dict[str, str]:
  """The handshake headers presenting a bearer token (none without one)."""
  return {"Authorization": f"Bearer {token}"} if token else {}


def encode_audio(audio: np.ndarray, fmt: str) -> bytes:
  """Float audio (n, channels) in [-1, 1] as one binary message (s16le: round(x * 32768), clipped)."""
  if fmt == "s16le":
    return np.clip(np.round(np.asarray(audio) * 32768), -32768, 32767).astype("<i2").tobytes()
  return np.ascontiguousarray(audio, SAMPLE_FORMATS[fmt]).tobytes()


@dataclasses.dataclass(frozen=True)
class StreamRequest:
  """What a client streams and asks for; the server's defaults apply to what is None."""

  sample_rate: float
  channels: int = 1
  format: str = "f32le"
  hop_ms: float | None = None
  outputs: tuple[str, ...] | None = None  # None: frames only
  resume_token: str | None = None  # from the end message of a stream a server drained: continue it
  sai_interval_ms: float | None = None  # with the sai output: least time between SAI frames (server default)
  hearing: dict[str, Any] | None = None  # a hearing profile and input level (README, "Hearing profiles")

  def __post_init__(self) -> None:
    if self.format not in SAMPLE_FORMATS:
      raise ValueError(f"format {self.format!r}: choose from {sorted(SAMPLE_FORMATS)}")

  def start_message(self) -> str:
    """The JSON start message."""
    message: dict[str, Any] = {
      "type": "start",
      "sample_rate": float(self.sample_rate),
      "channels": self.channels,
      "format": self.format,
    }
    if self.hop_ms is not None:
      message["hop_ms"] = float(self.hop_ms)
    if self.outputs is not None:
      message["outputs"] = list(self.outputs)
    if self.resume_token is not None:
      message["resume_token"] = self.resume_token
    if self.sai_interval_ms is not None:
      message["sai_interval_ms"] = float(self.sai_interval_ms)
    if self.hearing is not None:
      message["hearing"] = self.hearing
    return json.dumps(message)

  def encode(self, audio: np.ndarray) -> bytes:
    """A chunk of (n, channels) float audio as a binary audio message."""
    return encode_audio(audio, self.format)


@dataclasses.dataclass(frozen=True)
class FrameDecoder:
  """Reads binary frame messages as the ready message describes them."""

  header: struct.Struct
  fields: tuple[str, ...]
  dtype: np.dtype
  layout: tuple[str, ...]  # header fields giving the payload's shape, e.g. (count, channels, ears)

  @classmethod
  def from_ready(cls, ready: dict[str, Any]) -> FrameDecoder:
    return cls(
      struct.Struct(ready["header"]["struct"]),
      tuple(ready["header"]["fields"]),
      np.dtype(ready["payload"]["dtype"]),
      tuple(ready["payload"]["layout"]),
    )

  def decode(self, data: bytes) -> tuple[dict[str, int], np.ndarray]:
    """(header fields by name, rows shaped by the layout, e.g. (count, channels, ears))."""
    header = dict(zip(self.fields, self.header.unpack_from(data)))
    rows = np.frombuffer(data, self.dtype, offset=header["header_bytes"])
    return header, rows.reshape(tuple(header[name] for name in self.layout))
