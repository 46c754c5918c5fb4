"""The PulseAudio virtual microphone for tests: a session fixture that starts
``scripts/virtual_audio.sh`` (a null sink whose monitor is the default
source) and yields the ``sounddevice`` module. Needs the packages of
scripts/install_system_packages.sh; when they are missing the tests using it
fail, saying what is missing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from engine.optional_import import MissingAudioBackendError, import_optional

CAPTURE_RATE, TONE_HZ = 48000, 1000.0
VIRTUAL_AUDIO = Path(__file__).resolve().parent.parent / "scripts" / "virtual_audio.sh"


def _pulse_running() -> bool:
  try:
    return subprocess.run(["pulseaudio", "--check"], capture_output=True, timeout=10).returncode == 0
  except FileNotFoundError:
    return False


@pytest.fixture(scope="session")
def sounddevice() -> Iterator[ModuleType]:
  """Starts the virtual audio (stopping it afterwards if it was not running)."""
  was_running = _pulse_running()
  started = subprocess.run(["bash", str(VIRTUAL_AUDIO), "start"], capture_output=True, text=True, timeout=60)
  try:
    if started.returncode != 0:
      pytest.fail(f"virtual audio did not start (scripts/install_system_packages.sh installs it): {started.stderr}")
    try:
      module = import_optional("sounddevice", "run scripts/install_system_packages.sh")
    except MissingAudioBackendError as err:
      pytest.fail(str(err))
    yield module
  finally:
    if not was_running:
      subprocess.run(["bash", str(VIRTUAL_AUDIO), "stop"], capture_output=True, timeout=30)


def playing_tone(sd: ModuleType):
  """The TONE_HZ sine played into the virtual sink, whose monitor is the default source (a context manager)."""
  return sd.OutputStream(device="pulse", samplerate=CAPTURE_RATE, channels=1, blocksize=480, callback=tone_player())


def playing_harmonic_complex(sd: ModuleType, f0: float):
  """A harmonic complex of ``f0`` (harmonics 1..20) played into the virtual sink (a context manager)."""
  return sd.OutputStream(
    device="pulse", samplerate=CAPTURE_RATE, channels=1, blocksize=480, callback=tone_player(f0=f0)
  )


def tone_player(amplitude: float = 0.5, f0: float | None = None):
  """A sounddevice output callback playing, at CAPTURE_RATE, a TONE_HZ sine or (``f0``) a harmonic complex."""
  played = 0

  def play(outdata: np.ndarray, frames: int, time_info, status) -> None:
    nonlocal played
    t = (played + np.arange(frames)) / CAPTURE_RATE
    if f0 is None:
      outdata[:, 0] = amplitude * np.sin(2 * np.pi * TONE_HZ * t)
    else:  # 20 harmonics of 0.02 each: peaks below 0.4
      outdata[:, 0] = 0.02 * sum(np.sin(2 * np.pi * k * f0 * t) for k in range(1, 21))
    played += frames

  return play
