"""StreamResampler: tones keep their frequency, chunking changes nothing, equal rates pass through."""

from __future__ import annotations

import numpy as np
import pytest

from engine.resample import StreamResampler

MODEL_RATE = 22050


def _tone(freq: float, rate: float, seconds: float, channels: int = 1) -> np.ndarray:
  t = np.arange(int(rate * seconds)) / rate
  return np.repeat(0.5 * np.sin(2 * np.pi * freq * t)[:, None], channels, axis=1).astype(np.float32)


def _in_chunks(resampler: StreamResampler, audio: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  bounds = np.cumsum(np.concatenate([[0], sizes]))
  bounds = bounds[bounds < len(audio)].tolist() + [len(audio)]
  parts = [resampler.process(audio[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
  return np.concatenate(parts + [resampler.flush()])


def _peak_hz(signal: np.ndarray, rate: float) -> float:
  spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
  return float(np.fft.rfftfreq(len(signal), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("in_rate", [48000, 16000])
def test_a_tone_keeps_its_frequency_and_level(in_rate: int) -> None:
  resampler = StreamResampler(in_rate, MODEL_RATE, channels=1)
  sizes = np.random.default_rng(in_rate).integers(1, 2000, 200)
  out = _in_chunks(resampler, _tone(1000.0, in_rate, 2.0), sizes)[:, 0]
  assert abs(len(out) - 2 * MODEL_RATE) <= 1
  steady = out[MODEL_RATE // 2 : -MODEL_RATE // 2]  # clear of the filter's edges
  assert abs(_peak_hz(steady, MODEL_RATE) - 1000.0) <= 0.5
  assert np.sqrt(np.mean(steady**2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


@pytest.mark.parametrize("in_rate", [48000, 16000])
@pytest.mark.parametrize("chunk", [1, 441, 4097])
def test_chunked_output_equals_one_shot_output(in_rate: int, chunk: int) -> None:
  audio = np.random.default_rng(1).uniform(-0.5, 0.5, (in_rate // 2, 2)).astype(np.float32)
  one_shot = StreamResampler(in_rate, MODEL_RATE, channels=2)
  expected = np.concatenate([one_shot.process(audio), one_shot.flush()])
  sizes = np.full(len(audio) // chunk + 1, chunk)
  np.testing.assert_array_equal(_in_chunks(StreamResampler(in_rate, MODEL_RATE, channels=2), audio, sizes), expected)


def test_equal_rates_pass_through_exactly() -> None:
  audio = np.random.default_rng(2).standard_normal((1000, 2)).astype(np.float32)
  resampler = StreamResampler(MODEL_RATE, MODEL_RATE, channels=2)
  assert resampler.passthrough
  np.testing.assert_array_equal(resampler.process(audio[:300]), audio[:300])
  np.testing.assert_array_equal(resampler.process(audio[300:]), audio[300:])
  assert resampler.flush().shape == (0, 2)
