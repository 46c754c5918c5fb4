"""Imports of the optional audio back-ends, failing with what to install.

``sounddevice`` (microphone) needs the PortAudio system library and fails at
import with a bare ``OSError`` without it; ``soundfile`` (files) ships its
libsndfile. Both come with the ``audio`` extra. Importing them only when a
source is used keeps ``engine`` usable on machines without either.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingAudioBackendError(ImportError):
  """An optional audio library (or the system library under it) is missing."""


def import_optional(module: str, install_hint: str) -> ModuleType:
  """Imports ``module``, or raises ``MissingAudioBackendError`` with the hint."""
  try:
    return importlib.import_module(module)
  except (ImportError, OSError) as err:
    raise MissingAudioBackendError(f"cannot import {module} ({err}); {install_hint}") from err
