"""Dataclass helpers shared by every stage: static hypers and pytree leaves.

Hypers are passed to ``jax.jit`` as static arguments, so they must hash and
compare by *value*: two designs from equal parameters then share one compiled
function. Their coefficient arrays are stored as read-only float64 numpy
arrays and folded into the hash as bytes.

Weights and State are pytrees whose leaves are jnp arrays; they are registered
with ``jax.tree_util.register_dataclass`` so that jit, grad, vmap and buffer
donation see every array.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

T = TypeVar("T")


def frozen_array(values: Any, dtype: Any = np.float64) -> np.ndarray:
  """Returns a read-only numpy copy of ``values``, for use inside hypers."""
  array = np.array(values, dtype=dtype)
  array.flags.writeable = False
  return array


def _hash_key(value: Any) -> Any:
  """Turns a hypers field into something hashable that compares by value."""
  if isinstance(value, np.ndarray):
    return ("ndarray", value.shape, value.dtype.str, value.tobytes())
  if isinstance(value, (list, tuple)):
    return tuple(_hash_key(v) for v in value)
  return value


def static_dataclass(cls: type[T]) -> type[T]:
  """Makes ``cls`` a frozen dataclass that hashes and compares by value."""
  cls = dataclasses.dataclass(frozen=True, eq=False)(cls)

  def key(self) -> tuple:
    cached = self.__dict__.get("_key")
    if cached is None:
      cached = tuple(_hash_key(getattr(self, f.name)) for f in dataclasses.fields(self))
      object.__setattr__(self, "_key", cached)
    return cached

  def eq(self, other: object) -> bool:
    if self is other:
      return True
    if type(other) is not type(self):
      return NotImplemented
    return key(self) == key(other)

  cls.__eq__ = eq
  cls.__hash__ = lambda self: hash(key(self))
  return cls


def pytree_dataclass(cls: type[T]) -> type[T]:
  """Makes ``cls`` a dataclass whose fields are all pytree children."""
  cls = dataclasses.dataclass(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  return jax.tree_util.register_dataclass(cls, data_fields=names, meta_fields=[])


def default_float_dtype() -> np.dtype:
  """float64 when ``jax_enable_x64`` is on, float32 otherwise."""
  return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def as_leaf(value: Any, dtype: Any) -> jax.Array:
  """A jnp array of ``dtype`` holding ``value`` (a weight or state leaf)."""
  return jnp.asarray(np.asarray(value, dtype=np.float64), dtype=dtype)
