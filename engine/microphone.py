"""Microphone input through PortAudio (``sounddevice``), for the engine.

``MicrophoneSource`` wraps a ``sounddevice.InputStream``. Its callback runs
on PortAudio's thread and does nothing but copy the samples into a bounded
``RingBuffer`` and count overflows (frames the ring had no room for, and
PortAudio's own ``input_overflow`` flags); all model work happens on the
engine's thread, which drains the ring through ``read_block`` or iteration
(an ``AudioSource`` for ``engine.runner.EngineRunner``). It imports
neither JAX nor the model, so a client that only streams to a server starts
fast; the ``carfac-mic`` demo is ``engine.cli.mic``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import numpy as np

from engine.optional_import import import_optional
from engine.ring_buffer import RingBuffer

_INSTALL_HINT = (
  "the microphone needs the PortAudio library (Debian: libportaudio2, see "
  "scripts/install_system_packages.sh) and the audio extra (pip install -e '.[audio]')"
)
_POLL_SECONDS = 0.002  # how often read_block looks for new samples


class MicrophoneError(RuntimeError):
  """The input stream stopped or delivered nothing in time."""


def _sounddevice():
  """The sounddevice module, imported on first use (it loads PortAudio)."""
  return import_optional("sounddevice", _INSTALL_HINT)


@dataclasses.dataclass(frozen=True)
class InputDevice:
  """One PortAudio device that can capture."""

  index: int
  name: str
  max_input_channels: int
  default_sample_rate: float


def list_input_devices() -> list[InputDevice]:
  """Every device with at least one input channel."""
  return [
    InputDevice(info["index"], info["name"], info["max_input_channels"], info["default_samplerate"])
    for info in _sounddevice().query_devices()
    if info["max_input_channels"] > 0
  ]


def device_argument(text: str) -> int | str:
  """A ``--device`` value: a device index when all digits, else (part of) a name."""
  return int(text) if text.isdigit() else text


class MicrophoneSource:
  """Captures float32 audio from an input device into a ring buffer.

  Args:
    device: index or (part of the) name; None for the default input device.
    sample_rate: capture rate in Hz; None for the device's default rate.
    channels: input channels to capture.
    buffer_seconds: ring capacity; what the engine falls behind by beyond it
      is dropped and counted (see ``RingBuffer``).
    block_frames: frames per callback (0: whatever PortAudio prefers).
    timeout: how long ``read_block`` and the iterator wait for audio.
  """

  def __init__(
    self,
    device: int | str | None = None,
    sample_rate: float | None = None,
    channels: int = 1,
    buffer_seconds: float = 2.0,
    block_frames: int = 0,
    timeout: float = 2.0,
  ):
    sd = _sounddevice()
    info = sd.query_devices(device, kind="input")
    if not 1 <= channels <= info["max_input_channels"]:
      raise ValueError(f"{info['name']!r} has {info['max_input_channels']} input channel(s), asked for {channels}")
    self.device_index, self.device_name = info["index"], info["name"]
    self.sample_rate = float(sample_rate or info["default_samplerate"])
    self.channels, self.timeout = channels, timeout
    self._ring = RingBuffer(max(1, round(buffer_seconds * self.sample_rate)), channels)
    self.callbacks = 0  # callbacks PortAudio made
    self.input_overflows = 0  # callbacks flagged input_overflow by PortAudio
    try:
      self._stream = sd.InputStream(
        device=self.device_index,
        samplerate=self.sample_rate,
        channels=channels,
        dtype="float32",
        blocksize=block_frames,
        callback=self._on_audio,
      )
    except sd.PortAudioError as err:
      raise MicrophoneError(f"cannot open {self.device_name!r} at {self.sample_rate:g} Hz: {err}") from err

  def _on_audio(self, indata: np.ndarray, frames: int, time_info, status) -> None:
    """PortAudio's thread: copy and count, nothing else."""
    if status.input_overflow:
      self.input_overflows += 1
    self._ring.write(indata)
    self.callbacks += 1

  @property
  def overflowed(self) -> int:
    """Frames dropped because the engine fell ``buffer_seconds`` behind."""
    return self._ring.overflowed

  @property
  def overflow_events(self) -> int:
    """Callbacks whose samples did not all fit into the ring."""
    return self._ring.overflow_events

  def start(self) -> None:
    """Starts capturing; the callback fills the ring from now on."""
    self._stream.start()

  def close(self) -> None:
    """Stops capturing and releases the device."""
    self._stream.close()

  def __enter__(self) -> MicrophoneSource:
    self.start()
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def read_block(self, timeout: float | None = None) -> np.ndarray:
    """Engine's thread: all captured frames, (n >= 1, channels) float32.

    Waits up to ``timeout`` (default: the source's) for the first frame;
    raises ``MicrophoneError`` if none comes or the stream has stopped.
    """
    wait = self.timeout if timeout is None else timeout
    deadline = time.monotonic() + wait
    while (available := self._ring.read_available()) == 0:
      if not self._stream.active:
        raise MicrophoneError(f"the input stream of {self.device_name!r} is not running")
      if time.monotonic() >= deadline:
        raise MicrophoneError(f"no audio from {self.device_name!r} within {wait} s")
      time.sleep(_POLL_SECONDS)
    return self._ring.read(available)

  def __iter__(self) -> Iterator[np.ndarray]:
    """Captured chunks, for as long as the caller keeps reading."""
    while True:
      yield self.read_block()
