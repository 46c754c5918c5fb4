"""Resume tokens: a handed-over stream's state, signed, so that any replica with the same key continues it.

When a server drains (SIGTERM) and has a resume key, each stream's ``end``
message carries ``resume_token``; a client that sends it back in the
``start`` message of its next connection, to any replica with the same key
and design, goes on where it stopped. The token holds a ``Checkpoint``: the
stream's pool state (model state, unfinished frame, frame index), the
model-rate samples not yet in a block, the counters the protocol reports
(samples received, rows, messages), what the stream was started with, the
design's fingerprint and an expiry time.

Format: ``v1.<payload>.<mac>``, both parts base64url without padding. The
payload is a zlib-compressed ``.npz`` (no pickles) of the arrays and one
JSON entry; the mac is HMAC-SHA256 of the payload under the key. The mac is
checked (in constant time) before anything of the payload is read, so an
altered or forged token never reaches a parser or a pool.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import io
import json
import zlib
from typing import Any

import jax
import numpy as np

from carfac.weights_file import design_sha256
from engine.pool import SlotState, StreamPool

VERSION = "v1"
_META = "__meta__"
_MAX_PAYLOAD_BYTES = 1 << 22  # inflated: far above a binaural stream's ~20 KB, bounds a zip bomb


class ResumeTokenError(ValueError):
  """A token that cannot be used: malformed, not signed with our key, for another stream or design."""


class ResumeTokenExpired(ResumeTokenError):
  """A genuine token past its lifetime."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """Everything a replica needs to continue a stream (see the module docstring)."""

  design: str  # design_fingerprint of the pool
  start: dict[str, Any]  # sample_rate, channels, format, hop, outputs: as negotiated
  slot: SlotState
  pending: np.ndarray  # (n, ears) float32: model-rate samples received but not yet in a block
  samples_received: int  # at the client's rate, per channel
  blocks_done: int
  rows: dict[str, int]
  messages: int
  expires_at: float  # Unix time


def design_fingerprint(pool: StreamPool) -> str:
  """SHA-256 over what makes two pools' states interchangeable: design, weights, initial state, block, granule."""
  digest = hashlib.sha256()
  digest.update(design_sha256(pool.hypers).encode())
  digest.update(repr((pool.block_size, pool.frame_granule, pool.dtype.str)).encode())
  for leaf in jax.tree.leaves((pool.weights, pool.initial_state)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def _b64(data: bytes) -> str:
  return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
  return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes) -> bytes:
  return hmac.new(key, payload, hashlib.sha256).digest()


def seal(checkpoint: Checkpoint, key: bytes) -> str:
  """The signed token of ``checkpoint``."""
  meta = {
    "design": checkpoint.design,
    "start": checkpoint.start,
    "next_frame": checkpoint.slot.next_frame,
    "samples_received": checkpoint.samples_received,
    "blocks_done": checkpoint.blocks_done,
    "rows": checkpoint.rows,
    "messages": checkpoint.messages,
    "expires_at": checkpoint.expires_at,
    "leaves": list(checkpoint.slot.arrays),
  }
  arrays = {f"leaf{i}": array for i, array in enumerate(checkpoint.slot.arrays.values())}
  buffer = io.BytesIO()
  np.savez(buffer, pending=checkpoint.pending, **arrays, **{_META: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
  payload = zlib.compress(buffer.getvalue(), 6)
  return f"{VERSION}.{_b64(payload)}.{_b64(_mac(key, payload))}"


def unseal(token: str, key: bytes, now: float) -> Checkpoint:
  """The checkpoint in ``token``; ``ResumeTokenError`` (or ``ResumeTokenExpired``) if it cannot be used."""
  try:
    version, payload_text, mac_text = token.split(".")
    payload, mac = _unb64(payload_text), _unb64(mac_text)
  except (ValueError, binascii.Error):
    raise ResumeTokenError("the resume token is malformed") from None
  if version != VERSION:
    raise ResumeTokenError(f"resume token version {version[:8]!r}: this server reads {VERSION}")
  if not hmac.compare_digest(mac, _mac(key, payload)):
    raise ResumeTokenError("the resume token is not signed with this server's key (altered or forged)")
  # Signed by a replica: from here on a failure is a bug or a key shared with the wrong party.
  try:
    inflater = zlib.decompressobj()
    raw = inflater.decompress(payload, _MAX_PAYLOAD_BYTES)
    if inflater.unconsumed_tail:
      raise ValueError("payload too large")
    with np.load(io.BytesIO(raw), allow_pickle=False) as stored:
      meta = json.loads(bytes(stored[_META]).decode())
      arrays = {path: stored[f"leaf{i}"] for i, path in enumerate(meta["leaves"])}
      pending = stored["pending"]
    checkpoint = Checkpoint(
      design=str(meta["design"]),
      start=dict(meta["start"]),
      slot=SlotState(arrays, int(meta["next_frame"])),
      pending=np.asarray(pending, np.float32),
      samples_received=int(meta["samples_received"]),
      blocks_done=int(meta["blocks_done"]),
      rows={str(k): int(v) for k, v in meta["rows"].items()},
      messages=int(meta["messages"]),
      expires_at=float(meta["expires_at"]),
    )
  except (ValueError, KeyError, TypeError, OSError, zlib.error) as err:
    raise ResumeTokenError(f"the resume token's contents are unreadable ({err})") from None
  if now > checkpoint.expires_at:
    raise ResumeTokenExpired(f"the resume token expired {now - checkpoint.expires_at:.0f} s ago")
  return checkpoint
