"""Trained Weights kept in a file: a plain npz that any numpy can read.

The file holds one array per Weights leaf, named by its path in the pytree
(``ears[0].car.ohc_health``), and ``__meta__``: a JSON text with the format
name and version, every leaf's path, dtype and shape, and the SHA-256 of
the design the weights belong to (every Hypers field, arrays to the bit). Loading checks all of it against the design at hand, so weights
fitted for another sample rate, channel count or model variant are refused
with a message that says what differs, never silently misapplied. No pickle
is written or read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import numpy as np

from carfac.carfac import CarfacHypers, CarfacWeights

FORMAT = "carfac-weights"
VERSION = 1
_META = "__meta__"


class WeightsFileError(ValueError):
  """A weights file that is not one, or does not belong to the design it is loaded for."""


def _feed(digest, value: Any) -> None:
  """Feeds ``value`` to ``digest`` exactly: dataclass fields by name, arrays by their bytes."""
  if dataclasses.is_dataclass(value):
    digest.update(type(value).__name__.encode())
    for field in dataclasses.fields(value):
      digest.update(field.name.encode())
      _feed(digest, getattr(value, field.name))
  elif isinstance(value, np.ndarray):
    digest.update(repr((value.dtype.str, value.shape)).encode() + value.tobytes())
  elif isinstance(value, (list, tuple)):
    digest.update(f"{type(value).__name__}{len(value)}".encode())
    for item in value:
      _feed(digest, item)
  else:
    digest.update(repr(value).encode())


def design_sha256(hypers: CarfacHypers) -> str:
  """SHA-256 of the design: every Hypers field, arrays to the last bit."""
  digest = hashlib.sha256()
  _feed(digest, hypers)
  return digest.hexdigest()


def _leaves_by_path(weights: CarfacWeights) -> dict[str, np.ndarray]:
  return {
    jax.tree_util.keystr(path).lstrip("."): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_flatten_with_path(weights)[0]
  }


def save_weights(path: str | os.PathLike, weights: CarfacWeights, hypers: CarfacHypers) -> None:
  """Writes ``weights``, designed by ``hypers``, to ``path`` (an ``.npz``)."""
  leaves = _leaves_by_path(weights)
  meta = {
    "format": FORMAT,
    "version": VERSION,
    "design_sha256": design_sha256(hypers),
    "fs": hypers.fs,
    "n_ears": hypers.n_ears,
    "n_ch": hypers.ears[0].n_ch,
    "leaves": [{"path": p, "dtype": a.dtype.str, "shape": list(a.shape)} for p, a in leaves.items()],
  }
  with open(path, "wb") as file:
    np.savez(file, **{_META: np.asarray(json.dumps(meta))}, **leaves)


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {name: data[name] for name in data.files}
  except (OSError, ValueError) as error:
    raise WeightsFileError(f"{path}: not a readable npz weights file ({error})") from error
  try:
    meta = json.loads(str(arrays.pop(_META)))
  except (KeyError, ValueError) as error:
    raise WeightsFileError(f"{path}: no {_META} record; not written by carfac.save_weights") from error
  if meta.get("format") != FORMAT or meta.get("version") != VERSION:
    raise WeightsFileError(
      f"{path}: format {meta.get('format')!r} v{meta.get('version')}, expected {FORMAT} v{VERSION}"
    )
  return meta, arrays


def load_weights(path: str | os.PathLike, hypers: CarfacHypers, like: CarfacWeights) -> CarfacWeights:
  """The weights in ``path``, checked against the design ``hypers``.

  Float leaves are cast to ``like``'s dtype (a float64 fit may run in
  float32).

  Args:
    hypers: the design being run; the file must have been saved for the
      same one.
    like: that design's weights (from ``design_and_init_carfac``): they
      give the pytree the file's leaves are put back into, and every leaf's
      path, shape and dtype must match.

  Raises:
    WeightsFileError: not a weights file, another design, or other leaves.
  """
  meta, arrays = _read(path)
  if meta["design_sha256"] != design_sha256(hypers):
    raise WeightsFileError(
      f"{path}: saved for another design (fs {meta['fs']}, {meta['n_ears']} ears, {meta['n_ch']} "
      f"channels; this one: fs {hypers.fs}, {hypers.n_ears} ears, {hypers.ears[0].n_ch} channels, "
      "or equal counts with other parameters)"
    )
  expected = _leaves_by_path(like)
  if set(arrays) != set(expected):
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    raise WeightsFileError(f"{path}: leaves differ (missing {missing}, unexpected {extra})")
  for name, template in expected.items():
    stored = arrays[name]
    if stored.shape != template.shape or stored.dtype.kind != template.dtype.kind:
      raise WeightsFileError(
        f"{path}: {name} is {stored.dtype} {stored.shape}, the design has {template.dtype} {template.shape}"
      )
  # Float weights come back in the design's precision (float64 fits may run in float32).
  leaves = [jax.numpy.asarray(arrays[name], template.dtype) for name, template in expected.items()]
  return jax.tree.unflatten(jax.tree.structure(like), leaves)
