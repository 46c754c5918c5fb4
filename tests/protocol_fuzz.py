"""Hostile protocol-v1 conversations from a seeded generator, each with the outcome the README promises.

``generate`` draws a ``Case``: handshake headers and a list of messages
(text or binary) with at most one defect: random bytes or text, truncated,
odd-length and oversized messages, JSON that is not an object, a missing,
unknown or mistyped field, a value out of range or not offered, a second
start, audio before start, NaN/Inf samples, and valid but extreme audio
(denormals, 1e30, float32's largest value, zero-length and limit-sized
messages, audio after stop).

``expected`` works the outcome out from the README alone (protocol v1 and
its error table), not from the server's code: the error code and close code
of the first defect, or a clean ``end`` and 1000. One defect per case keeps
the README's table sufficient: it does not say which of two defects is
reported first, so a case with two raises ``AmbiguousCase`` (a generator bug).
"""

from __future__ import annotations

import dataclasses
import json
import random
import string
from collections.abc import Callable
from typing import Any

import numpy as np

# The README's error table: code -> close code.
CLOSE_CODES = {
  "unsupported": 1003,
  "invalid_json": 1007,
  "invalid_message": 1007,
  "binary_before_start": 1007,
  "invalid_audio": 1007,
  "non_finite": 1007,
  "unauthorized": 1008,
  "origin_not_allowed": 1008,
  "idle_timeout": 1008,
  "message_too_big": 1009,
  "internal": 1011,
  "pool_full": 1013,
  "too_many_connections": 1013,
  "not_ready": 1013,
  "shutting_down": 1001,
}
SAMPLE_BYTES = {"f32le": 4, "s16le": 2}  # formats, and the bytes of one sample
SAMPLE_RATE_RANGE = (1000, 384000)
MAX_HOP_MS = 1000
START_FIELDS = {"type", "sample_rate", "channels", "format", "hop_ms", "outputs"}
REQUIRED_FIELDS = ("sample_rate", "channels", "format")
FOREIGN_ORIGINS = ("http://evil.example", "https://allowed.example.evil", "null", "http://allowed.example:8080")


class AmbiguousCase(ValueError):
  """A case with two defects: the README does not say which one is reported."""


@dataclasses.dataclass(frozen=True)
class Served:
  """What the server under test offers, in the README's terms (its settings)."""

  ears: tuple[int, ...]
  raw_outputs: tuple[str, ...]
  min_hop_ms: float
  max_message_bytes: int
  token: str
  allowed_origin: str


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How a conversation ends: an error ``code`` (None: none) and the close code."""

  code: str | None
  close: int

  @property
  def clean(self) -> bool:
    """A stop, answered by the ``end`` message and 1000."""
    return self.code is None and self.close == 1000


END = Outcome(None, 1000)
TOO_BIG_FOR_THE_WEBSOCKET_LAYER = Outcome(None, 1009)  # over twice the limit: a close without JSON


def error(code: str) -> Outcome:
  """The outcome of an error: its code and, from the README's table, its close code."""
  return Outcome(code, CLOSE_CODES[code])


@dataclasses.dataclass
class Case:
  """One conversation: how the client connects and what it sends."""

  kind: str
  messages: list[str | bytes]
  headers: dict[str, str]
  query: str = ""


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def start_problems(message: dict[str, Any], served: Served) -> set[str]:
  """Error codes a start message earns (README, protocol v1, step 1); empty if it is valid."""
  problems = set()
  if set(message) - START_FIELDS or any(name not in message for name in REQUIRED_FIELDS):
    problems.add("invalid_message")
  types = {
    "sample_rate": _is_number,
    "channels": _is_integer,
    "format": lambda v: isinstance(v, str),
    "hop_ms": _is_number,
    "outputs": lambda v: isinstance(v, list) and all(isinstance(name, str) for name in v),
  }
  typed = {name: value for name, value in message.items() if name in types and types[name](value)}
  if len(typed) < len(set(message) & set(types)):
    problems.add("invalid_message")
  low, high = SAMPLE_RATE_RANGE
  if "sample_rate" in typed and not low <= typed["sample_rate"] <= high:
    problems.add("invalid_message")
  if "format" in typed and typed["format"] not in SAMPLE_BYTES:
    problems.add("unsupported")
  if "channels" in typed and typed["channels"] not in served.ears:
    problems.add("unsupported")
  if "hop_ms" in typed and not served.min_hop_ms <= typed["hop_ms"] <= MAX_HOP_MS:
    problems.add("invalid_message")
  if "outputs" in typed:
    outputs = typed["outputs"]
    if any(name not in ("frames", *served.raw_outputs) for name in outputs):
      problems.add("unsupported")
    if not outputs or len(set(outputs)) < len(outputs):
      problems.add("invalid_message")
  return problems


def audio_problem(data: bytes, sample_format: str, channels: int) -> str | None:
  """The error code an audio message earns in a started stream, if any."""
  if len(data) % (SAMPLE_BYTES[sample_format] * channels):
    return "invalid_audio"
  if sample_format == "f32le" and not np.isfinite(np.frombuffer(data, "<f4")).all():
    return "non_finite"
  return None


def _access_problem(case: Case, served: Served) -> str | None:
  origin = case.headers.get("Origin")
  bad_origin = origin is not None and origin != served.allowed_origin
  scheme, _, credentials = case.headers.get("Authorization", "").partition(" ")
  presented = credentials if scheme == "Bearer" else case.query.removeprefix("?token=") or None
  bad_token = presented != served.token
  if bad_origin and bad_token:
    raise AmbiguousCase(f"{case.kind}: both the origin and the token are wrong")
  return "origin_not_allowed" if bad_origin else "unauthorized" if bad_token else None


def expected(case: Case, served: Served) -> Outcome:
  """The outcome the README promises for ``case`` on a server offering ``served``."""
  if problem := _access_problem(case, served):
    return error(problem)
  stream: tuple[str, int] | None = None  # (format, channels) once started
  for message in case.messages:
    size = len(message) if isinstance(message, bytes) else len(message.encode())
    if size > 2 * served.max_message_bytes:
      return TOO_BIG_FOR_THE_WEBSOCKET_LAYER
    if size > served.max_message_bytes:
      return error("message_too_big")
    if isinstance(message, bytes):
      if stream is None:
        return error("binary_before_start")
      if problem := audio_problem(message, *stream):
        return error(problem)
      continue
    try:
      value = json.loads(message)
    except (ValueError, RecursionError):
      return error("invalid_json")
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
      return error("invalid_message")
    if stream is not None:
      return END if value["type"] == "stop" else error("invalid_message")
    if value["type"] != "start":
      return error("invalid_message")
    problems = start_problems(value, served)
    if len(problems) > 1:
      raise AmbiguousCase(f"{case.kind}: {sorted(problems)}")
    if problems:
      return error(problems.pop())
    stream = (value["format"], value["channels"])
  raise AmbiguousCase(f"{case.kind}: the conversation does not end (the server would wait for the idle timeout)")


# The generator. Each drawing function takes the random source (and what it needs) and returns messages.

STOP = json.dumps({"type": "stop"})


def _valid_start(rng: random.Random, served: Served) -> dict[str, Any]:
  """A start message the README accepts, with the optional fields sometimes given."""
  start: dict[str, Any] = {
    "type": "start",
    "sample_rate": rng.choice([1000, 8000, 16000.0, 22050, 44100.0, 48000, 96000, 384000, 22050.5]),
    "channels": rng.choice(served.ears),
    "format": rng.choice(sorted(SAMPLE_BYTES)),
  }
  if rng.random() < 0.4:
    start["hop_ms"] = rng.choice([served.min_hop_ms, 5, 10.0, 33.3, MAX_HOP_MS])
  if rng.random() < 0.4:
    offered = ["frames", *served.raw_outputs]
    start["outputs"] = rng.sample(offered, rng.randint(1, len(offered)))
  return start


def _finite_f32(rng: random.Random, n: int) -> np.ndarray:
  """``n`` float32 samples, valid but hostile: denormals, 1e30, float32's extremes, -0, random bits."""
  gen = np.random.default_rng(rng.getrandbits(32))
  largest = np.finfo(np.float32).max
  extremes = np.array([0.0, -0.0, 1e-45, -1e-40, 1e-38, 1e30, -1e30, largest, -largest, 1.0, -1.0], np.float32)
  style = rng.choice(["noise", "denormal", "1e30", "max", "mixed", "bits", "silence"])
  if style == "noise":
    return (0.1 * gen.standard_normal(n)).astype(np.float32)
  if style == "denormal":
    return (gen.choice([-1, 1], n) * gen.uniform(1e-45, 1e-38, n)).astype(np.float32)
  if style in ("1e30", "max"):
    return (gen.choice([-1, 1], n) * (1e30 if style == "1e30" else 3.4028235e38)).astype(np.float32)
  if style == "mixed":
    return gen.choice(extremes, n)
  if style == "bits":
    samples = gen.integers(0, 2**32, n, dtype=np.uint32).view(np.float32)
    return np.where(np.isfinite(samples), samples, np.float32(0))
  return np.zeros(n, np.float32)


def _valid_audio(rng: random.Random, start: dict[str, Any], served: Served) -> bytes:
  """One valid audio message for ``start``'s stream: 0 frames up to the size limit."""
  frame_bytes = SAMPLE_BYTES[start["format"]] * start["channels"]
  most = served.max_message_bytes // frame_bytes
  frames = rng.choice([0, 1, rng.randint(1, most), most])
  if start["format"] == "s16le":
    return rng.randbytes(frames * frame_bytes)
  return _finite_f32(rng, frames * start["channels"]).astype("<f4").tobytes()


def _random_text(rng: random.Random) -> str:
  """Up to 200 characters: printable ASCII, JSON's own characters, or other Unicode (NUL included)."""
  alphabets = [string.printable, '{}[]:,"0123456789.eE+-truefalsnul ', "äöü€😀\u0000\u2028\ufffd"]
  return "".join(rng.choice(rng.choice(alphabets)) for _ in range(rng.randint(0, 200)))


def _not_an_object(rng: random.Random) -> str:
  """Valid JSON (for Python's parser: NaN and 1e999 too) that is not an object."""
  return rng.choice(["1", "-0.5", '"start"', "[]", '["start"]', "null", "true", "NaN", "1e999", '[{"type": "start"}]'])


def _wrong_type(rng: random.Random) -> str:
  """A JSON object without a string ``type``."""
  objects = [{}, {"kind": "start"}, {"type": 1}, {"type": None}, {"type": ["start"]}, {"type": {"a": 1}}]
  return json.dumps(rng.choice(objects))


def _deep(rng: random.Random) -> str:
  """JSON nested past Python's recursion limit (1000), yet within a 4 KiB message."""
  depth = rng.randint(1500, 2000)
  return rng.choice(["[" * depth, "[" * depth + "]" * depth, '{"":' * rng.randint(1001, 1020)])


def _wrong_value(rng: random.Random, served: Served) -> tuple[str, Any]:
  """One field and a value of the right JSON type that the README refuses."""
  unknown_name = rng.choice(["spikes", "FRAMES", "bm" if "bm" not in served.raw_outputs else "nap", ""])
  return rng.choice(
    [
      ("sample_rate", rng.choice([0, -48000, 999.9, 384000.5, 1e12, float("nan"), float("inf"), -float("inf")])),
      ("channels", rng.choice([0, -1, 3, 2**40] + [c for c in (1, 2) if c not in served.ears])),
      ("format", rng.choice(["f64le", "S16LE", "", "f32be", "u8"])),
      ("hop_ms", rng.choice([0, -10, served.min_hop_ms / 2, MAX_HOP_MS + 0.5, 1e308, float("nan")])),
      ("outputs", rng.choice([[], ["frames", "frames"], [unknown_name], ["frames", unknown_name]])),
    ]
  )


def _wrong_json_type(rng: random.Random) -> tuple[str, Any]:
  """One field and a value of a JSON type the README refuses (types are strict)."""
  return rng.choice(
    [
      ("sample_rate", rng.choice(["48000", True, None, [48000], {"hz": 48000}])),
      ("channels", rng.choice([1.0, "1", True, None, [1]])),
      ("format", rng.choice([1, None, ["f32le"], True])),
      ("hop_ms", rng.choice(["10", False, [10]])),
      ("outputs", rng.choice(["frames", [1], [None], {"frames": True}, [["frames"]]])),
    ]
  )


def _bad_start(rng: random.Random, served: Served) -> str:
  """A start message with one defect: a wrong value or JSON type, a missing or an unknown field."""
  start = _valid_start(rng, served)
  defect = rng.choice(["value", "type", "missing", "unknown"])
  if defect == "missing":
    del start[rng.choice(REQUIRED_FIELDS)]
  elif defect == "unknown":
    start[rng.choice(["volume", "Type", "token", "sampleRate", ""])] = rng.choice([1, "x", None])
  else:
    name, value = _wrong_value(rng, served) if defect == "value" else _wrong_json_type(rng)
    start[name] = value
  return json.dumps(start)


def _broken_audio(rng: random.Random, start: dict[str, Any], served: Served) -> bytes:
  """Audio with one defect: not whole samples x channels, or NaN/Inf (f32le)."""
  frame_bytes = SAMPLE_BYTES[start["format"]] * start["channels"]
  data = _valid_audio(rng, start, served)
  if start["format"] == "f32le" and data and rng.random() < 0.5:
    samples = np.frombuffer(data, "<f4").copy()
    samples[rng.randrange(len(samples))] = rng.choice([np.nan, np.inf, -np.inf])
    return samples.tobytes()
  cut = rng.randint(1, frame_bytes - 1)
  return data[:-cut] if len(data) >= frame_bytes else rng.randbytes(frame_bytes - cut)


def _oversized(rng: random.Random, served: Served, binary: bool) -> str | bytes:
  """A message over the size limit: just over, up to twice, or beyond (the WebSocket layer's own limit)."""
  limit = served.max_message_bytes
  size = rng.choice(
    [limit + 1, rng.randint(limit + 1, 2 * limit), 2 * limit + 1, rng.randint(2 * limit + 1, 8 * limit)]
  )
  if binary:
    return rng.randbytes(size)
  return json.dumps({"type": "stop", "padding": "x" * size})[:size]


def _random_audio_bytes(rng: random.Random, start: dict[str, Any], served: Served) -> bytes:
  """Random bytes, usually a whole number of samples x channels (f32le: NaN/Inf likely)."""
  frame_bytes = SAMPLE_BYTES[start["format"]] * start["channels"]
  size = rng.randint(0, served.max_message_bytes)
  return rng.randbytes(size if rng.random() < 0.3 else size - size % frame_bytes)


def _audio_then(rng: random.Random, start: dict[str, Any], served: Served) -> list[str | bytes]:
  """Zero to three valid audio messages, before a defect."""
  return [_valid_audio(rng, start, served) for _ in range(rng.randint(0, 3))]


def _junk(rng: random.Random, start: dict[str, Any], served: Served) -> list[str | bytes]:
  """What a client may still send after a defect or a stop: it must change nothing."""
  choices = [
    lambda: _valid_audio(rng, start, served),
    lambda: STOP,
    lambda: json.dumps(start),
    lambda: rng.randbytes(7),
  ]
  return [rng.choice(choices)() for _ in range(rng.randint(0, 2))]


Drawer = Callable[[random.Random, Served, dict[str, Any]], list[str | bytes]]

# kind -> messages for a (valid) start; the access kinds change the headers instead.
_DRAWERS: dict[str, Drawer] = {
  "random bytes first": lambda rng, served, start: [rng.randbytes(rng.randint(0, 300))],
  "random text first": lambda rng, served, start: [_random_text(rng)],
  "JSON not an object": lambda rng, served, start: [_not_an_object(rng)],
  "no string type": lambda rng, served, start: [_wrong_type(rng)],
  "stop or other before start": lambda rng, served, start: [
    json.dumps({"type": rng.choice(["stop", "pause", "audio", ""])})
  ],
  "truncated start": lambda rng, served, start: [json.dumps(start)[: rng.randint(0, len(json.dumps(start)) - 1)]],
  "deeply nested JSON": lambda rng, served, start: [_deep(rng)],
  "bad start": lambda rng, served, start: [_bad_start(rng, served)],
  "oversized first": lambda rng, served, start: [_oversized(rng, served, rng.random() < 0.5)],
  "oversized in stream": lambda rng, served, start: [
    json.dumps(start),
    *_audio_then(rng, start, served),
    _oversized(rng, served, rng.random() < 0.7),
  ],
  "start twice": lambda rng, served, start: [json.dumps(start), *_audio_then(rng, start, served), json.dumps(start)],
  "text in stream": lambda rng, served, start: [
    json.dumps(start),
    *_audio_then(rng, start, served),
    rng.choice([_random_text(rng), _not_an_object(rng), _wrong_type(rng), _deep(rng), '{"type": "pause"}']),
  ],
  "broken audio": lambda rng, served, start: [
    json.dumps(start),
    *_audio_then(rng, start, served),
    _broken_audio(rng, start, served),
  ],
  "random bytes as audio": lambda rng, served, start: [
    json.dumps(start),
    *[_random_audio_bytes(rng, start, served) for _ in range(rng.randint(1, 3))],
    STOP,
  ],
  "extreme audio, then stop": lambda rng, served, start: [
    json.dumps(start),
    *[_valid_audio(rng, start, served) for _ in range(rng.randint(1, 6))],
    STOP,
  ],
}
_ACCESS_KINDS = ("no token", "wrong token", "not a bearer token", "wrong token in the query", "foreign origin")
# How often each kind is drawn: most weight where the engine is reached (a valid start, then audio).
_WEIGHTS = {
  **dict.fromkeys(_ACCESS_KINDS, 1),
  **dict.fromkeys(_DRAWERS, 2),
  "bad start": 8,
  "broken audio": 4,
  "random bytes as audio": 4,
  "extreme audio, then stop": 8,
}


def _access_case(rng: random.Random, kind: str, served: Served, messages: list[str | bytes]) -> Case:
  good = {"Authorization": f"Bearer {served.token}"}
  headers, query = {
    "no token": ({}, ""),
    "wrong token": ({"Authorization": f"Bearer {served.token}x"}, ""),
    "not a bearer token": ({"Authorization": f"Basic {served.token}"}, ""),
    "wrong token in the query": ({}, f"?token={served.token[:-1]}"),
    "foreign origin": ({**good, "Origin": rng.choice(FOREIGN_ORIGINS)}, ""),
  }[kind]
  if rng.random() < 0.3:
    headers = {**headers, "Origin": served.allowed_origin} if kind != "foreign origin" else headers
  return Case(kind, messages, headers, query)


def generate(rng: random.Random, served: Served) -> Case:
  """One hostile conversation (at most one defect, then maybe more messages)."""
  start = _valid_start(rng, served)
  kind = rng.choices(list(_WEIGHTS), list(_WEIGHTS.values()))[0]
  if kind in _ACCESS_KINDS:
    return _access_case(rng, kind, served, [json.dumps(start), _valid_audio(rng, start, served), STOP])
  messages = _DRAWERS[kind](rng, served, start) + _junk(rng, start, served)
  headers = {"Authorization": f"Bearer {served.token}"}
  if rng.random() < 0.2:
    headers["Origin"] = served.allowed_origin
  return Case(kind, messages, headers)


def frames_are_finite(binary: list[bytes], ready: dict[str, Any] | None) -> bool:
  """Whether every float in every frame message is finite (payloads start after the ready's header size)."""
  if not binary:
    return True
  offset = ready["header"]["bytes"]
  return all(np.isfinite(np.frombuffer(message, "<f4", offset=offset)).all() for message in binary)


def cases(seed: int, served: Served, messages: int) -> list[Case]:
  """Cases from ``seed`` until they hold at least ``messages`` messages."""
  rng, drawn = random.Random(seed), []
  while sum(len(case.messages) for case in drawn) < messages:
    drawn.append(generate(rng, served))
  return drawn
