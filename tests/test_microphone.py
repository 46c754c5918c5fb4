"""The real microphone path, without hardware: a tone played into a PulseAudio
null sink is captured from its monitor (PortAudio device "pulse", 48 kHz),
resampled to the model's 22.05 kHz and run through a StreamPool on the
engine's thread. Needs the packages of scripts/install_system_packages.sh;
when they are missing these tests fail, saying what is missing.
"""

from __future__ import annotations

import time
from types import ModuleType

import numpy as np
import pytest
from audio_harness import CAPTURE_RATE, TONE_HZ, playing_tone

import carfac
from engine.cli.mic import main
from engine.microphone import MicrophoneSource, list_input_devices
from engine.optional_import import MissingAudioBackendError, import_optional
from engine.pool import BlockResult, StreamPool
from engine.runner import EngineRunner


def test_a_missing_backend_says_what_to_install() -> None:
  with pytest.raises(MissingAudioBackendError, match="no_such_audio_module.*install libfoo"):
    import_optional("no_such_audio_module", "install libfoo")


def test_the_pulse_device_is_listed(sounddevice: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
  assert "pulse" in [device.name for device in list_input_devices()]
  assert main(["--list-devices"]) == 0 and "pulse" in capsys.readouterr().out


def test_a_1khz_tone_peaks_at_the_channel_nearest_1khz(sounddevice: ModuleType) -> None:
  pool = StreamPool(carfac.CarfacDesignParameters(fs=22050.0), capacity=1, block_size=512, hop=220)
  results: list[BlockResult] = []
  with MicrophoneSource("pulse", CAPTURE_RATE, channels=1, block_frames=480) as mic:
    runner = EngineRunner(pool, mic, results.append)
    runner.start()
    with playing_tone(sounddevice):
      time.sleep(1.5)
      runner.stop(timeout=10)  # while the tone still plays: every frame captured is of the tone or before it
  frames = np.concatenate([r.frames for r in results])[:, :, 0]
  assert len(frames) >= 100, f"only {len(frames)} frames ({mic.callbacks} callbacks) in 1.5 s"
  level = frames[len(frames) // 2 :].mean(axis=0)
  centre_frequencies = pool.centre_frequencies()
  loudest, nearest = int(level.argmax()), int(np.abs(centre_frequencies - TONE_HZ).argmin())
  assert loudest == nearest, (centre_frequencies[loudest], centre_frequencies[nearest])
  assert mic.overflowed == 0 and mic.overflow_events == 0 and mic.input_overflows == 0
  assert runner.feed.nonfinite_samples == 0
